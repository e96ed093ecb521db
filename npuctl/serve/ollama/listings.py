"""How served models look through Ollama's listings: `/api/tags` (available: loaded, or standing by to load on
its first request), `/api/ps` (loaded, with when it unloads if idle), `/api/show` (details, model_info,
capabilities).

Sizes come from the cost measured when the model loaded (npuctl.schema.cost.LoadCost): `/api/tags`' `size` is
its artifacts' bytes (Ollama's: the model's files); `/api/ps`' `size` is the memory it may hold (host memory
and full KV cache) and `size_vram` the part its NPU sessions hold (its context binaries), 0 when it runs on the
CPU, so that Ollama's PROCESSOR column reads NPU for GPU."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from npuctl.schema.models import Api
from npuctl.serve.models import EmbeddingService, GenerationService, ServedModel
from npuctl.serve.standby import Standby

OLLAMA_VERSION = "0.12.0"
"""The Ollama API version whose shapes these are; clients check it before using newer fields."""
NEVER = "9999-12-31T23:59:59Z"
"""`expires_at` of a model that stays loaded while declared (`residency: always`)."""
_LAST_SECOND = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""An idle time past this (idleSeconds is unbounded) reads as NEVER, the last time the format can write."""
FORMAT = "onnx"


def model_list(models: Sequence[ServedModel]) -> list[dict[str, Any]]:
    """Loaded models and those standing by (built, loaded on their first request): both answer."""
    available = [*_served(models), *(m for m in models if isinstance(m, Standby) and m.speaks(Api.OLLAMA))]
    return [_entry(model, name) | {"size": model.status.cost.artifact_bytes if model.status.cost else 0}
            for model in available for name in model.names]


def running_list(models: Sequence[ServedModel], idle_for: Callable[[str], float | None]) -> list[dict[str, Any]]:
    """Loaded models; `expires_at` is when one unloads if no request comes (`idle_for`: its idle time in force)."""
    return [_entry(model, name) | _memory(model)
            | {"expires_at": _expires(model, idle_for(model.deployment)), "context_length": _context_length(model)}
            for model in _served(models) for name in model.names]


def _expires(model: ServedModel, idle_seconds: float | None) -> str:
    if idle_seconds is None:
        return NEVER
    # A model answering requests is idle from their end on: at the earliest, a full idle time from now.
    idle_from = time.monotonic() if model.leases else model.last_used
    deadline = time.time() + max(0.0, idle_from + idle_seconds - time.monotonic())
    return _time(deadline) if deadline < _LAST_SECOND else NEVER


def _memory(model: ServedModel) -> dict[str, int]:
    cost = model.status.cost
    if cost is None:
        return {"size": 0, "size_vram": 0}
    on_npu = cost.context_binary_bytes if model.status.on_npu else 0
    return {"size": cost.memory_bytes, "size_vram": min(on_npu, cost.memory_bytes)}


def show(model: ServedModel) -> dict[str, Any]:
    """`/api/show`'s answer: what npuctl knows of the model, in Ollama's fields."""
    architecture = _architecture(model)
    info: dict[str, Any] = {"general.architecture": architecture, "general.name": model.name}
    length = _context_length(model)
    if length is not None:
        info[f"{architecture}.context_length"] = length
    if isinstance(model, EmbeddingService):
        info[f"{architecture}.embedding_length"] = model.model.dimensions
    return {
        "modelfile": "",
        "parameters": "",
        # The model's own chat template (Jinja, where Ollama's are Go templates): what its prompts are made with.
        "template": (model.model.tokenizer.template or "") if isinstance(model, GenerationService) else "",
        "details": _details(model),
        "model_info": info,
        "capabilities": _capabilities(model),
        "modified_at": _time(model.since),
    }


def _served(models: Sequence[ServedModel]) -> list[ServedModel]:
    return [m for m in models if m.speaks(Api.OLLAMA) and m.status.ready
            and isinstance(m, EmbeddingService | GenerationService)]


def _entry(model: ServedModel, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": _time(model.since),
        "digest": hashlib.sha256(f"{model.deployment}/{model.generation}".encode()).hexdigest(),
        "details": _details(model),
    }


def _details(model: ServedModel) -> dict[str, Any]:
    family = _architecture(model)
    return {"parent_model": "", "format": FORMAT, "family": family, "families": [family], "parameter_size": "",
            "quantization_level": ""}


def _capabilities(model: ServedModel) -> list[str]:
    if isinstance(model, GenerationService):
        return ["completion", "tools"] if model.model.guided else ["completion"]
    return ["embedding"]


def _architecture(model: ServedModel) -> str:
    if isinstance(model, GenerationService):
        return model.model.model_type
    return FORMAT  # an ONNX graph; npuctl does not tell encoder architectures apart


def _context_length(model: ServedModel) -> int | None:
    if isinstance(model, GenerationService):
        return model.model.context_length
    if isinstance(model, EmbeddingService):
        return model.model.encoder.max_tokens
    return None


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
