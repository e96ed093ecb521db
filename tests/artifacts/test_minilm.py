"""End to end on all-MiniLM-L6-v2 from its Python package: export, quantize, compile and verify on the HTP simulator."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from npuctl.artifacts import AccuracyError, BuildResult, StepEvent, Store, build_deployment
from tests.conftest import minilm_manifest

pytestmark = pytest.mark.slow


def test_w8a16_for_x_elite_meets_the_bar(minilm_build: BuildResult) -> None:
    (artifact,) = minilm_build.artifacts
    assert (artifact.target, artifact.soc_model, artifact.htp_arch, artifact.bucket) == ("x-elite", 60, 73, 128)
    assert artifact.accuracy.metric == "cosine" and artifact.accuracy.value >= 0.98
    assert artifact.npu_coverage >= 0.99
    assert artifact.context_binary.stat().st_size > 10_000_000 and "quantize" in [s.name for s in artifact.steps]
    dims = onnx.load(str(minilm_build.cpu_model), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "sequence"]
    assert (minilm_build.model_dir / "1_Pooling" / "config.json").is_file()
    assert (minilm_build.model_dir / "modules.json").is_file()
    assert minilm_build.tokenizer == minilm_build.model_dir / "tokenizer.json"
    assert [s.name for s in minilm_build.steps] == [
        "resolve", "export", "static-shapes", "npu-fixes", "preprocess", "quantize", "compile", "verify"]


def test_second_build_runs_no_step(minilm_build: BuildResult, minilm_store: Store, minilm_dir: Path) -> None:
    again = build_deployment(minilm_manifest(minilm_dir), store=minilm_store)
    assert again.all_cached
    assert again.artifacts[0].context_model == minilm_build.artifacts[0].context_model


def test_w8a8_below_a_0_9999_cosine_bar_fails_and_reruns_only_the_precision_steps(
    minilm_build: BuildResult, minilm_store: Store, minilm_dir: Path
) -> None:
    verified_before = [r.key for r in minilm_store.records() if r.step == "verify"]
    events: list[StepEvent] = []
    loaded = minilm_manifest(minilm_dir, "minilm-strict", precision="w8a8",
                             accuracy={"metric": "cosine", "threshold": 0.9999, "samples": 2})
    with pytest.raises(AccuracyError) as caught:
        build_deployment(loaded, store=minilm_store, progress=events.append)
    error = caught.value
    assert error.threshold == 0.9999 and error.value < 0.9999
    assert f"cosine {error.value:.6f}" in str(error) and "below the required 0.9999" in str(error)
    started = [e.step for e in events if e.state == "running" and e.progress is None]  # not its progress reports
    assert started == ["resolve", "quantize", "compile", "verify"]
    assert [r.key for r in minilm_store.records() if r.step == "verify"] == verified_before
