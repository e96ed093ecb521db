"""Writing test manifests: JSON is YAML, so a dict written as JSON is a manifest file the loader reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from npuctl.schema import LoadedDeployment, load_file


def write_deployment(folder: Path, name: str, spec: dict[str, Any]) -> LoadedDeployment:
    """Write `folder/<name>.yaml` holding a ModelDeployment with `spec`, and load it as the agent would."""
    manifest = {"apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                "spec": spec}
    file = folder / f"{name}.yaml"
    file.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    loaded = load_file(file)
    assert loaded.ok, loaded.errors
    return loaded.deployments[0]


# Llama-3.1-70B's config.json sizes: what no PC builds.
HUGE = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "num_attention_heads": 64,
        "num_key_value_heads": 8, "intermediate_size": 28672, "num_hidden_layers": 80,
        "max_position_embeddings": 131072, "vocab_size": 128256, "tie_word_embeddings": False, "dtype": "bfloat16"}


def huge_deployment(folder: Path, generation: dict[str, Any] | None = None) -> LoadedDeployment:
    """An NPU chat deployment of a checkpoint with HUGE's config.json and no weights (the pre-flight refuses it)."""
    checkpoint = folder / "huge"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(HUGE))
    (checkpoint / "model.safetensors").write_bytes(b"")
    manifests = folder / "manifests"
    manifests.mkdir()
    spec: dict[str, Any] = {"model": {"source": f"file:{checkpoint}", "task": "text-generation"}, "precision": "w8a16",
                            "targets": ["x-elite"], "runtime": {"device": "npu", "allowSimulator": True, "fallback": "none"}}
    if generation is not None:
        spec["generation"] = generation
    return write_deployment(manifests, "huge", spec)
