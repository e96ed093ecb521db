"""A read-only view of a running agent: what the control API and the dashboard show. They read through this,
never the reconciler's own fields, so what they can see is written down here and none of it can be changed
from an HTTP handler."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from npuctl.agent.decide import waits_for
from npuctl.agent.desired import Desired
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.records import Activity
from npuctl.agent.status import Condition, DeploymentStatus, Event
from npuctl.schema.status import BudgetUse, FileProblem, PendingFile


class AgentState:
    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler

    @property
    def declared(self) -> Mapping[str, Desired]:
        """What the manifests declare now, by deployment name."""
        return MappingProxyType(self._reconciler.desired)

    @property
    def endpoint(self) -> str:
        return self._reconciler.endpoint

    @property
    def manifest_folder(self) -> Path:
        """The first watched folder: where `apply` writes manifests."""
        return self._reconciler.config.manifests[0]

    def names(self) -> list[str]:
        """Every deployment declared or with a status (one being removed still has one), sorted."""
        return sorted(set(self._reconciler.desired) | set(self._reconciler.book.deployments))

    def status(self, name: str) -> DeploymentStatus | None:
        return self._reconciler.book.deployments.get(name)

    def events(self, name: str | None = None) -> list[Event]:
        """The agent's event log, oldest first; only those of deployment `name` when given."""
        return [e for e in self._reconciler.book.events if name in (None, e.deployment)]

    def building(self, name: str) -> bool:
        """Whether the deployment waits for a build (its own, or one another deployment runs for it)."""
        record = self._reconciler.records.get(name)
        return record is not None and waits_for(record, self._reconciler.builds_now()) is Activity.BUILDING

    def conditions(self) -> list[Condition]:
        """The agent's own conditions (state folder, manifests read, reconcile loop)."""
        return self._reconciler.health.conditions()

    def invalid_files(self) -> list[FileProblem]:
        return sorted(self._reconciler.health.files.values(), key=lambda p: p.file)

    def budget(self) -> BudgetUse:
        """What the loaded models take of the agent's budget."""
        return self._reconciler.admissions.use(self._reconciler.costs)

    def pending_files(self) -> tuple[PendingFile, ...]:
        return self._reconciler.desired_state.pending
