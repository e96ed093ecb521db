"""Deployments as the server holds them: public names, APIs, status, and a batcher in front of the
loaded model. A model that cannot run is held too, as `Unavailable`, so readiness and status can
say why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from npuctl.runtime.devices import HostFacts, detect_host
from npuctl.runtime.embeddings import Embedding, EmbeddingModel
from npuctl.runtime.footprint import measured_load, return_free_memory
from npuctl.runtime.generation import GenerationModel, TextGenerator
from npuctl.runtime.loading import LoadedModel, max_input_tokens
from npuctl.runtime.placement import Artifacts, NotServable, Where
from npuctl.runtime.scoring import Logits, ScoringModel
from npuctl.runtime.seq2seq import Seq2SeqModel
from npuctl.runtime.tensors import TensorModel
from npuctl.runtime.text import Tokens
from npuctl.schema.cost import LoadCost
from npuctl.schema.models import Api, ModelDeployment
from npuctl.schema.placement import CpuException
from npuctl.schema.power import PowerInForce
from npuctl.serve.batching import Batcher, BatchObserver
from npuctl.serve.generation.queue import GenerationObserver, GenerationQueue

In = TypeVar("In")
Out = TypeVar("Out")



class Observers(Protocol):
    """Where a model reports its batches and generations: the server's metrics (npuctl.serve.metrics.ServeMetrics),
    named here so that the models do not import the metrics that read them."""

    def batch_observer(self, model: str) -> BatchObserver: ...

    def generation_observer(self, model: str) -> GenerationObserver: ...

Tensors = Mapping[str, npt.NDArray[np.generic]]

SERVING = "Serving"


@dataclass(frozen=True)
class ModelStatus:
    ready: bool
    reason: str
    """`Serving` when ready; else a CamelCase reason (`NoNPU`, `SimulatorNotAllowed`, `Loading`, ...)."""
    message: str
    where: Where | None = None
    """npu, npu-simulator or cpu: where the sessions run."""
    provider: str | None = None
    """The execution provider the sessions really got."""
    npu_coverage: float | None = None
    """Share of graph nodes on the QNN EP."""
    stages: tuple[StageStatus, ...] = ()
    """A text-generation model's graphs (a decoder-pipeline pack's stages) and where each runs."""
    power: PowerInForce | None = None
    """The power policy's settings the sessions got."""
    cost: LoadCost | None = None
    """What the loaded model costs this host, measured when it loaded."""
    cpu_work: tuple[CpuException, ...] = ()
    """On the NPU, a decoder-pipeline pack's work that stays on the CPU per token, each with its reason."""

    @property
    def on_npu(self) -> bool:
        return self.where is not None and self.where.on_npu

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"power": self.power.model_dump(mode="json") if self.power else None,
                               "cost": self.cost.model_dump(mode="json") if self.cost else None,
                               "cpu_work": [w.model_dump(mode="json") for w in self.cpu_work]}


@dataclass(frozen=True)
class StageStatus:
    name: str
    where: str
    """npu, npu-simulator or cpu: the EP its session gets (a pack's context/iterator graphs are QNN EPContext
    nodes with GroupQueryAttention and the KV cache on the CPU beside them)."""
    nodes: int


class ServedModel:
    """Base of what the registry holds. Requests lease it; once replaced or removed it is retired
    and closes when its last lease ends, so a swap never fails a request in flight."""

    batcher: Batcher[Any, Any] | None = None

    def __init__(self, deployment: ModelDeployment, status: ModelStatus) -> None:
        serve = deployment.spec.serve
        self.deployment = deployment.name
        self.name = deployment.public_name
        self.aliases = tuple(a for a in serve.aliases if a != self.name)
        self.apis = frozenset(serve.apis)
        self.timeout_seconds = serve.timeout_seconds
        self.generation = deployment.generation()
        self.status = status
        self.since = time.time()
        """When the server took it (Unix time)."""
        self.closed = threading.Event()
        """Set once the model's sessions are released."""
        self._lock = threading.Lock()
        self._leases = 0
        self._retired = False
        self.last_used = time.monotonic()
        """When its last request ended, or it was taken (monotonic): how long it has been idle."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def speaks(self, api: Api) -> bool:
        return api in self.apis

    @property
    def waiting(self) -> int | None:
        """Requests queued and not yet running (None when the model has no queue)."""
        return self.batcher.waiting if self.batcher is not None else None

    def attach(self, metrics: Observers) -> None:
        """Report to the server's metrics (the registry calls this when it takes the model)."""
        if self.batcher is not None:
            self.batcher.observer = metrics.batch_observer(self.name)

    def acquire(self) -> None:
        with self._lock:
            self._leases += 1

    @property
    def leases(self) -> int:
        """Requests holding it now (answering or queued)."""
        return self._leases

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            self.last_used = time.monotonic()
            last = self._retired and self._leases == 0
        if last:
            self._close()

    def retire(self) -> None:
        """No new leases will come (the registry dropped it): close once the current ones end."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            idle = self._leases == 0
        if idle:
            self._close()

    def reconfigured(self, deployment: ModelDeployment) -> ServedModel:
        """The same loaded model under `deployment`'s serve settings (names, batching, limits), for a
        change that needs no new sessions. Put the result in the registry; this one then retires
        without closing the sessions it handed over."""
        return Unavailable(deployment, self.status)

    def _close(self) -> None:
        self.closed.set()


class Unavailable(ServedModel):
    """A declared deployment that does not serve: building, loading, or not servable under its rules."""


Release = Callable[[], None]
"""Gives a loaded model's sessions back: closes them, or, for sessions several deployments share, drops one reference."""


class _Running(ServedModel):
    def __init__(self, deployment: ModelDeployment, model: LoadedModel, batcher: Batcher[Any, Any],
                 release: Release | None, cost: LoadCost | None) -> None:
        info = model.info
        status = ModelStatus(True, SERVING, info.note, info.where, info.provider, info.npu_coverage,
                             power=info.power, cost=cost)
        super().__init__(deployment, status)
        self.batcher = batcher
        self._model = model
        self._release = release or model.close
        self._handed_over = False

    def _close(self) -> None:
        # The batcher's queue is empty (no leases left); its worker exits, then the sessions go.
        assert self.batcher is not None
        self.batcher.close()
        threading.Thread(target=self._release_sessions, name=f"close-{self.name}", daemon=True).start()

    def _release_sessions(self) -> None:
        assert self.batcher is not None
        self.batcher.join()
        if not self._handed_over:
            self._release()
            return_free_memory()  # glibc keeps the sessions' freed memory: ~half of what they took (bench/load_cost.py)
        self.closed.set()


def _row_batcher(deployment: ModelDeployment, run: Callable[[list[In]], Sequence[Out]]) -> Batcher[In, Out]:
    """Rows merged into batches as spec.serve says."""
    serve = deployment.spec.serve
    return Batcher(deployment.public_name, run, max_batch=serve.max_batch, window_seconds=serve.batch_window_ms / 1000,
                   queue_limit=serve.queue_limit)


class EmbeddingService(_Running):
    batcher: Batcher[list[int], Embedding]

    def __init__(self, deployment: ModelDeployment, model: EmbeddingModel, release: Release | None = None,
                 cost: LoadCost | None = None) -> None:
        super().__init__(deployment, model, _row_batcher(deployment, model.embed), release, cost)
        self.model = model
        self.truncate = deployment.spec.serve.truncate

    def reconfigured(self, deployment: ModelDeployment) -> ServedModel:
        self._handed_over = True
        return EmbeddingService(deployment, self.model.with_max_tokens(max_input_tokens(deployment, self.model.buckets)),
                                self._release, self.status.cost)


class ScoringService(_Running):
    """A reranker or classifier: token rows (query-document pairs, or texts) batched like embeddings."""

    batcher: Batcher[Tokens, Logits]

    def __init__(self, deployment: ModelDeployment, model: ScoringModel, release: Release | None = None,
                 cost: LoadCost | None = None) -> None:
        super().__init__(deployment, model, _row_batcher(deployment, model.logits), release, cost)
        self.model = model
        self.task = deployment.spec.model.task
        self.truncate = deployment.spec.serve.truncate

    def reconfigured(self, deployment: ModelDeployment) -> ServedModel:
        self._handed_over = True
        return ScoringService(deployment, self.model.with_max_tokens(max_input_tokens(deployment, self.model.buckets)),
                              self._release, self.status.cost)


class TensorService(_Running):
    batcher: Batcher[Tensors, dict[str, npt.NDArray[np.generic]]]

    def __init__(self, deployment: ModelDeployment, model: TensorModel, release: Release | None = None,
                 cost: LoadCost | None = None) -> None:
        serve = deployment.spec.serve
        # Tensor requests are not concatenated (shapes differ); they share one worker and one queue.
        batcher: Batcher[Tensors, dict[str, npt.NDArray[np.generic]]] = Batcher(
            deployment.public_name, lambda rows: [model.run(feeds) for feeds in rows],
            max_batch=serve.max_batch, window_seconds=0.0, queue_limit=serve.queue_limit,
        )
        super().__init__(deployment, model, batcher, release, cost)
        self.model = model

    def reconfigured(self, deployment: ModelDeployment) -> ServedModel:
        self._handed_over = True
        return TensorService(deployment, self.model, self._release, self.status.cost)


class GenerationService(ServedModel):
    """A text-generation model behind its generation queue."""

    def __init__(self, deployment: ModelDeployment, model: TextGenerator, cost: LoadCost | None = None) -> None:
        info = model.info
        pack_stages = model.pack.stages if isinstance(model, GenerationModel) else ()
        stages = tuple(StageStatus(s.name, info.where.value if s.on_qnn else Where.CPU.value, s.nodes)
                       for s in pack_stages)
        super().__init__(deployment, ModelStatus(True, SERVING, info.note, info.where, info.provider,
                                                 info.npu_coverage, stages, info.power, cost, info.cpu_work))
        serve = deployment.spec.serve
        self.model = model
        self.queue = GenerationQueue(deployment.public_name, model, slots=model.slots, queue_limit=serve.queue_limit)
        self.max_input_tokens = min(serve.max_input_tokens or model.max_prompt_tokens, model.max_prompt_tokens)
        self._handed_over = False

    @property
    def waiting(self) -> int | None:
        return self.queue.waiting

    def attach(self, metrics: Observers) -> None:
        self.queue.observer = metrics.generation_observer(self.name)

    def reconfigured(self, deployment: ModelDeployment) -> ServedModel:
        self._handed_over = True
        return GenerationService(deployment, self.model, self.status.cost)

    def _close(self) -> None:
        self.queue.close()
        threading.Thread(target=self._release_model, name=f"close-{self.name}", daemon=True).start()

    def _release_model(self) -> None:
        self.queue.join()
        if not self._handed_over:
            self.model.close()
            return_free_memory()
        self.closed.set()


def serve_loaded(deployment: ModelDeployment, model: LoadedModel, release: Release | None = None,
                 cost: LoadCost | None = None) -> ServedModel:
    """Put a batcher (a generation queue, for text generation) in front of a loaded model. `release` replaces
    closing the model when the served model closes (for sessions that other deployments share); `cost` is what
    its load measured (npuctl.runtime.footprint.measured_load)."""
    if isinstance(model, EmbeddingModel):
        return EmbeddingService(deployment, model, release, cost)
    if isinstance(model, GenerationModel | Seq2SeqModel):
        return GenerationService(deployment, model, cost)
    if isinstance(model, ScoringModel):
        return ScoringService(deployment, model, release, cost)
    return TensorService(deployment, model, release, cost)


def load_served(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts | None = None) -> ServedModel:
    """Load a deployment for serving, measuring what the load costs; one that can't run under its rules comes back
    Unavailable, with the reason."""
    try:
        model, cost = measured_load(deployment, artifacts, host or detect_host())
        return serve_loaded(deployment, model, cost=cost)
    except NotServable as exc:
        return Unavailable(deployment, ModelStatus(False, exc.reason.value, exc.message))
