"""The agent-wide power defaults (agent.yaml `power`) and the power settings a loaded model really got, as
status and `npuctl bench` report them. The mapping from a policy to each path's options is npuctl.runtime.power."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Strict
from pydantic.alias_generators import to_camel

from npuctl.schema.enums import PowerPolicy, PowerSource

_BY_VALUE = Strict(False)


class CpuThreadPool(StrEnum):
    PER_SESSION = "perSession"
    """Each CPU session has its own intra-op threads, sized and spinning by its power policy."""
    SHARED = "shared"
    """One intra-op pool for every CPU session of the process (ONNX Runtime's global thread pool)."""


class PowerDefaults(BaseModel):
    """The policy of deployments that set no `spec.runtime.power`, by the PC's power source."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid", frozen=True,
                              use_attribute_docstrings=True)

    mains: Annotated[PowerPolicy, _BY_VALUE] = PowerPolicy.BURST
    """On mains power."""
    battery: Annotated[PowerPolicy, _BY_VALUE] = PowerPolicy.EFFICIENT
    """On battery."""
    unknown: Annotated[PowerPolicy, _BY_VALUE] = PowerPolicy.BURST
    """Where the platform reports no battery (a desktop, a VM): psutil.sensors_battery() is None."""
    cpu_thread_pool: Annotated[CpuThreadPool, _BY_VALUE] = CpuThreadPool.PER_SESSION
    """`perSession` (each model's threads and spinning follow its policy) or `shared` (one pool of every core
    for all CPU models: two models answering at once do not oversubscribe the cores, but ONNX Runtime's
    Python API cannot size it per model nor stop its spinning, so `efficient` keeps only its HTP mode). Read
    at start; a change needs a restart."""

    def policy(self, source: PowerSource) -> PowerPolicy:
        return {PowerSource.MAINS: self.mains, PowerSource.BATTERY: self.battery,
                PowerSource.UNKNOWN: self.unknown}[source]


class PowerInForce(BaseModel):
    """The power policy a loaded model runs under, and what each of its paths got from it."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True,
                              use_attribute_docstrings=True)

    policy: PowerPolicy
    source: PowerSource | None = None
    """The power source the agent's default was chosen for; absent when the manifest's `runtime.power` chose."""
    provider: str
    """The execution provider the settings went to."""
    settings: dict[str, str]
    """Each option set, as that provider names it (e.g. `session.intra_op.allow_spinning`,
    `intra_op_num_threads`, `htp_performance_mode`)."""
    not_applied: list[str] = []
    """Parts of the policy this path has no setting for, each with the reason (nothing is dropped silently)."""
