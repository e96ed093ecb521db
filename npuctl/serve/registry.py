"""The set of served models, changed at runtime by whoever owns the desired state (the agent, or
`npuctl serve`). A swap is one dictionary replacement: requests that already hold the old model
finish on it, new ones get the new model, and the old one closes when its last request ends."""

from __future__ import annotations

import threading
from collections.abc import Callable

from npuctl.serve.http.errors import ApiError
from npuctl.serve.metrics import ServeMetrics
from npuctl.serve.models import ServedModel


class UnknownModel(KeyError):
    """No served model answers to this name."""


class ModelRegistry:
    """Deployments by name, and the public names (and aliases) that route to them. Thread-safe."""

    def __init__(self) -> None:
        self.metrics = ServeMetrics(self.models)
        self._lock = threading.Lock()
        self._by_deployment: dict[str, ServedModel] = {}
        self._by_name: dict[str, ServedModel] = {}
        self._problems: dict[str, tuple[str, str]] = {}
        self.idle_times: Callable[[str, float], bool] | None = None
        """Takes a request's idle time for a deployment (Ollama's keep_alive) and says whether its manifest lets it
        be unloaded (an agent's onDemand deployments); None: nothing is ever unloaded (npuctl serve)."""
        self.idle_for: Callable[[str], float | None] = lambda deployment: None
        """A deployment's idle time in force: its loaded model unloads after that long without requests (None: it
        stays while declared). Ollama's `/api/ps` shows the deadline as `expires_at`."""

    def put(self, model: ServedModel) -> ServedModel | None:
        """Add a model, or atomically replace the one of the same deployment; returns the replaced
        model, which is already retired (it closes after its requests in flight, see `closed`).
        Raises ValueError when a public name or alias belongs to another deployment."""
        with self._lock:
            for name in model.names:
                owner = self._by_name.get(name)
                if owner is not None and owner.deployment != model.deployment:
                    raise ValueError(f"model name {name!r} is already served by deployment {owner.deployment!r}")
            old = self._by_deployment.get(model.deployment)
            self._by_deployment[model.deployment] = model
            self._reindex()
        model.attach(self.metrics)
        if old is not None and old is not model:
            old.retire()
        return old

    def remove(self, deployment: str) -> ServedModel | None:
        """Stop serving a deployment; returns the retired model (None if there was none)."""
        with self._lock:
            old = self._by_deployment.pop(deployment, None)
            self._reindex()
        if old is not None:
            old.retire()
        return old

    def get(self, deployment: str) -> ServedModel | None:
        """By deployment name (metadata.name), not public name."""
        return self._by_deployment.get(deployment)

    def models(self) -> list[ServedModel]:
        with self._lock:
            return list(self._by_deployment.values())

    def acquire(self, name: str) -> ServedModel:
        """The model a public name or alias routes to, leased for one request: call its `release()`
        when the request is done. Raises UnknownModel."""
        with self._lock:
            model = self._by_name.get(name)
            if model is None:
                raise UnknownModel(name)
            model.acquire()
        return model

    def keep_alive(self, model: ServedModel, seconds: float | None) -> None:
        """A request asked for `model` to stay loaded `seconds` after it (Ollama's keep_alive). Only an onDemand
        deployment's manifest lets it go sooner than while declared: asking any other to unload at once is 400."""
        # Not set: Ollama's default, which is the manifest's idle time here (a shorter one asked before ends).
        unloads = self.idle_times is not None and self.idle_times(model.deployment,
                                                                  float("inf") if seconds is None else seconds)
        if seconds == 0 and not unloads:
            raise ApiError(400, "'keep_alive': 0 would unload the model, and its deployment keeps it loaded while "
                                "declared (spec.serve.residency: always); declare it onDemand to let it unload")

    def ready(self) -> bool:
        """Every declared deployment serves on a provider its rules accept, and nothing else is wrong."""
        return all(model.status.ready for model in self.models()) and not self.problems()

    def set_problem(self, subject: str, problem: tuple[str, str] | None) -> None:
        """Make readiness false for a reason that is not one model's, as (reason, message) about `subject`
        (a deployment that cannot be served, the agent's state folder); None clears it."""
        with self._lock:
            if problem is None:
                self._problems.pop(subject, None)
            else:
                self._problems[subject] = problem

    def problems(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            return dict(self._problems)

    def close(self) -> None:
        """Retire everything (server shutdown)."""
        with self._lock:
            models = list(self._by_deployment.values())
            self._by_deployment.clear()
            self._reindex()
        for model in models:
            model.retire()

    def _reindex(self) -> None:
        self._by_name = {name: model for model in self._by_deployment.values() for name in model.names}
