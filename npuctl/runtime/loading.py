"""Load a deployment's artifacts into sessions where its rules allow, or say why it can't run."""

from __future__ import annotations

import json

from npuctl.runtime import power
from npuctl.runtime.devices import HostFacts, detect_host
from npuctl.runtime.embeddings import EmbeddingModel
from npuctl.runtime.generation import GenerationModel, load_generator
from npuctl.runtime.placement import Artifacts, NotServable, Placement, Reason, fall_back, place
from npuctl.runtime.pooling import pooling_config
from npuctl.runtime.scoring import HeadError, ScoringModel, read_head
from npuctl.runtime.seq2seq import DECODER_FILE, Decoder, Encoder, Seq2SeqModel, Seq2SeqTokenizer, generation_ids
from npuctl.runtime.sessions import OpenedSession, RunInfo, open_cpu, open_npu
from npuctl.runtime.tensors import TensorModel
from npuctl.runtime.text import TextEncoder
from npuctl.schema.models import ModelDeployment, Task

LoadedModel = EmbeddingModel | TensorModel | GenerationModel | ScoringModel | Seq2SeqModel
SCORING_TASKS = (Task.RERANK, Task.CLASSIFICATION)


def load_model(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts | None = None) -> LoadedModel:
    """Sessions for every bucket, on the NPU or the allowed fallback. Raises NotServable, never
    quietly lands on the CPU when `fallback: none`."""
    spec = deployment.spec
    host = host or detect_host()
    if spec.model.task is Task.TEXT_GENERATION:
        return load_generator(deployment, artifacts, host)
    placement, sessions = _open(deployment, artifacts, host)
    if spec.model.task is Task.TEXT2TEXT_GENERATION:
        return _seq2seq(deployment, artifacts, placement, sessions)
    info = RunInfo.of(placement.where, list(sessions.values()), placement.note)
    if spec.model.task is Task.TENSOR:
        return TensorModel(next(iter(sessions.values())), info)
    tokenizer = artifacts.tokenizer
    if tokenizer is None or not tokenizer.is_file():
        raise NotServable(Reason.NO_TOKENIZER, f"a {spec.model.task.value} deployment needs a tokenizer.json (have: {tokenizer})")
    buckets = [length for length in sessions if length is not None]
    encoder = TextEncoder(tokenizer, max_input_tokens(deployment, buckets))
    if spec.model.task in SCORING_TASKS:
        try:
            head = read_head(artifacts.model_dir, need_labels=spec.model.task is Task.CLASSIFICATION)
            return ScoringModel(sessions, encoder, head, info)
        except HeadError as exc:
            raise NotServable(Reason.NO_LABELS, str(exc)) from exc
    pooling = pooling_config(artifacts.model_dir, spec.model.pooling, spec.model.normalize)
    return EmbeddingModel(sessions, encoder, pooling, info)


def max_input_tokens(deployment: ModelDeployment, buckets: list[int]) -> int:
    """spec.serve.maxInputTokens (default: the largest declared bucket), never past the largest NPU bucket."""
    longest = deployment.spec.serve.max_input_tokens or max(deployment.spec.shapes.sequence_lengths)
    return min(longest, max(buckets)) if buckets else longest


def _open(
    deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts
) -> tuple[Placement, dict[int | None, OpenedSession]]:
    runtime = deployment.spec.runtime
    placement = place(runtime, host, artifacts)
    choice = power.choose(runtime)
    if placement.on_npu:
        try:
            return placement, {b.sequence_length: open_npu(b.path, b.soc_model, runtime, choice)
                               for b in placement.binaries}
        except NotServable as exc:
            placement = fall_back(runtime, artifacts, exc.reason, exc.message)
    assert artifacts.cpu_model is not None  # a CPU placement exists only with a CPU model
    return placement, {None: open_cpu(artifacts.cpu_model, choice)}


def _seq2seq(deployment: ModelDeployment, artifacts: Artifacts, placement: Placement,
             encoders: dict[int | None, OpenedSession]) -> Seq2SeqModel:
    """The encoder where placement put it; the decoder beside it on the NPU when it was compiled for each bucket,
    else on the CPU (the split shows in the status note)."""
    folder = artifacts.model_dir
    if folder is None or not (folder / DECODER_FILE).is_file() or artifacts.tokenizer is None:
        raise NotServable(Reason.NO_CPU_MODEL, f"an encoder-decoder needs its {DECODER_FILE} and tokenizer.json")
    start, ends = generation_ids(folder)
    runtime = deployment.spec.runtime
    choice = power.choose(runtime)
    npu = {b.sequence_length: b.decoder for b in placement.binaries if b.decoder is not None}
    note = placement.note
    if placement.on_npu and len(npu) == len(placement.binaries):
        decoders = {bucket: Decoder(open_npu(path, placement.binaries[0].soc_model, runtime, choice), start)
                    for bucket, path in npu.items()}
        note += "; encoder and one-step decoder both on the NPU"
    else:
        decoders = {None: Decoder(open_cpu(folder / DECODER_FILE, choice), start)}
        if placement.on_npu:
            refused = next((b.decoder_refused for b in placement.binaries if b.decoder_refused), None)
            why = f"the QNN EP refused it ({refused})" if refused else "no decoder context binary was built"
            note += f"; the encoder runs on the NPU, the decoder on the CPU: {why}"
    sessions = [*encoders.values(), *(d.opened for d in decoders.values())]
    buckets = [length for length in encoders if length is not None]
    limit = max_input_tokens(deployment, buckets)
    slots = 1 if placement.on_npu else deployment.spec.serve.max_batch
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    pad = config.get("pad_token_id")
    return Seq2SeqModel(Encoder(encoders, pad if isinstance(pad, int) else 0), decoders, Seq2SeqTokenizer(folder),
                        ends, RunInfo.of(placement.where, sessions, note), slots, limit, str(config.get("model_type")))
