"""Verify an encoder-decoder's NPU encoder: greedy answers to held-out prompts with the compiled encoder against
those of the fp32 encoder, both through the same fp32 decoder. What a user would notice is a different answer, so the
measure is the share of prompts whose greedy tokens are identical."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npuctl.artifacts.encoder.verify import Measurement
from npuctl.artifacts.inputs import Feed
from npuctl.runtime import power, qnn
from npuctl.runtime.generation import Sampling
from npuctl.runtime.seq2seq import Decoder, chooser, generation_ids
from npuctl.runtime.sessions import OpenedSession, open_cpu
from npuctl.schema.enums import PowerPolicy
from npuctl.schema.models import Metric, Runtime


def measure(context_model: Path, reference_model: Path, model_dir: Path, decoder_model: Path, feeds: Sequence[Feed], *,
            soc_model: int, fp16: bool, max_tokens: int, decoder_context: Path | None) -> Measurement:
    """Greedy tokens (up to `max_tokens`, or the end token) of the compiled encoder (with the compiled decoder when
    there is one) against the fp32 encoder and decoder on the CPU. `value` and `agreement`: the share of feeds
    answered identically; `mean`: the share of answer positions that agree."""
    import onnxruntime as ort

    options = qnn.session_options(soc_model, fp16=fp16, config={qnn.RECORD_ASSIGNMENT: "1"})
    options.log_severity_level = 3
    npu = ort.InferenceSession(str(context_model), options)
    reference = ort.InferenceSession(str(reference_model), power.session_options(), providers=["CPUExecutionProvider"])
    start, ends = generation_ids(model_dir)
    decoder = Decoder(open_cpu(decoder_model), start)
    npu_decoder = decoder
    if decoder_context is not None:
        extra, applied = power.qnn_session(Runtime(), power.Choice(PowerPolicy.BURST, None))
        session = ort.InferenceSession(str(decoder_context), qnn.session_options(
            soc_model, fp16=True, provider_options=extra, config={qnn.RECORD_ASSIGNMENT: "1"}))
        npu_decoder = Decoder(OpenedSession(session, qnn.EP_NAME, qnn.npu_coverage(session), applied), start)
    identical, positions = [], []
    for feed in feeds:
        got = _greedy(npu_decoder, npu.run(None, feed), feed, ends, max_tokens)
        want = _greedy(decoder, reference.run(None, feed), feed, ends, max_tokens)
        identical.append(got == want)
        longest = max(len(got), len(want))
        positions.append(sum(a == b for a, b in zip(got, want)) / longest if longest else 1.0)
    share = float(np.mean(identical))
    return Measurement(Metric.AGREEMENT, share, float(np.mean(positions)), len(feeds), qnn.npu_coverage(npu), share)


def _greedy(decoder: Decoder, cross: list[np.ndarray], feed: Feed, ends: frozenset[int], limit: int) -> list[int]:
    mask = np.asarray(feed["attention_mask"], np.int64)
    tokens = []
    for token in decoder.tokens([np.asarray(c, np.float32) for c in cross], mask, chooser(Sampling(limit, 0.0), ends),
                                limit):
        tokens.append(token)
        if token in ends:
            break
    return tokens
