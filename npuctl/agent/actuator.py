"""The agent's hands: build through npuctl.artifacts, open sessions through npuctl.runtime, route through
the server's model registry. The reconciler decides; this does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from npuctl.agent.isolated import build_isolated
from npuctl.agent.selection import device_facts, selects
from npuctl.artifacts import BuildError, BuildResult, Store
from npuctl.artifacts.aihub import Credentials
from npuctl.artifacts.fetch import StoreLocation
from npuctl.artifacts.pipeline import survey
from npuctl.runtime.devices import HostFacts, detect_host
from npuctl.runtime.loading import load_model
from npuctl.schema import LoadedDeployment, ModelDeployment
from npuctl.serve.oneshot import artifacts_of
from npuctl.serve.models import ModelStatus, ServedModel, Unavailable, serve_loaded
from npuctl.serve.registry import ModelRegistry


class LocalActuator:
    def __init__(self, registry: ModelRegistry, store: Store, labels: dict[str, str], host: HostFacts | None = None,
                 aihub: Credentials | None = None, published: list[str | StoreLocation] | None = None,
                 pins: Callable[[], dict[str, str]] | None = None) -> None:
        self.registry = registry
        self.published = published or []
        self.pins = pins or dict
        self.store = store
        self.labels = labels
        self.host = host or detect_host()
        self.aihub = aihub
        self.facts = device_facts(self.host)

    def build(self, loaded: LoadedDeployment, progress: Callable[[str, str], None]) -> BuildResult:
        return build_isolated(loaded, self.store, lambda event: progress(_step_name(event), event.state),
                              for_soc=self.host.soc_model, aihub_credentials=self.aihub, published=self.published,
                              pins=self.pins())

    def load(self, loaded: LoadedDeployment, built: BuildResult) -> ServedModel:
        deployment = loaded.deployment
        return serve_loaded(deployment, load_model(deployment, artifacts_of(built), self.host))

    def serve(self, deployment: ModelDeployment, model: ServedModel) -> None:
        self.registry.put(model)

    def reconfigure(self, deployment: ModelDeployment) -> None:
        current = self.registry.get(deployment.name)
        if current is not None:
            self.registry.put(current.reconfigured(deployment))

    def unavailable(self, deployment: ModelDeployment, reason: str, message: str) -> None:
        self.registry.put(Unavailable(deployment, ModelStatus(False, reason, message)))

    def unload(self, name: str) -> None:
        self.registry.remove(name)

    def describe(self, model: ServedModel) -> dict[str, Any]:
        status = model.status
        return {"provider": status.provider, "npuCoverage": status.npu_coverage,
                "onNpu": status.where in ("npu", "npu-simulator"), "note": status.message}

    def describe_build(self, built: BuildResult) -> list[dict[str, Any]]:
        return describe_artifacts(built)

    def survey(self, loaded: LoadedDeployment, base_dir: Path) -> dict[str, Any]:
        try:
            found = survey(loaded, store=self.store, base_dir=base_dir)
        except BuildError as exc:
            return {"stored": [], "next": None, "error": str(exc)}
        return {"stored": [run.name for run in found.stored], "next": found.next_step}

    def selects(self, deployment: ModelDeployment) -> tuple[bool, str]:
        return selects(deployment.spec.selector, self.labels, self.facts)


def describe_artifacts(built: BuildResult) -> list[dict[str, Any]]:
    """The artifacts of a build (target, socModel, bucket, precision, digests, accuracy), as status shows them."""
    return [
        {"target": a.target, "socModel": a.soc_model, "bucket": a.bucket, "precision": a.precision.value,
         "sha256": {f.path: f.sha256 for f in a.files}, "accuracy": a.accuracy.as_dict() if a.accuracy else None,
         "npuCoverage": a.npu_coverage}
        for a in built.artifacts
    ]


def _step_name(event: Any) -> str:
    where = "/".join(str(part) for part in (event.target, event.bucket) if part)
    return f"{event.step} {where}".strip()
