"""The onnxruntime-genai model builder as a content-addressed build step."""

from __future__ import annotations

from pathlib import Path

import pytest

from npuctl.artifacts import BuildError, BuildResult, Store, build_deployment
from tests.conftest import tiny_llama_manifest


def test_a_transformers_chat_model_builds_once_into_a_genai_folder(
        tiny_llama_build: BuildResult, tiny_llama_source: Path, tiny_llama_store: Store, tmp_path: Path) -> None:
    assert (tiny_llama_build.model_dir / "genai_config.json").is_file()
    assert tiny_llama_build.tokenizer is not None and tiny_llama_build.tokenizer.is_file()
    assert [s.name for s in tiny_llama_build.steps] == ["resolve", "genai-builder"]
    again = build_deployment(tiny_llama_manifest(tmp_path, tiny_llama_source, name="again"), store=tiny_llama_store)
    assert again.all_cached and again.model_dir == tiny_llama_build.model_dir


def test_a_precision_the_builder_lacks_is_refused_before_building(tiny_llama_source: Path, tmp_path: Path) -> None:
    manifest = tiny_llama_manifest(tmp_path, tiny_llama_source, precision="w8a8")
    with pytest.raises(BuildError, match="use fp32 or int4, or w8a16 / w4a16 for a QNN decoder-pipeline pack"):
        build_deployment(manifest, store=Store(tmp_path / "store"))
