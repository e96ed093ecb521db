"""Typed step facts: a step's facts are stored under `details` with their kind and read back as their model; records
of the flat format (facts beside the record's own keys) are read once and rewritten, from the local store and from
a published one; an artifact's status and `build -o json` are projections of its steps' facts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from npuctl.artifacts import NpuArtifact, StepRun, Store, facts
from npuctl.artifacts.published.fetch import open_source
from npuctl.artifacts.published.publish import BLOBS, LAYOUT_FILE, STEPS
from npuctl.artifacts.steps import Runner
from npuctl.artifacts.store import RECORD, StoredFile
from npuctl.schema.models import Precision

COVERAGE = facts.Coverage(qnn_share=1.0, nodes_by_ep={"QNNExecutionProvider": 12}, other_ops={})
COMPILED = facts.Compile(soc_model=60, htp_arch=73, precision=Precision.W8A16, qnn_sdk="2.51.0",
                         ep_compatibility_info="v2:6:2.51.0:5.51.0:0:60:0:0", npu_coverage=1.0, coverage=COVERAGE)
OWN = {"inputs": {"model": "ab" * 32}, "parameters": {"soc_model": 60}, "tool_versions": {"qnn-sdk": "2.51.0"},
       "created": "2026-01-01T00:00:00+00:00", "seconds": 1.0}
BINARY = b"context binary"


def flat_record(folder: Path, step: str, key: str, flat_facts: dict[str, object]) -> None:
    """A step folder as npuctl wrote it before facts moved under `details`."""
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(BINARY)
    files = [{"path": "model.bin", "sha256": hashlib.sha256(BINARY).hexdigest(), "size": len(BINARY)}]
    record = {"step": step, "key": key, **OWN, "files": files, **flat_facts}
    (folder / RECORD).write_text(json.dumps(record), encoding="utf-8")


def test_facts_sit_under_details_with_their_kind_and_come_back_as_their_model(store: Store) -> None:
    work = store.new_workdir("k1")
    (work / "model.bin").write_bytes(BINARY)
    with store.lock("k1"):
        store.commit(work, key="k1", inputs={}, parameters={}, tool_versions={}, seconds=1.0, details=COMPILED)
    stored = json.loads((store.steps_dir / "k1" / RECORD).read_text(encoding="utf-8"))
    assert stored["step"] == "compile" and stored["details"]["kind"] == "compile"
    assert stored["details"]["soc_model"] == 60 and "soc_model" not in stored
    assert stored["files"] == [{"path": "model.bin", "sha256": hashlib.sha256(BINARY).hexdigest(), "size": 14}]
    record = store.get("k1")
    assert record is not None and record.details == COMPILED and isinstance(record.details, facts.Compile)


def test_a_flat_record_is_read_once_and_rewritten_with_its_facts_under_details(store: Store) -> None:
    flat = COMPILED.model_dump(mode="json", exclude={"kind"})
    flat_record(store.steps_dir / "k2", "compile", "k2", flat)
    record = store.get("k2")
    assert record is not None and record.details == COMPILED
    rewritten = json.loads((store.steps_dir / "k2" / RECORD).read_text(encoding="utf-8"))
    assert rewritten["details"] == COMPILED.model_dump(mode="json") and "soc_model" not in rewritten
    assert {k: rewritten[k] for k in OWN} == OWN
    assert store.get("k2") == record and store.verify() == []


def test_a_flat_llm_compile_is_told_from_an_encoder_compile_by_its_facts(store: Store) -> None:
    placement = facts.Placement(node_share=0.9, weight_share=0.95, stages={})
    llm = facts.LlmCompile(soc_model=60, htp_arch=73, precision=Precision.W4A16, qnn_sdk="2.51.0",
                           ep_compatibility_info=None, weight_sharing=False, placement=placement)
    flat_record(store.steps_dir / "k3", "compile", "k3", llm.model_dump(mode="json", exclude={"kind"}))
    record = store.get("k3")
    assert record is not None and record.details == llm


def test_a_flat_record_missing_a_fact_is_not_found_so_the_step_is_built_again(store: Store) -> None:
    flat_record(store.steps_dir / "k4", "verify", "k4", {"soc_model": 60, "npu_coverage": 1.0})
    assert store.get("k4") is None


def test_a_record_whose_facts_are_another_kind_is_built_over(store: Store) -> None:
    runner = Runner(store, lambda event: None, cached_only=False)
    key = runner.key("export", {"source": "s"}, {})
    seq2seq = facts.Seq2SeqExport(layers=2, heads=2, d_kv=8, max_output_tokens=16, decoder_start_token_id=0,
                                  eos_token_id=1)
    with store.lock(key):
        store.commit(store.new_workdir(key), key=key, inputs={}, parameters={}, tool_versions={}, seconds=0.1,
                     details=seq2seq)
    record, run = runner.run(facts.Export, {"source": "s"}, {}, lambda out: facts.Export(input_names=["input_ids"]))
    assert record.details == facts.Export(input_names=["input_ids"]) and not run.cached
    stored = store.get(key)
    assert stored is not None and stored.details == record.details


def test_a_flat_record_of_a_published_store_is_fetched_and_kept_in_the_current_format(store: Store,
                                                                                     tmp_path: Path) -> None:
    runner = Runner(store, lambda event: None, cached_only=True, published=[open_source(str(tmp_path / "pub"))])
    key = runner.key("npu-fixes", {"model": "m"}, {"mask_floor": -1})
    (tmp_path / "pub" / STEPS).mkdir(parents=True)
    (tmp_path / "pub" / LAYOUT_FILE).write_text('{"layout": 1}', encoding="utf-8")
    flat_record(tmp_path / "old", "npu-fixes", key, {"clamped_mask_constants": 2})
    (tmp_path / "old" / RECORD).rename(tmp_path / "pub" / STEPS / f"{key}.json")
    (tmp_path / "pub" / BLOBS).mkdir(parents=True)
    (tmp_path / "old" / "model.bin").rename(tmp_path / "pub" / BLOBS / hashlib.sha256(BINARY).hexdigest())

    def never(out: Path) -> facts.NpuFixes:
        raise AssertionError("a published step is fetched, not run")

    record, _ = runner.run(facts.NpuFixes, {"model": "m"}, {"mask_floor": -1}, never)
    assert record.details == facts.NpuFixes(clamped_mask_constants=2)
    local = json.loads((store.steps_dir / key / RECORD).read_text(encoding="utf-8"))
    assert local["details"] == {"kind": "npu-fixes", "clamped_mask_constants": 2}


def artifact(built: facts.Binary, accuracy: facts.Accuracy | None) -> NpuArtifact:
    folder = Path("/store/steps/abc")
    return NpuArtifact(target="x-elite", built=built, precision=Precision.W8A16, batch=1, bucket=128,
                       context_model=folder / "model_ctx.onnx", context_binary=folder / "model_ctx_qnn.bin",
                       accuracy=accuracy, npu_coverage=0.98, files=(StoredFile("model_ctx.onnx", "aa", 10),),
                       steps=(StepRun("compile", "k", True, 0.01),))


def test_status_and_build_json_are_projections_of_the_compile_and_verify_facts() -> None:
    accuracy = facts.Accuracy(metric="cosine", value=0.991, mean=0.995, threshold=0.98, samples=8, agreement=None)
    built = artifact(COMPILED, accuracy)
    assert built.as_dict() == {
        "target": "x-elite", "soc_model": 60, "precision": "w8a16", "bucket": 128, "origin": "local",
        "compatibility": "v2:6:2.51.0:5.51.0:0:60:0:0",
        "files": [{"path": "/store/steps/abc/model_ctx.onnx", "sha256": "aa", "size": 10}],
        "accuracy": {"metric": "cosine", "value": 0.991, "threshold": 0.98}, "npu_coverage": 0.98,
        "steps": [{"name": "compile", "key": "k", "cached": True, "seconds": 0.01}],
    }
    assert built.status().model_dump(mode="json") == {
        "target": "x-elite", "socModel": 60, "bucket": 128, "precision": "w8a16", "sha256": {"model_ctx.onnx": "aa"},
        "accuracy": {"metric": "cosine", "value": 0.991, "threshold": 0.98}, "npuCoverage": 0.98, "generation": None,
    }
    assert (built.soc_model, built.htp_arch, built.qnn_sdk) == (60, 73, "2.51.0")


def test_who_compiled_a_binary_and_with_which_sdk_follow_the_step_that_made_it() -> None:
    aihub = facts.AihubCompile(soc_model=60, htp_arch=73, precision=Precision.W8A16, qnn_sdk="2.51.0",
                               ep_compatibility_info=None, aihub_job="j1", aihub_device="Snapdragon X Elite CRD",
                               qnn_sdk_compiled="2.45.0")
    pack = facts.ImportPack(soc_model=88, htp_arch=81, precision=None, qnn_sdk="2.40.0", ep_compatibility_info=None,
                            context_binary="model.bin")
    assert (artifact(aihub, None).origin, artifact(aihub, None).qnn_sdk) == ("aihub", "2.45.0")
    assert (artifact(pack, None).origin, artifact(pack, None).soc_model) == ("prebuilt", 88)
    assert artifact(pack, None).as_dict()["accuracy"] is None
