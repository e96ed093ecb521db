"""Triton's extensions that map onto what npuctl knows: a model's configuration (its signature, batching and
version), the repository index (every deployment over /v2 and its state), and inference statistics per model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from npuctl.runtime.tensors import TensorSpec
from npuctl.serve.models import ServedModel, TensorService

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]
"""What `GET /v2` advertises: each is served (repository load/unload is not: the manifests decide)."""
PLATFORM = "onnxruntime_onnx"
_CONFIG_TYPES = {"BYTES": "TYPE_STRING"}


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _ModelStats:
    last_inference: int = 0
    """Milliseconds since the epoch."""
    inference_count: int = 0
    """Rows inferred (the first dimension of each request's first input)."""
    execution_count: int = 0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    """Time waiting for the model's batcher: queueing and running (npuctl does not split the two)."""
    compute_output: _Duration = field(default_factory=_Duration)


@dataclass(frozen=True)
class Timing:
    """Where one successful request's time went, in seconds."""

    rows: int
    total: float
    decode: float
    infer: float
    encode: float


class InferenceStats:
    """Counters of /v2 inference by model name and version, since the server started."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], _ModelStats] = {}

    def succeeded(self, model: ServedModel, timing: Timing) -> None:
        stats = self._of(model)
        stats.last_inference = int(time.time() * 1000)
        stats.inference_count += timing.rows
        stats.execution_count += 1
        stats.success.add(timing.total)
        stats.compute_input.add(timing.decode)
        stats.compute_infer.add(timing.infer)
        stats.compute_output.add(timing.encode)

    def failed(self, model: ServedModel, seconds: float) -> None:
        self._of(model).fail.add(seconds)

    def report(self, models: Sequence[ServedModel]) -> dict[str, Any]:
        """Triton's statistics answer for `models` (those never asked report zeros)."""
        entries = []
        for model in models:
            stats = self._models.get((model.name, model.generation), _ModelStats())
            entries.append({
                "name": model.name,
                "version": model.generation,
                "last_inference": stats.last_inference,
                "inference_count": stats.inference_count,
                "execution_count": stats.execution_count,
                "inference_stats": {
                    "success": stats.success.as_dict(), "fail": stats.fail.as_dict(),
                    "queue": _Duration().as_dict(),  # part of compute_infer
                    "compute_input": stats.compute_input.as_dict(), "compute_infer": stats.compute_infer.as_dict(),
                    "compute_output": stats.compute_output.as_dict(),
                    "cache_hit": _Duration().as_dict(), "cache_miss": _Duration().as_dict(),
                },
                "batch_stats": [],
            })
        return {"model_stats": entries}

    def _of(self, model: ServedModel) -> _ModelStats:
        return self._models.setdefault((model.name, model.generation), _ModelStats())


def config(model: ServedModel, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """The model configuration, in the fields of Triton's model config. Shapes are whole (max_batch_size 0:
    no implicit batch dimension), -1 where the model takes any size."""
    answer: dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [model.generation]}},
        "max_batch_size": 0,
        "input": [_config_tensor(spec) for spec in inputs],
        "output": [_config_tensor(spec) for spec in outputs],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU" if model.status.where == "cpu" else "KIND_MODEL",
                            "count": 1}],
    }
    if model.batcher is not None and not isinstance(model, TensorService):
        # Requests to an embedding model are merged into one inference: Triton's dynamic batching.
        answer["dynamic_batching"] = {"max_queue_delay_microseconds": int(model.batcher.window_seconds * 1e6)}
    return answer


def index(models: Sequence[ServedModel], ready_only: bool, message: Callable[[str], str]) -> list[dict[str, str]]:
    """Triton's repository index; `message` is what the asker may read of a status message (the redaction rule)."""
    return [{"name": m.name, "version": m.generation, "state": "READY" if m.status.ready else "UNAVAILABLE",
             "reason": "" if m.status.ready else f"{m.status.reason}: {message(m.status.message)}"}
            for m in models if m.status.ready or not ready_only]


def _config_tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": _CONFIG_TYPES.get(spec.datatype, f"TYPE_{spec.datatype}"),
            "dims": list(spec.shape)}
