"""The power policy reaching each provider's options, read back from the sessions ONNX Runtime made: the CPU EP's
threads and spinning, the QNN EP's htp_performance_mode on the HTP simulator (tiny graph); the agent's default by
power source (psutil reports none on this host: the unknown path, and injected battery states for the switch);
the shared CPU pool in a process of its own (ORT's global pool cannot be undone)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from npuctl.artifacts import Store, artifacts_of, build_deployment
from npuctl.runtime import power
from npuctl.runtime.devices import NpuKind, detect_host
from npuctl.runtime.loading import load_model
from npuctl.runtime.placement import Artifacts
from npuctl.runtime.sessions import open_cpu
from npuctl.runtime.tensors import TensorModel
from npuctl.schema.enums import PowerPolicy, PowerSource
from npuctl.schema.models import Runtime
from npuctl.schema.power import PowerDefaults
from tests.runtime.test_loading import relu_model, tensor_deployment

SPINNING = "session.intra_op.allow_spinning"


def plugged(state: bool | None) -> Any:
    """What psutil.sensors_battery() answers: None without a battery, else an object with power_plugged."""
    return lambda: SimpleNamespace(percent=50, secsleft=-1, power_plugged=state)


@pytest.fixture
def agent_defaults() -> Iterator[None]:
    """The process's power defaults back as they were after the test."""
    saved = (power._process.defaults, power._process.battery)
    yield
    power._process.defaults, power._process.battery = saved


@pytest.fixture(scope="module")
def relu_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Artifacts]:
    if detect_host().npu is not NpuKind.SIMULATOR:
        pytest.skip("needs the x86_64 HTP simulator")
    folder = tmp_path_factory.mktemp("relu")
    relu_model(folder / "relu.onnx")
    built = build_deployment(tensor_deployment(folder), store=Store(folder / "store"), base_dir=folder)
    return folder, artifacts_of(built)


def test_the_policy_reaches_the_cpu_eps_threads_and_spinning(tmp_path: Path) -> None:
    model = relu_model(tmp_path / "relu.onnx")
    read = {}
    for policy in PowerPolicy:
        opened = open_cpu(model, power.Choice(policy, None))
        options = opened.session.get_session_options()
        read[policy] = (options.intra_op_num_threads, options.get_session_config_entry(SPINNING))
        assert opened.power.settings["intra_op_num_threads"] == str(options.intra_op_num_threads)
        assert opened.power.not_applied == []
    cores = power._process.cores
    assert read[PowerPolicy.BURST] == (cores, "1")
    assert read[PowerPolicy.BALANCED] == (max(1, round(cores / 2)), "1")
    assert read[PowerPolicy.EFFICIENT] == (max(1, round(cores / 4)), "0")


def test_the_policy_reaches_the_qnn_eps_performance_mode_on_the_simulator(
        relu_artifacts: tuple[Path, Artifacts]) -> None:
    folder, artifacts = relu_artifacts
    got = {}
    for runtime in ({"power": "efficient"}, {"power": "balanced"}, {"power": "efficient",
                                                                   "performanceMode": "high_performance"}):
        model = load_model(tensor_deployment(folder, device="npu", allowSimulator=True, **runtime), artifacts)
        assert isinstance(model, TensorModel) and model.info.provider == "QNNExecutionProvider"
        options = model._session.get_provider_options()["QNNExecutionProvider"]
        assert model.info.power is not None and model.info.power.settings == {
            "htp_performance_mode": options["htp_performance_mode"]}
        got[json.dumps(runtime)] = options["htp_performance_mode"]
        model.close()
    assert list(got.values()) == ["power_saver", "balanced", "high_performance"]


def test_an_old_manifests_performance_mode_still_sets_the_htp_mode() -> None:
    old = Runtime.model_validate({"performanceMode": "sustained_high_performance"})
    options, applied = power.qnn_session(old, power.choose(old, battery=plugged(None)))
    assert options["htp_performance_mode"] == "sustained_high_performance"
    assert applied.policy is PowerPolicy.BURST and applied.source is PowerSource.UNKNOWN


def test_the_power_source_is_unknown_without_a_battery_and_follows_the_plug(agent_defaults: None) -> None:
    assert power.power_source() is PowerSource.UNKNOWN  # this host reports no battery
    assert power.power_source(lambda: None) is PowerSource.UNKNOWN
    assert power.power_source(plugged(None)) is PowerSource.UNKNOWN
    power.configure(PowerDefaults(mains="burst", battery="efficient", unknown="balanced"), battery=plugged(True))
    runtime = Runtime()
    assert power.choose(runtime) == power.Choice(PowerPolicy.BURST, PowerSource.MAINS)
    power.configure(PowerDefaults(mains="burst", battery="efficient", unknown="balanced"), battery=plugged(False))
    # Unplugged: the next session opened gets the battery's policy.
    assert power.choose(runtime) == power.Choice(PowerPolicy.EFFICIENT, PowerSource.BATTERY)
    power.configure(PowerDefaults(unknown="balanced"), battery=lambda: None)
    assert power.choose(runtime) == power.Choice(PowerPolicy.BALANCED, PowerSource.UNKNOWN)
    # The manifest's own policy wins over the agent's default.
    assert power.choose(Runtime.model_validate({"power": "efficient"})) == power.Choice(PowerPolicy.EFFICIENT, None)


def test_genai_on_the_cpu_gets_the_threads_and_says_spinning_is_not_its_to_set() -> None:
    overlay, applied = power.genai_cpu(power.Choice(PowerPolicy.EFFICIENT, None))
    threads = overlay["model"]["decoder"]["session_options"]["intra_op_num_threads"]
    assert applied.settings == {"intra_op_num_threads": str(threads)}
    assert [line.split(":")[0] for line in applied.not_applied] == ["cpu spinning"]


def test_a_shared_cpu_pool_serves_every_session_and_says_what_the_policy_cannot_set(tmp_path: Path) -> None:
    model = relu_model(tmp_path / "relu.onnx")
    script = f"""
import json, numpy as np
from pathlib import Path
from npuctl.runtime import power
from npuctl.runtime.sessions import open_cpu
from npuctl.schema.enums import PowerPolicy
from npuctl.schema.power import PowerDefaults
power.configure(PowerDefaults(cpu_thread_pool="shared"))
first = open_cpu(Path({str(model)!r}), power.Choice(PowerPolicy.EFFICIENT, None))
second = open_cpu(Path({str(model)!r}), power.Choice(PowerPolicy.BURST, None))
x = np.ones((1, 4, 8), np.float32)
first.session.run(None, {{"x": x}}); second.session.run(None, {{"x": x}})
print(json.dumps([first.session.get_session_options().use_per_session_threads, first.power.not_applied]))
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    per_session, not_applied = json.loads(ran.stdout.strip().splitlines()[-1])
    assert per_session is False
    assert len(not_applied) == 1 and "shared CPU pool" in not_applied[0]
