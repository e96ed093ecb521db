"""Loaded models shared between deployments: deployments whose artifacts and session options are the
same (the same load key) get one set of sessions, each behind its own names and batcher, and the
sessions close when the last of them is unloaded. Text-generation models are not shared: a generation
queue owns its model's slots."""

from __future__ import annotations

import threading

from npuctl.runtime.devices import HostFacts
from npuctl.runtime.footprint import measured_load
from npuctl.runtime.loading import LoadedModel
from npuctl.runtime.placement import Artifacts
from npuctl.schema import ModelDeployment, Task
from npuctl.schema.cost import LoadCost
from npuctl.serve.models import ServedModel, serve_loaded


class SharedModels:
    """Loaded models by share key, with what their load cost and how many served models hold each. Thread-safe."""

    def __init__(self, host: HostFacts) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._models: dict[str, tuple[LoadedModel, LoadCost, int]] = {}

    def load(self, deployment: ModelDeployment, artifacts: Artifacts, key: str) -> ServedModel:
        """A served model for `deployment` on the sessions loaded under `key`, opening them if none are.
        Raises NotServable (from the runtime) when the rules forbid every place."""
        if deployment.spec.model.task is Task.TEXT_GENERATION:
            generator, measured = measured_load(deployment, artifacts, self.host)
            return serve_loaded(deployment, generator, cost=measured)
        taken = self._take(key)
        if taken is None:
            opened, measured = measured_load(deployment, artifacts, self.host)
            with self._lock:
                if key in self._models:  # opened twice at once: keep the first
                    model, cost, count = self._models[key]
                    self._models[key] = (model, cost, count + 1)
                else:
                    model, cost = opened, measured
                    self._models[key] = (model, cost, 1)
            if model is not opened:
                opened.close()
        else:
            model, cost = taken
        return serve_loaded(deployment, model, release=lambda: self._release(key), cost=cost)

    @property
    def open(self) -> int:
        """How many loaded models are open (each with its own sessions)."""
        with self._lock:
            return len(self._models)

    def _take(self, key: str) -> tuple[LoadedModel, LoadCost] | None:
        with self._lock:
            found = self._models.get(key)
            if found is None:
                return None
            model, cost, count = found
            self._models[key] = (model, cost, count + 1)
            return model, cost

    def _release(self, key: str) -> None:
        with self._lock:
            model, cost, count = self._models[key]
            if count > 1:
                self._models[key] = (model, cost, count - 1)
                return
            del self._models[key]
        model.close()
