"""Where `file:` and `pkg:` sources may point, and what they may be. Whatever a
manifest names (a FIFO, a device, a dangling link, a link or `..` out of the allowed folders, an absolute
path elsewhere, `pkg:` with `..`), resolving it answers at once with an error placed at the manifest field
and naming the rule, and says nothing of what lies outside: no contents, no digest, no listing."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npuctl.agent.config import AgentConfig, ManifestSource
from npuctl.agent.source_rules import SourceRules
from npuctl.artifacts import BuildError, Store, build_deployment
from npuctl.artifacts.sources.context import SourceRefused
from npuctl.schema import load_file
from tests.fuzzing import fuzz_settings
from tests.hostile_sources import CANARY, HANG_SECONDS, SECRET_DIGEST, hostile_source, layout, needs_fifo, needs_links
from tests.manifests import write_deployment

KINDS = ("fifo", "dev-zero", "dangling-out", "link-out", "dotdot", "absolute", "absolute-folder",
         "folder-with-fifo", "folder-with-link-out", "pkg-dotdot")
RULES = {"fifo": "not a regular file", "folder-with-fifo": "not a regular file", "pkg-dotdot": "outside the package",
         "folder-with-link-out": "a link that leads outside"}
"""The rule each kind breaks, as its error says it; the others: 'leads outside the folders'."""
RULES_ANYWHERE = RULES | {"dev-zero": "not a regular file"}
"""Without roots (the Python API, the CLI), a link to a device breaks the kind rule."""


def _resolve_bounded(loaded: Any, store: Store, **options: Any) -> BaseException | None:
    """Build in a thread: a read that blocks fails the test instead of hanging it."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            build_deployment(loaded, store=store, cached_only=True, **options)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    assert not thread.is_alive(), f"resolving the source blocked for {HANG_SECONDS} s"
    return caught[0] if caught else None


def _assert_nothing_leaks(message: str) -> None:
    assert "TOPSECRET" not in message and SECRET_DIGEST not in message and CANARY not in message, message
    assert not re.search(r"\b[0-9a-f]{64}\b", message), f"a digest in: {message}"


@needs_fifo
@needs_links
@fuzz_settings(60)
@given(kind=st.sampled_from(KINDS), field=st.sampled_from(["model", "pack"]), pinned=st.booleans())
def test_hostile_local_sources_are_refused_at_once_placed_and_without_leaks(kind: str, field: str,
                                                                              pinned: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder, outside = layout(Path(scratch))
        uri = hostile_source(kind, folder, outside)
        model: dict[str, Any] = {"source": uri if field == "model" else "file:tiny.onnx", "task": "tensor"}
        if pinned and field == "model":  # a wrong pin: the old error quoted the file's digest, or listed the folder
            model["sha256"] = {"secret.onnx": "0" * 64, "config.json": "0" * 64}
        spec: dict[str, Any] = {"model": model, "precision": "w8a16", "targets": ["x-elite"]}
        if field == "pack":
            spec["build"] = {"prebuilt": {"source": uri}}
        loaded = write_deployment(folder, "hostile", spec)
        error = _resolve_bounded(loaded, Store(Path(scratch) / "store"), source_roots=(folder,))
    assert isinstance(error, SourceRefused), f"{kind}: {error!r}"
    message = str(error)
    where = "spec.model.source" if field == "model" else "spec.build.prebuilt.source"
    assert re.search(rf"hostile\.yaml:\d+:\d+: {re.escape(where)}: ", message), message
    assert RULES.get(kind, "leads outside the folders") in message, message
    _assert_nothing_leaks(message)


@needs_fifo
@needs_links
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder-with-fifo", "pkg-dotdot"])
def test_without_roots_the_kind_and_package_rules_still_hold(tmp_path: Path, kind: str) -> None:
    """The Python API and the CLI read any folder of their user's, but never a FIFO, a device or out of a package."""
    folder, outside = layout(tmp_path)
    loaded = write_deployment(folder, "hostile", {"model": {"source": hostile_source(kind, folder, outside),
                                                            "task": "tensor"}, "precision": "fp32"})
    error = _resolve_bounded(loaded, Store(tmp_path / "store"))
    assert isinstance(error, SourceRefused) and RULES_ANYWHERE[kind] in str(error), repr(error)
    _assert_nothing_leaks(str(error))


def test_a_wrong_pin_on_a_local_file_names_the_pin_not_the_files_digest(tmp_path: Path) -> None:
    folder, _ = layout(tmp_path)
    loaded = write_deployment(folder, "pinned", {"model": {"source": "file:tiny.onnx", "task": "tensor",
                                                           "sha256": {"tiny.onnx": "0" * 64}}, "precision": "fp32"})
    error = _resolve_bounded(loaded, Store(tmp_path / "store"), source_roots=(folder,))
    actual = hashlib.sha256((folder / "tiny.onnx").read_bytes()).hexdigest()
    assert isinstance(error, BuildError) and "does not match its pin" in str(error) and "0" * 64 in str(error)
    assert actual not in str(error)


def test_model_roots_admit_a_folder_and_bundles_read_nothing_local_unless_allowed(tmp_path: Path) -> None:
    folder, outside = layout(tmp_path)
    config = AgentConfig(manifests=[folder], model_roots=[outside], sources=[
        ManifestSource(name="open", url="https://fleet.example/b.json", public_key="k", allow_local_sources=True),
        ManifestSource(name="closed", url="https://fleet.example/c.json", public_key="k")])
    rules = SourceRules.of(config)
    assert rules.roots_for(folder / "mine.yaml") == (folder, outside)
    assert rules.roots_for(folder / "open.bundle.yaml") == (outside,)
    assert rules.roots_for(folder / "closed.bundle.yaml") == ()
    assert rules.roots_for(folder / "leftover.bundle.yaml") == ()
    inside_root = write_deployment(folder, "rooted", {"model": {"source": f"file:{outside / 'secret.onnx'}",
                                                                "task": "tensor", "format": "onnx"}})
    # Admitted by modelRoots: it gets past the rules (and fails later, as the bytes are no ONNX model).
    error = _resolve_bounded(inside_root, Store(tmp_path / "store"), source_roots=rules.roots_for(inside_root.file))
    assert not isinstance(error, SourceRefused), repr(error)
    written = write_deployment(folder, "closed", {"model": {"source": "file:tiny.onnx", "task": "tensor"}})
    bundle = load_file(written.file.rename(folder / "closed.bundle.yaml")).deployments[0]
    error = _resolve_bounded(bundle, Store(tmp_path / "store"), source_roots=rules.roots_for(bundle.file))
    assert isinstance(error, SourceRefused) and "allowLocalSources" in str(error), repr(error)
    _assert_nothing_leaks(str(error))


@needs_fifo
def test_npuctl_build_on_a_fifo_source_answers_with_a_placed_error(tmp_path: Path) -> None:
    folder, outside = layout(tmp_path)
    source = hostile_source("fifo", folder, outside)
    loaded = write_deployment(folder, "piped", {"model": {"source": source, "task": "tensor"}, "precision": "fp32"})
    done = subprocess.run([sys.executable, "-m", "npuctl", "build", "-f", str(loaded.file), "--cache",
                           str(tmp_path / "cache")], capture_output=True, text=True, timeout=HANG_SECONDS * 2,
                          env=os.environ | {"COLUMNS": "1000"})
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and "Traceback" not in said
    assert re.search(r"piped\.yaml:\d+:\d+: spec\.model\.source: .*not a regular file", said), said
