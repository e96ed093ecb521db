"""The longest prompt a decoder-pipeline pack takes (npuctl/runtime/genai_pack.py): onnxruntime-genai pads the
prompt's last chunk to a whole window in a KV cache that does not slide, so the padded prompt must leave room."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npuctl.runtime.genai_pack import read_pack
from tests.artifacts.conftest import tiny_model


def pack(folder: Path, sliding_window: dict[str, object]) -> Path:
    tiny_model(folder / "stage.onnx")
    decoder = {"pipeline": [{"stage": {"filename": "stage.onnx"}}], "sliding_window": sliding_window}
    config = {"model": {"type": "decoder-pipeline", "context_length": 256, "eos_token_id": 1, "decoder": decoder}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("window", "longest"), [(64, 192), (100, 200), (255, 255), (256, 0)])
def test_a_padded_window_leaves_room_for_the_answer(tmp_path: Path, window: int, longest: int) -> None:
    folder = pack(tmp_path, {"window_size": window, "slide_key_value_cache": False, "alignment": "left"})
    assert read_pack(folder).max_prompt_tokens == longest


def test_a_sliding_kv_cache_takes_a_prompt_up_to_the_context(tmp_path: Path) -> None:
    folder = pack(tmp_path, {"window_size": 128, "slide_key_value_cache": True})
    assert read_pack(folder).max_prompt_tokens == 255
