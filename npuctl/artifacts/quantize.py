"""QNN-aware preprocessing and QDQ quantization (onnxruntime.quantization's QNN tools)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from npuctl.artifacts import progress
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.inputs import Feed
from npuctl.schema.models import Precision

QUANT_TYPES = {Precision.W8A8: ("QUInt8", "QUInt8"), Precision.W8A16: ("QUInt16", "QUInt8")}
"""precision -> (activation type, weight type) names in onnxruntime.quantization.QuantType."""
PER_CHANNEL = True


def preprocess(model: Path, out: Path) -> None:
    """Fuse Erf chains into Gelu and ReduceL2 chains into LpNormalization, which the HTP runs as single ops."""
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    if not qnn_preprocess_model(str(model), str(out)):
        shutil.copyfile(model, out)


def quantize(model: Path, out: Path, precision: Precision, calibration: Sequence[Feed]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType
    from onnxruntime.quantization import quantize as ort_quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    if precision not in QUANT_TYPES:
        raise BuildError("quantize", f"{precision.value} is not a quantized precision")
    if not calibration:
        raise BuildError("quantize", "no calibration inputs")
    activations, weights = QUANT_TYPES[precision]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds: Iterator[Feed] = iter(calibration)
            self._read = 0

        def get_next(self) -> Feed | None:
            feed = next(self._feeds, None)
            if feed is not None:
                self._read += 1
                progress.report(self._read, len(calibration), "calibration samples", "calibrating")
            return feed

    # Per-channel weights: with one scale per tensor, MiniLM's w8a16 cosine to fp32 was 0.980-0.992;
    # per output channel it is 0.998-0.999 (HTP runs both).
    with _quiet_root_logger():
        config = get_qnn_qdq_config(str(model), Reader(), activation_type=QuantType[activations],
                                    weight_type=QuantType[weights], per_channel=PER_CHANNEL)
    with _quiet_root_logger():
        ort_quantize(str(model), str(out), config)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime.quantization warns on the root logger about what this step does on purpose (the opset
    # upgrade for 16-bit types, no per-channel axis on LayerNorm weights): noise in users' consoles.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
