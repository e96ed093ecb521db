"""The verify step's measurement for each task: embeddings and tensors (verify), rerankers and classifiers
(verify_scores), encoder-decoders (verify_seq2seq)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from npuctl.artifacts.encoder import verify, verify_scores
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.inputs import Feed
from npuctl.artifacts.seq2seq import verify as verify_seq2seq
from npuctl.runtime import pooling, scoring
from npuctl.runtime.seq2seq import DECODER_FILE
from npuctl.schema.models import DeploymentSpec, Task


def measure(spec: DeploymentSpec, context_model: Path, reference_model: Path, feeds: Sequence[Feed],
            model_dir: Path | None, *, soc_model: int, fp16: bool, pool: pooling.PoolingConfig | None,
            head: scoring.Head | None, decoder: Path | None = None) -> verify.Measurement:
    """The compiled model against its fp32 reference on `feeds`, as `spec.accuracy` (or the task's default) says.
    `decoder`: an encoder-decoder's compiled one-step decoder, verified with its encoder (else the fp32 one runs)."""
    metric, _ = verify.bar(spec)
    task = spec.model.task
    if task is Task.TEXT2TEXT_GENERATION:
        if model_dir is None:
            raise BuildError("verify", "an encoder-decoder needs its exported decoder to be verified")
        return verify_seq2seq.measure(context_model, reference_model, model_dir, model_dir / DECODER_FILE, feeds,
                                      soc_model=soc_model, fp16=fp16, max_tokens=spec.shapes.max_output_tokens,
                                      decoder_context=decoder)
    if task in (Task.RERANK, Task.CLASSIFICATION):
        return verify_scores.measure(context_model, reference_model, feeds, soc_model=soc_model, fp16=fp16,
                                     metric=metric, head=head)
    return verify.measure(context_model, reference_model, feeds, soc_model=soc_model, fp16=fp16, metric=metric,
                          pool=pool)
