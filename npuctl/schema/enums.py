"""The manifest's enumerations: what a field may name (models, precisions, placements, APIs)."""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    AUTO = "auto"
    ONNX = "onnx"
    TRANSFORMERS = "transformers"
    EP_CONTEXT = "ep-context"
    GENAI = "genai"
    GGUF = "gguf"


class Task(StrEnum):
    EMBEDDINGS = "embeddings"
    TEXT_GENERATION = "text-generation"
    TENSOR = "tensor"
    RERANK = "rerank"
    CLASSIFICATION = "classification"
    TEXT2TEXT_GENERATION = "text2text-generation"


class Pooling(StrEnum):
    AUTO = "auto"
    MEAN = "mean"
    CLS = "cls"
    LAST = "last"
    MAX = "max"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    W8A8 = "w8a8"
    W8A16 = "w8a16"
    W4A16 = "w4a16"
    INT4 = "int4"


class Metric(StrEnum):
    COSINE = "cosine"
    MAX_ABS_ERROR = "max_abs_error"
    AGREEMENT = "agreement"


class Strategy(StrEnum):
    AUTO = "auto"
    LOCAL = "local"
    AIHUB = "aihub"
    PREBUILT = "prebuilt"


class Device(StrEnum):
    AUTO = "auto"
    NPU = "npu"
    CPU = "cpu"


class Fallback(StrEnum):
    CPU = "cpu"
    NONE = "none"


class Residency(StrEnum):
    ALWAYS = "always"
    """Loaded while declared, never evicted (pinned)."""
    ON_DEMAND = "onDemand"
    """Built and verified ahead of time, loaded on the first request, unloaded when idle or to make room."""


class PerformanceMode(StrEnum):
    DEFAULT = "default"
    BURST = "burst"
    BALANCED = "balanced"
    HIGH_PERFORMANCE = "high_performance"
    SUSTAINED_HIGH_PERFORMANCE = "sustained_high_performance"
    POWER_SAVER = "power_saver"
    LOW_POWER_SAVER = "low_power_saver"
    HIGH_POWER_SAVER = "high_power_saver"
    LOW_BALANCED = "low_balanced"
    EXTREME_POWER_SAVER = "extreme_power_saver"


class PowerPolicy(StrEnum):
    """What a deployment may burn, mapped onto every path that runs it (npuctl.runtime.power)."""

    BURST = "burst"
    BALANCED = "balanced"
    EFFICIENT = "efficient"


class PowerSource(StrEnum):
    """Where the PC draws power from, as the platform reports it (`unknown` where it reports nothing)."""

    MAINS = "mains"
    BATTERY = "battery"
    UNKNOWN = "unknown"


class Api(StrEnum):
    OPENAI = "openai"
    OIP = "oip"
    OLLAMA = "ollama"
