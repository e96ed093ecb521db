"""The agent's part of /metrics: each deployment's phase and provider, each manifest source's state, and the
device, so that Prometheus scraping a fleet's agents gives the fleet picture (how many PCs have a deployment
Ready, on which provider, which SoCs lag). Read from the status book at scrape time; registered into the
server's registry by the agent, so the serving layer knows nothing of agents."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from npuctl import __version__
from npuctl.agent.sources import SourcePoller
from npuctl.agent.status import Phase, StatusBook
from npuctl.runtime.devices import HostFacts
from npuctl.schema.status import BudgetUse

SOURCE_STATES = ("Pending", "Synced", "Unreachable", "Stalled", "Rejected")


class AgentCollector(Collector):
    def __init__(self, book: StatusBook, poller: SourcePoller, host: HostFacts,
                 loaded: Callable[[], int] = lambda: 0, budget: Callable[[], BudgetUse] | None = None) -> None:
        self.book = book
        self.poller = poller
        self.host = host
        self.loaded = loaded
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("npuctl_agent_info", "1, labelled with the agent's version and device.",
                                 labels=["version", "soc", "soc_model", "npu"])
        soc = self.host.soc
        info.add_metric([__version__, soc.alias if soc else "", str(self.host.soc_model or ""), self.host.npu.value], 1.0)
        # Every phase is exported, 0 or 1 (as kube-state-metrics does): `sum by (phase)` then counts a fleet.
        phase = GaugeMetricFamily("npuctl_deployment_phase", "1 for the deployment's current phase, 0 for the others.",
                                  labels=["deployment", "phase"])
        provider = GaugeMetricFamily(
            "npuctl_deployment_provider", "1 for the execution provider the deployment's session really got.",
            labels=["deployment", "provider", "phase"])
        for name, status in sorted(self.book.deployments.items()):
            for value in Phase:
                phase.add_metric([name, value.value], 1.0 if status.phase == value else 0.0)
            if status.provider:
                provider.add_metric([name, status.provider, status.phase.value], 1.0)
        source = GaugeMetricFamily("npuctl_source_state", "1 for each manifest source's current state.",
                                   labels=["source", "state", "version"])
        polls = CounterMetricFamily("npuctl_source_polls", "Polls of each manifest source since the agent started.",
                                    labels=["source"])
        for state in self.poller.states.values():
            for state_name in SOURCE_STATES:
                source.add_metric([state.name, state_name, state.version or ""],
                                  1.0 if state.state == state_name else 0.0)
            polls.add_metric([state.name], state.polls)
        loaded = GaugeMetricFamily("npuctl_loaded_models", "Models with open sessions; deployments with the same "
                                   "artifacts and session options share one.")
        loaded.add_metric([], float(self.loaded()))
        yield from (info, phase, provider, source, polls, loaded)
        if self.budget is not None:
            yield from _budget_gauges(self.budget())


def _budget_gauges(use: BudgetUse) -> Iterator[Metric]:
    """The budget and its use; the memory used split into the agent itself and its loaded models."""
    memory = GaugeMetricFamily("npuctl_budget_memory_bytes", "The agent's memory budget, for the whole process.")
    memory.add_metric([], use.memory)
    used = GaugeMetricFamily("npuctl_budget_memory_used_bytes", "What the budget's memory holds now: the agent "
                             "itself (measured at its start) and the loaded models' costs.", labels=["holder"])
    used.add_metric(["agent"], use.agent_memory)
    used.add_metric(["models"], use.memory_used - use.agent_memory)
    sessions = GaugeMetricFamily("npuctl_budget_npu_sessions", "NPU sessions the budget allows, and in use.",
                                 labels=["state"])
    sessions.add_metric(["allowed"], use.npu_sessions)
    sessions.add_metric(["used"], use.npu_sessions_used)
    yield from (memory, used, sessions)
