"""The trained tiny chat models (Llama, Qwen2, Phi-3) of a test session, their manifests and NPU builds: each model
is trained once and every build goes through one store, so a build the session already made is all cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuctl.artifacts import BuildResult, StepEvent, Store, build_deployment
from npuctl.schema.loader import LoadedDeployment
from tests.manifests import write_deployment
from tests.tiny_llama import TRAINED_HELD_OUT, make_tiny_decoder

TRAIN_STEPS = 100
CONTEXT = 512
"""max_position_embeddings of the tiny models: a window or KV cache past it must be refused."""
PROMPTS = ("Hello world, how", "Where is the")
"""Prompts the trained models continue peakedly (from CORPUS and the held-out sentences they learned)."""


class TinyChat:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(root / "store")
        self._sources: dict[str, Path] = {}
        self.events: dict[str, list[StepEvent]] = {}
        """Each build's step events, by the deployment's name (its last build)."""

    def source(self, architecture: str) -> Path:
        """The trained `llama`, `qwen2` or `phi3` checkpoint folder."""
        if architecture not in self._sources:
            self._sources[architecture] = make_tiny_decoder(self.root / architecture, architecture,
                                                            train_steps=TRAIN_STEPS, context_length=CONTEXT)
        return self._sources[architecture]

    def manifest(self, name: str, source: str, **spec: Any) -> LoadedDeployment:
        """A text-generation manifest (w8a16 for x-elite on the simulator, a 64-token window and a 256-token KV
        cache unless `spec` says otherwise: the default window of 128 would make the simulator's graphs slower);
        `source` is an architecture name or a `file:` URI."""
        uri = source if ":" in source else f"file:{self.source(source)}"
        body = {"model": {"source": uri, "task": "text-generation"}, "precision": "w8a16", "targets": ["x-elite"],
                "generation": {"contextLength": 256, "window": 64}, "accuracy": {"samples": TRAINED_HELD_OUT},
                "runtime": {"device": "npu", "allowSimulator": True, "fallback": "none"}} | spec
        folder = self.root / "manifests"
        folder.mkdir(exist_ok=True)
        return write_deployment(folder, name, body)

    def build(self, name: str, source: str, **spec: Any) -> BuildResult:
        self.events[name] = []
        return build_deployment(self.manifest(name, source, **spec), store=self.store,
                                progress=self.events[name].append)
