"""Prebuilt packs (EPContext wrappers + .bin under precompiled/<chipset>/), raw .bin wrappers, and the
compatibility check against the device an agent stands for (device facts overridden: this host has no SoC)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from npuctl.agent.actuator import LocalActuator
from npuctl.agent.config import AgentConfig
from npuctl.artifacts import BuildError, BuildResult, Store, artifacts_of, build_deployment
from npuctl.artifacts.sources.wrappers import read_description, write_wrapper
from npuctl.runtime import qnn
from npuctl.runtime.devices import detect_host
from npuctl.runtime.loading import load_model
from npuctl.runtime.placement import NotServable, Reason
from npuctl.serve.registry import ModelRegistry
from tests.artifacts.conftest import write_manifest

X2_FOLDER = "precompiled/qualcomm-snapdragon-x2-elite"
SIMULATOR_RUNTIME = {"device": "npu", "allowSimulator": True, "fallback": "none"}


def run(wrapper: Path, feed: dict[str, np.ndarray], soc: int = 60) -> np.ndarray:
    options = qnn.session_options(soc)
    options.log_severity_level = 3
    return ort.InferenceSession(str(wrapper), options).run(None, feed)[0]


@pytest.fixture
def x2_pack(tiny_dir: Path, store: Store) -> tuple[Path, BuildResult]:
    """A pack holding the tiny model compiled for the X2 Elite (soc 88), laid out as qualcomm's HF repos are."""
    built = build_deployment(write_manifest(tiny_dir, targets=["x2-elite"]), store=store)
    pack = tiny_dir / "pack"
    (pack / X2_FOLDER).mkdir(parents=True)
    (artifact,) = built.artifacts
    for file in (artifact.context_model, artifact.context_binary):
        shutil.copyfile(file, pack / X2_FOLDER / file.name)
    return pack, built


def test_a_pack_is_imported_for_its_target_without_compiling(x2_pack: tuple[Path, BuildResult], tiny_dir: Path,
                                                             store: Store) -> None:
    pack, built = x2_pack
    loaded = write_manifest(tiny_dir, name="packed", targets=["x2-elite"], model={"source": "file:pack", "task": "tensor"})
    result = build_deployment(loaded, store=store)
    assert [s.name for s in result.steps if not s.cached] == ["import-pack"]
    (artifact,) = result.artifacts
    assert (artifact.origin, artifact.soc_model, artifact.htp_arch, artifact.bucket) == ("prebuilt", 88, 81, 8)
    assert artifact.accuracy is None and result.cpu_model is None
    assert artifact.context_binary.read_bytes() == built.artifacts[0].context_binary.read_bytes()
    assert artifact.compatibility == "v2:6:2.51.0:5.51.0:0:88:0:0"


def test_an_x2_elite_pack_is_refused_on_an_x_elite_device(x2_pack: tuple[Path, BuildResult], tiny_dir: Path,
                                                          store: Store) -> None:
    loaded = write_manifest(tiny_dir, name="packed", targets=["x2-elite"], runtime=SIMULATOR_RUNTIME,
                            model={"source": "file:pack", "task": "tensor"}, build={"strategy": "prebuilt"})
    x_elite = detect_host().with_overrides({"socModel": 60})
    # The agent builds for its device; with nothing to compile from, it fetches the declared x2-elite binary.
    result = build_deployment(loaded, store=store, for_soc=60)
    assert [a.soc_model for a in result.artifacts] == [88]
    with pytest.raises(NotServable) as refused:
        load_model(loaded.deployment, artifacts_of(result), x_elite)
    assert refused.value.reason is Reason.NO_CONTEXT_BINARY
    assert "built for soc 88 (Snapdragon X2 Elite), this device is soc 60 (Snapdragon X Elite)" in refused.value.message
    # Without a device override the simulator would run it: the refusal comes from the device facts.
    assert load_model(loaded.deployment, artifacts_of(result), detect_host().with_overrides({"socModel": 88}))


def test_with_a_buildable_source_the_agent_rebuilds_for_its_own_soc(x2_pack: tuple[Path, BuildResult],
                                                                    tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir, name="packed", targets=["x2-elite"], runtime=SIMULATOR_RUNTIME,
                            build={"prebuilt": {"source": "file:pack"}})
    actuator = LocalActuator(ModelRegistry(), store, {}, host=detect_host().with_overrides({"socModel": 60}))
    result = actuator.build(loaded, lambda event: None, threading.Event())
    (artifact,) = result.artifacts
    assert (artifact.soc_model, artifact.origin, artifact.target) == (60, "local", "soc60")
    assert artifact.accuracy is not None and artifact.accuracy.value <= 0.05
    model = actuator.load(loaded, result, "x-elite")
    assert model.status.where == "npu-simulator"
    # A device the pack fits takes the pack's binary and compiles nothing.
    x2 = build_deployment(loaded, store=store, for_soc=88)
    assert [(a.soc_model, a.origin) for a in x2.artifacts] == [(88, "prebuilt")]


def test_a_pack_without_the_target_and_nothing_to_compile_says_what_it_holds(x2_pack: tuple[Path, BuildResult],
                                                                            tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir, name="packed", targets=["x-elite"], model={"source": "file:pack", "task": "tensor"})
    with pytest.raises(BuildError, match=r"no context binary for x-elite \(soc 60 \(Snapdragon X Elite\)\): "
                                         r"file:pack holds soc 88 \(Snapdragon X2 Elite\) bucket 8"):
        build_deployment(loaded, store=store)


def test_agent_config_takes_device_facts() -> None:
    assert AgentConfig(facts={"socModel": 60}).facts == {"socModel": 60}
    with pytest.raises(ValueError, match="unknown device fact 'soc_model'"):
        AgentConfig(facts={"soc_model": 60})
    host = detect_host().with_overrides({"soc": "x2-elite"})
    assert (host.soc_model, host.htp_arch, host.soc_name) == (88, 81, "Snapdragon X2 Elite")


def _description(wrapper: Path) -> dict[str, object]:
    """What qnn-context-binary-utility writes for the binary of a local build (float I/O)."""
    model = onnx.load(str(wrapper))
    node = model.graph.node[0]

    def tensor(value: onnx.ValueInfoProto) -> dict[str, object]:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        return {"info": {"name": value.name, "dataType": "QNN_DATATYPE_FLOAT_32", "dimensions": dims,
                         "quantizeParams": {"definition": "QNN_DEFINITION_UNDEFINED"}}}

    return {"info": {"buildId": "v2.51.0.260929181845", "graphs": [{"info": {
        "graphName": node.name, "graphInputs": [tensor(v) for v in model.graph.input],
        "graphOutputs": [tensor(v) for v in model.graph.output]}}]}}


def test_a_generated_wrapper_runs_like_the_original(tiny_dir: Path, store: Store, tmp_path: Path) -> None:
    (artifact,) = build_deployment(write_manifest(tiny_dir), store=store).artifacts
    folder = tmp_path / "raw"
    folder.mkdir()
    binary = shutil.copyfile(artifact.context_binary, folder / "tiny.bin")
    (folder / "tiny.json").write_text(json.dumps(_description(artifact.context_model)))
    description = read_description(folder / "tiny.json")
    wrapper = write_wrapper(binary, description.graphs[0], folder / "tiny_ctx.onnx", sdk_version=description.sdk_version)
    feed = {"x": np.random.default_rng(3).standard_normal((1, 8, 16)).astype(np.float32)}
    np.testing.assert_array_equal(run(wrapper, feed), run(artifact.context_model, feed))


def test_raw_bin_and_json_in_a_chipset_folder_are_imported_with_a_generated_wrapper(tiny_dir: Path, store: Store) -> None:
    (artifact,) = build_deployment(write_manifest(tiny_dir), store=store).artifacts
    folder = tiny_dir / "raw" / "precompiled" / "qualcomm-snapdragon-x-elite"
    folder.mkdir(parents=True)
    shutil.copyfile(artifact.context_binary, folder / "tiny.bin")
    (folder / "tiny.json").write_text(json.dumps(_description(artifact.context_model)))
    loaded = write_manifest(tiny_dir, name="raw", model={"source": "file:raw", "task": "tensor"})
    (imported,) = build_deployment(loaded, store=store).artifacts
    assert (imported.soc_model, imported.bucket, imported.qnn_sdk) == (60, 8, "2.51.0")
    feed = {"x": np.ones((1, 8, 16), np.float32)}
    np.testing.assert_array_equal(run(imported.context_model, feed), run(artifact.context_model, feed))


def test_a_pack_binary_linking_outside_the_pack_is_refused(x2_pack: tuple[Path, BuildResult], tiny_dir: Path,
                                                           store: Store, tmp_path: Path) -> None:
    pack, built = x2_pack
    binary = pack / X2_FOLDER / built.artifacts[0].context_binary.name
    secret = tmp_path / "outside.bin"
    shutil.move(binary, secret)
    binary.symlink_to(secret)
    loaded = write_manifest(tiny_dir, name="linked", targets=["x2-elite"], model={"source": "file:pack", "task": "tensor"})
    with pytest.raises(BuildError, match="leads outside the pack folder"):
        build_deployment(loaded, store=store)
