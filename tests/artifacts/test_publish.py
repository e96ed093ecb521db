"""The shared artifact store: `npuctl build --all-targets --publish`, then builds that fetch every step by key
(from a folder and over HTTP) instead of running it, and refuse what does not check out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from npuctl.artifacts import StepEvent, Store, build_deployment
from npuctl.artifacts.published.publish import BLOBS, LAYOUT_FILE, STEPS, publish
from tests.artifacts.conftest import write_manifest


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-target manifest built and published once through the CLI."""
    from tests.artifacts.conftest import tiny_model

    folder = tmp_path_factory.mktemp("publisher")
    tiny_model(folder / "tiny.onnx")
    write_manifest(folder, targets=["x-elite", "x2-elite"])
    dest = folder / "published"
    done = subprocess.run([sys.executable, "-m", "npuctl", "build", "-f", str(folder / "tiny.yaml"), "--all-targets",
                           "--publish", str(dest), "--cache", str(folder / "store")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"published 8 steps to {dest}" in done.stderr
    return dest


@pytest.fixture
def http_store(published: Path) -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []

    class Logged(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Logged, directory=str(published)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    server.shutdown()
    server.server_close()


def test_publish_layout_holds_records_and_blobs_by_digest(published: Path) -> None:
    assert json.loads((published / LAYOUT_FILE).read_text()) == {"layout": 1}
    records = [json.loads(p.read_text()) for p in (published / STEPS).glob("*.json")]
    compiles = sorted(r["details"]["soc_model"] for r in records if r["step"] == "compile")
    assert compiles == [60, 88]
    for record in records:
        for file in record["files"]:
            assert (published / BLOBS / file["sha256"]).stat().st_size == file["size"]
    (build,) = (published / "builds" / "tiny").glob("*.json")
    assert len(json.loads(build.read_text())["steps"]) == 8


@pytest.mark.parametrize("over_http", [False, True], ids=["folder", "http"])
def test_a_build_fetches_every_published_step_and_runs_none(
        published: Path, http_store: tuple[str, list[str]], tmp_path: Path, over_http: bool) -> None:
    from tests.artifacts.conftest import tiny_model

    tiny_model(tmp_path / "tiny.onnx")
    loaded = write_manifest(tmp_path, targets=["x-elite", "x2-elite"])
    url, requests = http_store
    events: list[StepEvent] = []
    result = build_deployment(loaded, store=Store(tmp_path / "store"), for_soc=88, progress=events.append,
                              published=[url if over_http else str(published)])
    assert {e.state.value for e in events if e.step != "resolve"} == {"fetched"}
    assert [(a.target, a.soc_model) for a in result.artifacts] == [("x2-elite", 88)]
    assert result.artifacts[0].context_binary.is_file()
    if over_http:
        fetched = {p.removeprefix("/") for p in requests}
        assert all(f"{BLOBS}/{f.sha256}" in fetched for f in result.artifacts[0].files)


def test_a_corrupt_blob_is_refused_and_the_step_built_here(published: Path, tmp_path: Path) -> None:
    from tests.artifacts.conftest import tiny_model

    copy = tmp_path / "copy"
    shutil.copytree(published, copy)
    compile_record = next(r for p in (copy / STEPS).glob("*.json")
                          if (r := json.loads(p.read_text()))["step"] == "compile" and r["details"]["soc_model"] == 60)
    blob = copy / BLOBS / compile_record["files"][0]["sha256"]
    blob.write_bytes(b"x" * blob.stat().st_size)
    tiny_model(tmp_path / "tiny.onnx")
    loaded = write_manifest(tmp_path, targets=["x-elite", "x2-elite"])
    events: list[StepEvent] = []
    result = build_deployment(loaded, store=Store(tmp_path / "store"), for_soc=60, progress=events.append,
                              published=[str(copy)])
    states = {(e.step, e.state.value) for e in events}
    assert ("compile", "done") in states and ("quantize", "fetched") in states
    assert any(e.message and "corrupt" in e.message for e in events if e.step == "compile")
    assert result.artifacts[0].soc_model == 60


def _local_paths(value: object) -> list[str]:
    """Every string in a JSON value that names a path of this machine: absolute, or a `file:` URI of one."""
    if isinstance(value, dict):
        return [found for item in value.values() for found in _local_paths(item)]
    if isinstance(value, list):
        return [found for item in value for found in _local_paths(item)]
    if isinstance(value, str) and (Path(value).is_absolute() or Path(value.removeprefix("file:")).is_absolute()):
        return [value]
    return []


def test_nothing_published_names_a_path_of_the_publishers_machine(published: Path, tmp_path: Path) -> None:
    """Build records once listed the publisher's store paths. Also a source declared by an
    absolute path, built from the same store and published beside it."""
    publisher = published.parent
    published = shutil.copytree(published, tmp_path / "published")  # the module's other tests keep theirs as it is
    source = tmp_path / "models" / "tiny.onnx"
    source.parent.mkdir()
    shutil.copy(publisher / "tiny.onnx", source)
    loaded = write_manifest(tmp_path, name="absolute", source=f"file:{source}")
    store = Store(publisher / "store")
    publish([build_deployment(loaded, store=store)], store, published)
    files = [p for p in published.rglob("*") if p.is_file()]
    assert len(list((published / "builds").rglob("*.json"))) == 2
    for file in files:
        data = file.read_bytes()
        assert str(publisher).encode() not in data and str(tmp_path).encode() not in data, file
        if file.suffix == ".json":
            assert not _local_paths(json.loads(data)), (file, _local_paths(json.loads(data)))
    (absolute,) = (json.loads(p.read_text()) for p in (published / "builds" / "absolute").glob("*.json"))
    assert absolute["sources"][0]["uri"] == "file:tiny.onnx"
    assert all(f["path"].startswith("steps/") for a in absolute["artifacts"] for f in a["files"])
