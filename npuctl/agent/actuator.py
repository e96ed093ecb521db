"""The agent's hands: build through npuctl.artifacts, open sessions through npuctl.runtime, route through
the server's model registry. The reconciler decides (through the `Actuator` protocol); this does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from npuctl.agent.config import BuildDeadlines
from npuctl.agent.isolated import build_isolated
from npuctl.agent.selection import device_facts, selects
from npuctl.agent.sharing import SharedModels
from npuctl.agent.source_rules import SourceRules
from npuctl.agent.status import RunFacts
from npuctl.artifacts import BuildResult, Store, artifacts_of
from npuctl.artifacts.aihub import Credentials
from npuctl.artifacts.pipeline import survey
from npuctl.artifacts.published.location import StoreLocation
from npuctl.artifacts.result import ProgressCallback, Survey
from npuctl.runtime.devices import HostFacts
from npuctl.runtime.footprint import estimated_cost
from npuctl.schema import LoadedDeployment, ModelDeployment
from npuctl.schema.cost import LoadCost
from npuctl.schema.status import ArtifactStatus
from npuctl.serve.models import ModelStatus, ServedModel, Unavailable
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.standby import Admit, Standby


class Actuator(Protocol):
    """The seam between deciding and doing. `build`, `load` and `survey` block and run in worker threads;
    the others are quick and run on the event loop."""

    def build(self, loaded: LoadedDeployment, progress: ProgressCallback, stop: threading.Event) -> BuildResult:
        """Produce (or find in the store) the deployment's artifacts. Raises on failure (BuildError says
        whether it is temporary); gives up with BuildCancelled once `stop` is set."""

    def load(self, loaded: LoadedDeployment, built: BuildResult, share: str) -> ServedModel:
        """Open sessions (or share those already open under the same `share` key: same artifacts and
        session options); returns the served model. Raises NotServable when the rules forbid every place."""

    def serve(self, deployment: ModelDeployment, model: ServedModel) -> None:
        """Route the deployment's names to `model`, atomically replacing any previous one. Raises
        ValueError when a name belongs to another deployment."""

    def reconfigure(self, deployment: ModelDeployment) -> None:
        """Apply serving-only options to the model already serving."""

    def unavailable(self, deployment: ModelDeployment, reason: str, message: str) -> None:
        """Answer the deployment's routes as not ready with this reason (nothing loaded)."""

    def standby(self, deployment: ModelDeployment, admit: Admit, message: str) -> None:
        """Route the deployment's names to a stand-in that asks (`admit`) for it to be loaded, replacing (and
        retiring: it closes after its requests) any model loaded for it."""

    def unload(self, name: str) -> None:
        """Stop serving and close the deployment's sessions (once no other deployment shares them);
        its routes answer 404."""

    def not_ready(self, subject: str, problem: tuple[str, str] | None) -> None:
        """Readiness is false while `subject` (a deployment, the state folder) has this (reason, message)."""

    def describe(self, model: ServedModel) -> RunFacts:
        """Where a loaded model runs, for status."""

    def describe_build(self, built: BuildResult) -> list[ArtifactStatus]:
        """The artifacts of a build, for status."""

    def estimate(self, loaded: LoadedDeployment, built: BuildResult) -> LoadCost:
        """What loading the build would cost, from the files its sessions would open, before loading (quick: the
        graphs' facts are read without their weights, once per file). Raises NotServable as the load would."""

    def selects(self, deployment: ModelDeployment) -> tuple[bool, str]:
        """Whether this agent is selected by the deployment's spec.selector, and why not."""

    def survey(self, loaded: LoadedDeployment, base_dir: Path) -> Survey:
        """Which build steps are stored and which would run next (blocks: re-hashes stored files). Raises
        BuildError when the sources cannot be resolved."""


class LocalActuator:
    def __init__(self, registry: ModelRegistry, store: Store, labels: dict[str, str], host: HostFacts,
                 aihub: Credentials | None = None, published: list[str | StoreLocation] | None = None,
                 pins: Callable[[], dict[str, str]] | None = None, deadlines: BuildDeadlines | None = None,
                 rules: SourceRules | None = None) -> None:
        self.registry = registry
        self.deadlines = deadlines or BuildDeadlines()
        self.rules = rules
        self.published = published or []
        self.pins = pins or dict
        self.store = store
        self.labels = labels
        self.host = host
        self.aihub = aihub
        self.facts = device_facts(self.host)
        self.shared = SharedModels(host)

    def build(self, loaded: LoadedDeployment, progress: ProgressCallback, stop: threading.Event) -> BuildResult:
        return build_isolated(loaded, self.store, progress,
                              deadlines=self.deadlines, stop=stop, for_soc=self.host.soc_model,
                              aihub_credentials=self.aihub, published=self.published, pins=self.pins(),
                              source_roots=self._roots(loaded.file))

    def load(self, loaded: LoadedDeployment, built: BuildResult, share: str) -> ServedModel:
        return self.shared.load(loaded.deployment, artifacts_of(built, self.store.views_dir), share)

    def serve(self, deployment: ModelDeployment, model: ServedModel) -> None:
        self.registry.put(model)

    def reconfigure(self, deployment: ModelDeployment) -> None:
        current = self.registry.get(deployment.name)
        if current is not None:
            self.registry.put(current.reconfigured(deployment))

    def unavailable(self, deployment: ModelDeployment, reason: str, message: str) -> None:
        self.registry.put(Unavailable(deployment, ModelStatus(False, reason, message)))

    def standby(self, deployment: ModelDeployment, admit: Admit, message: str) -> None:
        self.registry.put(Standby(deployment, admit, message))

    def unload(self, name: str) -> None:
        self.registry.remove(name)

    def not_ready(self, subject: str, problem: tuple[str, str] | None) -> None:
        self.registry.set_problem(subject, problem)

    def describe(self, model: ServedModel) -> RunFacts:
        status = model.status
        return RunFacts(provider=status.provider, npu_coverage=status.npu_coverage, on_npu=status.on_npu,
                        power=status.power, note=status.message, cost=status.cost)

    def describe_build(self, built: BuildResult) -> list[ArtifactStatus]:
        return describe_artifacts(built)

    def estimate(self, loaded: LoadedDeployment, built: BuildResult) -> LoadCost:
        return estimated_cost(loaded.deployment, artifacts_of(built, self.store.views_dir), self.host)

    def survey(self, loaded: LoadedDeployment, base_dir: Path) -> Survey:
        # A dry run's manifest is not written yet: its roots are those of the file it would be.
        return survey(loaded, store=self.store, base_dir=base_dir,
                      source_roots=self._roots(base_dir / loaded.file.name))

    def selects(self, deployment: ModelDeployment) -> tuple[bool, str]:
        return selects(deployment.spec.selector, self.labels, self.facts)

    def _roots(self, manifest: Path) -> tuple[Path, ...] | None:
        return self.rules.roots_for(manifest) if self.rules else None


def describe_artifacts(built: BuildResult) -> list[ArtifactStatus]:
    """The artifacts of a build (target, socModel, bucket, precision, digests, accuracy), as status shows them."""
    return [artifact.status() for artifact in built.artifacts]

