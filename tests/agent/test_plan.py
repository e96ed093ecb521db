"""What an edit to a manifest means: which keys it changes (build, reload or serve only) and the plan that
names its effect and fields."""

from __future__ import annotations

from npuctl.agent.desired import Desired, Keys
from npuctl.agent.plan import plan
from npuctl.schema import LoadedDeployment, load_text
from tests.agent.harness import manifest


def loaded(text: str, file: str = "/m/tiny.yaml") -> LoadedDeployment:
    (one,) = load_text(text, file).deployments
    return one


def test_keys_sort_changes_into_build_reload_and_serve_only() -> None:
    base = Keys.of(loaded(manifest()))
    serve_only = Keys.of(loaded(manifest(queue_limit=3)))
    assert (serve_only.build, serve_only.load) == (base.build, base.load) and serve_only.serve != base.serve
    runtime = Keys.of(loaded(manifest() + "  runtime:\n    fallback: none\n"))
    assert runtime.build == base.build and runtime.load != base.load
    precision = Keys.of(loaded(manifest(precision="w8a8")))
    assert precision.build != base.build
    elsewhere = Keys.of(loaded(manifest(), "/other/tiny.yaml"))
    assert elsewhere.build != base.build, "file: sources resolve against the manifest's folder"


def test_plan_names_the_effect_and_fields() -> None:
    current = {"tiny": Desired(loaded(manifest()))}
    (same,) = plan([loaded(manifest())], ["tiny"], current)
    assert same.action == "unchanged"
    (change,) = plan([loaded(manifest(precision="fp16"))], ["tiny"], current)
    assert (change.action, change.effect) == ("update", "build")
    assert change.fields == [{"path": "spec.precision", "old": "w8a16", "new": "fp16"}]
    (serve,) = plan([loaded(manifest(queue_limit=5))], ["tiny"], current)
    assert serve.effect == "reconfigure"
    created, deleted = plan([loaded(manifest(name="new"))], ["tiny"], current)
    assert (created.action, deleted.action, deleted.effect) == ("create", "delete", "unload")
