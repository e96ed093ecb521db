"""hf: sources through the real huggingface_hub against a pre-populated cache (offline), and https: sources
from a local HTTP server on 127.0.0.1. No other network."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from npuctl.artifacts import BuildError, BuildResult, Store, build_deployment
from npuctl.artifacts.sources.context import SourceContext
from npuctl.artifacts.sources.hf import resolve_hf
from npuctl.artifacts.sources.resolve import resolve
from tests.artifacts.conftest import tiny_model, write_manifest
from tests.conftest import MINILM_SOURCE, minilm_manifest

REPO = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def hf_cache(root: Path, repo: str, commit: str, files: Path, branch: str = "main") -> Path:
    """The huggingface_hub cache layout: blobs named by sha256 (as LFS files are), snapshot entries linking
    to them, refs/<branch> holding the commit."""
    storage = root / f"models--{repo.replace('/', '--')}"
    (storage / "blobs").mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / branch).write_text(commit)
    for file in sorted(p for p in files.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = storage / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        entry = storage / "snapshots" / commit / file.relative_to(files)
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.symlink_to(os.path.relpath(blob, entry.parent))
    return storage


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding the MiniLM files, with the hub client in offline mode pointed at it."""
    cache = tmp_path / "hf"
    package = resolve(MINILM_SOURCE, SourceContext(tmp_path, Store(tmp_path / "unused"))).path
    hf_cache(cache, REPO, COMMIT, package)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hf_source_resolves_offline_to_the_same_model_as_the_package(offline_hub: Path, tmp_path: Path) -> None:
    context = SourceContext(tmp_path, Store(tmp_path / "store"))
    from_package = resolve(MINILM_SOURCE, context)
    pinned = resolve(f"hf:{REPO}@{COMMIT}", context)
    branch = resolve(f"hf:{REPO}", context)
    assert pinned.digest == branch.digest == from_package.digest
    assert pinned.format == "transformers" and pinned.path.name == COMMIT
    assert branch.revision == COMMIT  # "main" is recorded as the commit it pointed at
    single = resolve_hf(f"{REPO}@main/tokenizer.json", context)
    assert single.path.name == "tokenizer.json" and single.revision == COMMIT


@pytest.mark.slow
def test_hf_deployment_reuses_the_package_build(offline_hub: Path, minilm_build: BuildResult, minilm_store: Store,
                                                minilm_dir: Path) -> None:
    """Same bytes, same keys: the hf: deployment is the session's MiniLM build, found in the store."""
    loaded = minilm_manifest(minilm_dir, "minilm-hf", model={"source": f"hf:{REPO}@main", "task": "embeddings"})
    result = build_deployment(loaded, store=minilm_store, cached_only=True)
    assert [s.key for s in result.steps] == [s.key for s in minilm_build.steps]
    assert result.artifacts[0].context_binary == minilm_build.artifacts[0].context_binary
    assert result.sources[0].revision == COMMIT
    assert result.as_dict()["sources"][0] == {"uri": f"hf:{REPO}@main", "revision": COMMIT,
                                              "digest": minilm_build.steps[0].key}


def test_hf_missing_file_names_repo_revision_and_file(offline_hub: Path, tmp_path: Path) -> None:
    context = SourceContext(tmp_path, Store(tmp_path / "store"))
    with pytest.raises(BuildError) as missing:
        resolve(f"hf:{REPO}@{COMMIT}/onnx/model.onnx", context)
    message = str(missing.value)
    assert REPO in message and COMMIT in message and "onnx/model.onnx" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(BuildError, match=f"{REPO} at revision v9.*not in the Hugging Face cache"):
        resolve(f"hf:{REPO}@v9", context)


def test_hf_corrupt_blob_and_wrong_pin_are_refused(offline_hub: Path, tmp_path: Path) -> None:
    context = SourceContext(tmp_path, Store(tmp_path / "store"), pins={"config.json": "0" * 64})
    with pytest.raises(BuildError, match=r"config.json has sha256 [0-9a-f]{64}, spec.model.sha256 pins 0{64}"):
        resolve(f"hf:{REPO}@{COMMIT}", context)
    vocab = offline_hub / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT / "vocab.txt"
    blob = vocab.resolve()
    blob.write_bytes(blob.read_bytes() + b"tampered")
    with pytest.raises(BuildError, match="vocab.txt in the Hugging Face cache does not match its hash"):
        resolve(f"hf:{REPO}@{COMMIT}", SourceContext(tmp_path, context.store))


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def https_base(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP file server on 127.0.0.1 serving `served/`, and the URL an https: source maps to.
    The resolver is pointed at it by rewriting https:// to the local http:// address."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: _Files(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()


@pytest.fixture
def local_https(https_base: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """https://models.example/<file> is served from the local server (httpx.stream is redirected to it)."""
    import httpx

    base, served = https_base
    real_stream = httpx.stream

    def stream(method: str, url: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return real_stream(method, url.replace("https://models.example", base), **kwargs)

    monkeypatch.setattr(httpx, "stream", stream)
    return "https://models.example", served


def test_https_source_with_the_right_digest_is_stored_and_built(local_https: tuple[str, Path], tmp_path: Path,
                                                                store: Store) -> None:
    base, served = local_https
    tiny_model(served / "tiny.onnx")
    digest = hashlib.sha256((served / "tiny.onnx").read_bytes()).hexdigest()
    loaded = write_manifest(tmp_path, precision="fp32",
                            model={"source": f"{base}/tiny.onnx", "task": "tensor", "sha256": {"tiny.onnx": digest}})
    result = build_deployment(loaded, store=store)
    assert result.cpu_model is not None and result.cpu_model.read_bytes() == (served / "tiny.onnx").read_bytes()
    assert [r.step for r in store.records()] == ["download"]
    (served / "tiny.onnx").unlink()  # a second build needs no request: the pin finds the stored copy
    assert build_deployment(loaded, store=store).cpu_model == result.cpu_model


def test_https_source_with_a_wrong_digest_stores_nothing(local_https: tuple[str, Path], tmp_path: Path,
                                                         store: Store) -> None:
    base, served = local_https
    tiny_model(served / "tiny.onnx")
    loaded = write_manifest(tmp_path, precision="fp32",
                            model={"source": f"{base}/tiny.onnx", "task": "tensor", "sha256": {"tiny.onnx": "a" * 64}})
    with pytest.raises(BuildError, match=r"sha256 [0-9a-f]{64}, but spec.model.sha256 pins a{64}; nothing was stored"):
        build_deployment(loaded, store=store)
    assert store.records() == [] and not any(p.is_file() for p in (store.root / "tmp").rglob("*"))
    missing = write_manifest(tmp_path, precision="fp32", model={"source": f"{base}/nope.onnx", "task": "tensor",
                                                               "sha256": {"nope.onnx": "a" * 64}})
    with pytest.raises(BuildError, match="answered 404"):
        build_deployment(missing, store=store)


def test_https_size_limit_and_missing_pin(local_https: tuple[str, Path], tmp_path: Path) -> None:
    from npuctl.artifacts.sources.https import fetch, resolve_https

    base, served = local_https
    (served / "big.bin").write_bytes(b"x" * 4096)
    with pytest.raises(BuildError, match="over the 1000-byte download limit"):
        fetch(f"{base}/big.bin", tmp_path / "big.bin", expected=None, max_bytes=1000)
    assert not (tmp_path / "big.bin").exists()
    with pytest.raises(BuildError, match=r"no sha256 pin for 'big.bin'"):
        resolve_https("//models.example/big.bin", SourceContext(tmp_path, Store(tmp_path / "store")))
