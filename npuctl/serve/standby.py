"""A deployment that is built but not loaded (`residency: onDemand`): it holds its names in the registry, and a
request to it asks whoever owns the models (the agent's reconciler) to load it, then waits, within the model's
queue limit and timeout, and is answered by the loaded model. The owner decides; this only asks and waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from npuctl.schema import ModelDeployment
from npuctl.serve.batching import QueueFull
from npuctl.serve.http.errors import ApiError
from npuctl.serve.models import ModelStatus, ServedModel

STANDBY = "Standby"

Admit = Callable[[], Awaitable[None]]
"""Ask for the deployment to be loaded; returns once it serves. Raises ApiError when it cannot be (503 with
Retry-After when the budget cannot fit it)."""


class NotResident(Exception):
    """The request's model stands by: admit it (`Standby.admit`), then answer the request again."""

    def __init__(self, model: Standby) -> None:
        super().__init__(model.name)
        self.model = model


class Standby(ServedModel):
    def __init__(self, deployment: ModelDeployment, admit: Admit, message: str) -> None:
        super().__init__(deployment, ModelStatus(True, STANDBY, message))
        self.queue_limit = deployment.spec.serve.queue_limit
        self._admit = admit
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def admit(self) -> None:
        """Wait until the model is loaded: 429 past its queue limit, 504 past its timeout."""
        if self._waiting >= self.queue_limit:
            raise QueueFull(self.queue_limit, retry_after=1)
        self._waiting += 1
        try:
            await asyncio.wait_for(self._admit(), timeout=self.timeout_seconds)
        except TimeoutError:
            raise ApiError(504, f"the model {self.name!r} did not load within its timeout of "
                                f"{self.timeout_seconds:g} s (spec.serve.timeoutSeconds)") from None
        finally:
            self._waiting -= 1
