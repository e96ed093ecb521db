"""The build graph on tiny generated models: keys, caching, precisions, targets, failures."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from npuctl.artifacts import AccuracyError, BuildError, BuildResult, NotBuiltError, Store, build_deployment, facts
from npuctl.artifacts.compile import COMPAT_KEY, compat_soc
from tests.artifacts.conftest import tiny_model, write_manifest

QUANT_TAIL = ["quantize", "compile", "verify"]


def ran(result: BuildResult) -> list[str]:
    return [s.name for s in result.steps if not s.cached]


def test_first_build_runs_every_step_and_the_second_none(tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir)
    first = build_deployment(loaded, store=store)
    assert ran(first) == ["static-shapes", "npu-fixes", "preprocess", *QUANT_TAIL]
    (artifact,) = first.artifacts
    assert artifact.soc_model == 60 and artifact.bucket == 8 and artifact.precision == "w8a16"
    assert artifact.context_model.name.endswith("_ctx.onnx") and artifact.context_binary.is_file()
    assert artifact.accuracy.metric == "max_abs_error" and artifact.accuracy.value <= 0.05
    assert artifact.npu_coverage == 1.0
    assert first.cpu_model == tiny_dir / "tiny.onnx"

    events = []
    second = build_deployment(loaded, store=store, progress=events.append)
    assert ran(second) == [] and second.all_cached
    # Reading the source is announced (the agent times it) and found unchanged; every step after it is stored.
    assert [e.state.value for e in events if e.step == "resolve"] == ["running", "cached"]
    assert {e.state.value for e in events if e.step != "resolve"} == {"cached"}
    assert second.as_dict() | {"artifacts": None} == first.as_dict() | {"artifacts": None}
    assert second.artifacts[0].context_model == artifact.context_model


def test_cached_only_adopts_a_built_store_and_refuses_to_build(tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir)
    with pytest.raises(NotBuiltError, match="static-shapes"):
        build_deployment(loaded, store=store, cached_only=True)
    built = build_deployment(loaded, store=store)
    adopted = build_deployment(loaded, store=store, cached_only=True)
    assert adopted.all_cached
    assert adopted.artifacts[0].context_binary == built.artifacts[0].context_binary


def test_serve_and_runtime_changes_change_no_key(tiny_dir: Path, store: Store) -> None:
    first = build_deployment(write_manifest(tiny_dir), store=store)
    changed = write_manifest(tiny_dir, serve={"name": "other", "maxBatch": 4}, runtime={"device": "cpu"})
    second = build_deployment(changed, store=store)
    assert [s.key for s in second.steps] == [s.key for s in first.steps]
    assert ran(second) == []


def test_precision_change_reruns_only_quantize_compile_verify(tiny_dir: Path, store: Store) -> None:
    first = build_deployment(write_manifest(tiny_dir), store=store)
    second = build_deployment(write_manifest(tiny_dir, precision="w8a8"), store=store)
    assert ran(second) == QUANT_TAIL
    shared = {s.name: s.key for s in first.steps if s.name not in QUANT_TAIL}
    assert {s.name: s.key for s in second.steps if s.name not in QUANT_TAIL} == shared


def test_two_targets_give_two_binaries_for_their_socs(tiny_dir: Path, store: Store) -> None:
    result = build_deployment(write_manifest(tiny_dir, targets=["x-elite", "x2-elite"]), store=store)
    by_target = {a.target: a for a in result.artifacts}
    assert {t: a.soc_model for t, a in by_target.items()} == {"x-elite": 60, "x2-elite": 88}
    digests = {a.files[-1].sha256 for a in result.artifacts if a.files[-1].path.endswith(".bin")}
    assert len(digests) == 2
    for artifact in result.artifacts:
        record = store.get(artifact.context_model.parent.name)
        assert record is not None and isinstance(record.details, facts.Compile)
        assert record.details.soc_model == artifact.soc_model
        assert record.details.htp_arch == {60: 73, 88: 81}[artifact.soc_model]
        props = {p.key: p.value for p in onnx.load(str(artifact.context_model)).metadata_props}
        assert compat_soc(props[COMPAT_KEY]) == artifact.soc_model
    only = build_deployment(write_manifest(tiny_dir, targets=["x-elite", "x2-elite"]), store=store,
                            targets=["x2-elite"])
    assert [a.target for a in only.artifacts] == ["x2-elite"] and only.all_cached


def test_fp16_compiles_without_quantization(tiny_dir: Path, store: Store) -> None:
    result = build_deployment(write_manifest(tiny_dir, precision="fp16"), store=store)
    assert "quantize" not in [s.name for s in result.steps]
    (artifact,) = result.artifacts
    assert artifact.accuracy.value <= 0.01
    record = json.loads((artifact.context_model.parent / "record.json").read_text(encoding="utf-8"))
    assert record["step"] == "compile" and record["details"]["precision"] == "fp16"


def test_fp32_builds_nothing_for_the_npu(tiny_dir: Path, store: Store) -> None:
    result = build_deployment(write_manifest(tiny_dir, precision="fp32"), store=store)
    assert result.artifacts == () and result.cpu_model.is_file()


def test_buckets_build_one_static_graph_each(tiny_dir: Path, store: Store) -> None:
    result = build_deployment(write_manifest(tiny_dir, shapes={"sequenceLengths": [8, 16]}), store=store)
    assert [a.bucket for a in result.artifacts] == [8, 16]
    shapes = [[d.dim_value for d in onnx.load(str(a.context_model)).graph.input[0].type.tensor_type.shape.dim]
              for a in result.artifacts]
    assert shapes == [[1, 8, 16], [1, 16, 16]]


def test_failed_accuracy_names_both_numbers_and_stores_no_verify(tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir, accuracy={"metric": "max_abs_error", "threshold": 1e-9, "samples": 2})
    with pytest.raises(AccuracyError) as caught:
        build_deployment(loaded, store=store)
    error = caught.value
    assert f"{error.value:.6f}" in str(error) and "1e-09" in str(error)
    assert "verify" not in {r.step for r in store.records()}
    assert "compile" in {r.step for r in store.records()}


def test_unsupported_op_is_named(tmp_path: Path, store: Store) -> None:
    tiny_model(tmp_path / "tiny.onnx", extra_op="Hardmax")
    with pytest.raises(BuildError, match=r"QNN EP cannot take 1 of \d+ nodes for soc 60: Hardmax x1"):
        build_deployment(write_manifest(tmp_path, precision="fp16"), store=store)


def test_unknown_target_and_missing_source_are_explained(tiny_dir: Path, store: Store) -> None:
    with pytest.raises(BuildError, match="not a target of tiny"):
        build_deployment(write_manifest(tiny_dir), store=store, targets=["8-elite"])
    with pytest.raises(BuildError, match="does not exist"):
        build_deployment(write_manifest(tiny_dir, model={"source": "file:nope.onnx", "task": "tensor"}), store=store)
    with pytest.raises(BuildError, match="not installed"):
        build_deployment(write_manifest(tiny_dir, model={"source": "pkg:no_such_pkg_xyz/m", "task": "tensor"}),
                         store=store)
