"""The power policy on every path that runs a model. One policy (`burst`, `balanced`, `efficient`) maps to:

- the CPU EP: intra-op threads as a share of the cores, and spinning during a run (ORT's
  `session.intra_op.allow_spinning`; spinning always stops when a run ends);
- onnxruntime-genai on the CPU: the threads, through its config's `session_options` (it has no spinning option);
- the QNN EP (and genai's QNN stages): `htp_performance_mode`.

What a path cannot take is listed in `PowerInForce.not_applied`, which status and `npuctl bench` show.
The agent's default for deployments without `spec.runtime.power` depends on the power source psutil reports.

The shared CPU pool is ONNX Runtime's global thread pool. Its Python API sets only the pool's sizes
(`set_global_thread_pool_sizes`): the pool spins with ORT's default and ignores sessions' spinning entries
(measured: ~10 ms of CPU after every run), and once it exists every session must opt out of per-session threads."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort
import psutil

from npuctl.schema.enums import PerformanceMode, PowerPolicy, PowerSource
from npuctl.schema.models import Runtime
from npuctl.schema.power import CpuThreadPool, PowerDefaults, PowerInForce

log = logging.getLogger("npuctl.runtime")

CPU_EP = "CPUExecutionProvider"
QNN_EP = "QNNExecutionProvider"
SPINNING = "session.intra_op.allow_spinning"
STOP_SPINNING = "session.force_spinning_stop"

CORE_SHARE = {PowerPolicy.BURST: 1.0, PowerPolicy.BALANCED: 0.5, PowerPolicy.EFFICIENT: 0.25}
"""Intra-op threads per CPU session, as a share of the logical cores (at least one)."""
SPINS = {PowerPolicy.BURST: True, PowerPolicy.BALANCED: True, PowerPolicy.EFFICIENT: False}
HTP_MODE = {PowerPolicy.BURST: PerformanceMode.BURST, PowerPolicy.BALANCED: PerformanceMode.BALANCED,
            PowerPolicy.EFFICIENT: PerformanceMode.POWER_SAVER}

BatteryReader = Callable[[], Any]
"""psutil.sensors_battery or a stand-in: an object with `power_plugged` (True, False or None), or None."""


@dataclass(frozen=True)
class Choice:
    """A deployment's policy and who chose it."""

    policy: PowerPolicy
    source: PowerSource | None
    """The power source the agent's default was read for; None when the manifest chose."""


class _Process:
    """The process-wide part: the agent's defaults, how the power source is read, and the CPU pool mode."""

    def __init__(self) -> None:
        self.defaults = PowerDefaults()
        self.battery: BatteryReader = psutil.sensors_battery
        self.cores = os.cpu_count() or 1
        self.shared_pool = False
        self.lock = threading.Lock()


_process = _Process()


def configure(defaults: PowerDefaults, battery: BatteryReader | None = None) -> None:
    """The agent's power settings, before it opens any session. A shared CPU pool is created here, once per
    process; asking for it after another part of the process made ORT's global pool is refused by ORT."""
    with _process.lock:
        _process.defaults = defaults
        if battery is not None:
            _process.battery = battery
        if defaults.cpu_thread_pool is CpuThreadPool.SHARED and not _process.shared_pool:
            ort.set_global_thread_pool_sizes(_process.cores, 1)
            _process.shared_pool = True


def power_source(battery: BatteryReader | None = None) -> PowerSource:
    """Mains or battery where the platform reports it (Windows, Linux laptops), else unknown."""
    try:
        state = (battery or _process.battery)()
    except (OSError, RuntimeError, NotImplementedError) as exc:
        log.debug("power source unreadable: %s", exc)
        return PowerSource.UNKNOWN
    plugged = getattr(state, "power_plugged", None) if state is not None else None
    if plugged is None:
        return PowerSource.UNKNOWN
    return PowerSource.MAINS if plugged else PowerSource.BATTERY


def choose(runtime: Runtime, battery: BatteryReader | None = None) -> Choice:
    """The manifest's policy, else the agent's default for the power source read now."""
    if runtime.power is not None:
        return Choice(runtime.power, None)
    source = power_source(battery)
    return Choice(_process.defaults.policy(source), source)


def cpu_threads(policy: PowerPolicy, cores: int | None = None) -> int:
    return max(1, round((cores or _process.cores) * CORE_SHARE[policy]))


def session_options() -> ort.SessionOptions:
    """New session options that fit the process's pool mode (with a shared pool ORT refuses per-session threads)."""
    options = ort.SessionOptions()
    if _process.shared_pool:
        options.use_per_session_threads = False
    return options


def cpu_session(choice: Choice, options: ort.SessionOptions) -> PowerInForce:
    """Apply the policy to a CPU EP session's options; what it set and what it could not."""
    if _process.shared_pool:
        return PowerInForce(policy=choice.policy, source=choice.source, provider=CPU_EP,
                            settings={"use_per_session_threads": "0"},
                            not_applied=[f"cpu threads and spinning: the shared CPU pool has all {_process.cores} "
                                         "cores and spins as ONNX Runtime's default; its Python API cannot change "
                                         "either (agent.yaml power.cpuThreadPool: perSession to apply them)"])
    threads = cpu_threads(choice.policy)
    spin = "1" if SPINS[choice.policy] else "0"
    options.intra_op_num_threads = threads
    options.add_session_config_entry(SPINNING, spin)
    # Spinning stops the moment a run ends, leaving the cores to the event loop and the PC's other programs
    # (README "Serving" has the A/B).
    options.add_session_config_entry(STOP_SPINNING, "1")
    return PowerInForce(policy=choice.policy, source=choice.source, provider=CPU_EP,
                        settings={"intra_op_num_threads": str(threads), SPINNING: spin, STOP_SPINNING: "1"})


def htp_mode(runtime: Runtime, choice: Choice) -> PerformanceMode:
    """The manifest's `performanceMode` when it sets one, else the policy's."""
    return runtime.performance_mode or HTP_MODE[choice.policy]


def qnn_session(runtime: Runtime, choice: Choice) -> tuple[dict[str, str], PowerInForce]:
    """QNN EP provider options for the policy (the manifest's providerOptions win), and what they are."""
    options = {"htp_performance_mode": htp_mode(runtime, choice).value} | runtime.provider_options
    return options, PowerInForce(
        policy=choice.policy, source=choice.source, provider=QNN_EP,
        settings={"htp_performance_mode": options["htp_performance_mode"]},
        not_applied=["cpu threads and spinning: the graph runs on the NPU; ops the QNN EP did not take run on the "
                     "CPU EP with its defaults"] if choice.policy is not PowerPolicy.BURST else [])


def genai_cpu(choice: Choice) -> tuple[dict[str, Any], PowerInForce]:
    """An onnxruntime-genai config overlay for the decoder's CPU session, and what it sets. genai's config has
    thread counts but no session config entries (it refuses `config_entries`), so spinning stays genai's."""
    threads = cpu_threads(choice.policy)
    overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
    not_applied = [] if SPINS[choice.policy] else [
        "cpu spinning: onnxruntime-genai's config has no option for it (it sets session.intra_op.allow_spinning "
        "itself)"]
    return overlay, PowerInForce(policy=choice.policy, source=choice.source, provider=CPU_EP,
                                 settings={"intra_op_num_threads": str(threads)}, not_applied=not_applied)


def genai_qnn(runtime: Runtime, choice: Choice) -> tuple[dict[str, str], PowerInForce]:
    """QNN options for a genai decoder-pipeline pack's stages; its CPU stages keep genai's thread defaults."""
    options, info = qnn_session(runtime, choice)
    not_applied = [] if choice.policy is PowerPolicy.BURST else [
        "cpu threads and spinning: the pack's CPU stage (the embeddings) keeps onnxruntime-genai's defaults"]
    return options, info.model_copy(update={"not_applied": not_applied})
