"""Token states to sentence embeddings: pooling modes, the sentence-transformers config that picks one, cosine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from npuctl.schema.models import Pooling

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class PoolingConfig:
    mode: Pooling
    normalize: bool


def pooling_config(model_dir: Path | None, mode: Pooling = Pooling.AUTO, normalize: bool | None = None) -> PoolingConfig:
    """Resolve `auto` pooling and unset normalization from a sentence-transformers folder
    (`modules.json`, `<pooling module>/config.json`); without one: mean pooling, normalized."""
    modules = _modules(model_dir)
    if mode is Pooling.AUTO:
        mode = _st_pooling_mode(model_dir, modules) or Pooling.MEAN
    if normalize is None:
        normalize = not modules or any(m.get("type", "").endswith(".Normalize") for m in modules)
    return PoolingConfig(mode, normalize)


def pool(hidden: FloatArray, attention_mask: npt.NDArray[np.integer], config: PoolingConfig) -> FloatArray:
    """[batch, seq, dim] token states -> [batch, dim] embeddings. 2-D inputs are already pooled."""
    hidden = hidden.astype(np.float32, copy=False)
    if hidden.ndim == 2:
        pooled = hidden
    else:
        mask = attention_mask[..., None].astype(np.float32)
        if config.mode is Pooling.CLS:
            pooled = hidden[:, 0]
        elif config.mode is Pooling.MAX:
            pooled = np.where(mask > 0, hidden, -np.inf).max(axis=1)
        elif config.mode is Pooling.LAST:
            # Right padding: the last real token sits at (number of real tokens - 1).
            last = np.maximum(attention_mask.sum(axis=1) - 1, 0)
            pooled = hidden[np.arange(hidden.shape[0]), last]
        else:
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return normalize(pooled) if config.normalize else pooled


def normalize(vectors: FloatArray) -> FloatArray:
    normalized: FloatArray = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return normalized


def cosine(a: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise cosine similarity of two [n, dim] arrays."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    similarity: FloatArray = (normalize(a) * normalize(b)).sum(axis=-1)
    return similarity


def _modules(model_dir: Path | None) -> list[dict[str, str]]:
    file = model_dir / "modules.json" if model_dir else None
    if file is None or not file.is_file():
        return []
    loaded = json.loads(file.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, list) else []


def _st_pooling_mode(model_dir: Path | None, modules: list[dict[str, str]]) -> Pooling | None:
    module = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    if model_dir is None or module is None:
        return None
    file = model_dir / module.get("path", "") / "config.json"
    if not file.is_file():
        return None
    config = json.loads(file.read_text(encoding="utf-8"))
    for key, mode in (("pooling_mode_cls_token", Pooling.CLS), ("pooling_mode_max_tokens", Pooling.MAX),
                      ("pooling_mode_lasttoken", Pooling.LAST), ("pooling_mode_mean_tokens", Pooling.MEAN)):
        if config.get(key):
            return mode
    return None
