"""Reading the manifest folders: an invalid edit keeps the last good version, a file that was never valid
declares nothing, and editor files are not manifests."""

from __future__ import annotations

from pathlib import Path

from npuctl.agent.desired import DesiredState
from npuctl.agent.watcher import is_manifest_path
from tests.agent.harness import manifest


def test_an_invalid_edit_keeps_the_last_good_version(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(manifest())
    state = DesiredState([tmp_path])
    first = state.refresh()["tiny"]
    assert first.valid
    (tmp_path / "tiny.yaml").write_text(manifest(precision="int3"))
    kept = state.refresh()["tiny"]
    assert not kept.valid and kept.deployment.deployment.spec.precision == "w8a16"
    assert kept.errors[0].line == 9
    (tmp_path / "tiny.yaml").unlink()
    assert state.refresh() == {}


def test_a_file_that_was_never_valid_declares_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [")
    state = DesiredState([tmp_path, tmp_path / "missing"])
    assert state.refresh() == {} and state.errors


def test_editor_files_are_not_manifests() -> None:
    assert is_manifest_path("/m/tiny.yaml") and is_manifest_path("x.yml")
    for name in (".tiny.yaml.swp", "tiny.yaml~", ".#tiny.yaml", "tiny.yaml.tmp", "#tiny.yaml#", "notes.txt"):
        assert not is_manifest_path(name), name
