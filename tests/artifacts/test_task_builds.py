"""NPU builds of the new tasks on the HTP simulator (x-elite, soc 60): the tiny trained reranker and classifier at
w8a16 pass verify (score error and agreement with fp32); the tiny T5's encoder and one-step decoder compile and give
the fp32 model's greedy tokens."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from npuctl.artifacts import Store, artifacts_of, build_deployment
from npuctl.runtime.devices import detect_host
from npuctl.runtime.generation import Sampling
from npuctl.runtime.placement import Where
from npuctl.serve.models import GenerationService, load_served
from tests.conftest import TinyModels, task_manifest
from tests.tiny_t5 import PAIRS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("task", ["rerank", "classification"])
def test_scoring_models_build_and_verify_for_x_elite(task: str, tiny_models: TinyModels, task_store: Store,
                                                     tmp_path: Path) -> None:
    result = build_deployment(task_manifest(tmp_path, tiny_models[task], task, precision="w8a16"), store=task_store)
    [artifact] = result.artifacts
    assert artifact.soc_model == 60 and artifact.bucket == 32 and artifact.npu_coverage == 1.0
    accuracy = artifact.accuracy
    assert accuracy is not None and accuracy.metric == "max_abs_error"
    assert accuracy.value <= accuracy.threshold == 0.05
    assert accuracy.agreement is not None and accuracy.agreement >= 0.9
    assert artifact.as_dict()["accuracy"]["agreement"] == accuracy.agreement


def test_t5_encoder_and_decoder_build_verify_and_serve_on_the_htp(tiny_models: TinyModels, task_store: Store,
                                                                  tmp_path: Path) -> None:
    task = "text2text-generation"
    spec = {"precision": "fp16", "runtime": {"allowSimulator": True, "fallback": "none"}}
    loaded = task_manifest(tmp_path, tiny_models[task], task, "t5-npu", **spec)
    result = build_deployment(loaded, store=task_store)
    [artifact] = result.artifacts
    assert artifact.accuracy is not None and artifact.accuracy.metric == "agreement" and artifact.accuracy.value == 1.0
    assert artifact.decoder is not None and artifact.decoder.is_file() and artifact.decoder_refused is None
    assert {"compile", "compile-decoder", "decoder-static", "verify"} <= {s.name for s in artifact.steps}
    served = load_served(loaded.deployment, artifacts_of(result))
    assert isinstance(served, GenerationService) and served.status.ready, served.status
    if detect_host().npu.value == "simulator":
        assert served.status.where == Where.SIMULATOR.value and served.status.npu_coverage == 1.0
        assert "encoder and one-step decoder both on the NPU" in served.status.message
        # Had the HTP refused the decoder, the encoder would still run there and status would say why.
        artifacts = artifacts_of(result)
        split = replace(artifacts, context_binaries=tuple(replace(b, decoder=None, decoder_refused="Gather x2")
                                                          for b in artifacts.context_binaries))
        halves = load_served(loaded.deployment, split)
        assert halves.status.where == Where.SIMULATOR.value and 0 < (halves.status.npu_coverage or 0) < 1
        assert "the decoder on the CPU: the QNN EP refused it (Gather x2)" in halves.status.message
        halves.retire()
    cpu = load_served(task_manifest(tmp_path, tiny_models[task], task, "t5-cpu").deployment,
                      artifacts_of(build_deployment(task_manifest(tmp_path, tiny_models[task], task, "t5-cpu"),
                                                    store=task_store)))
    assert isinstance(cpu, GenerationService)
    prompt = served.model.tokenizer.plain(next(iter(PAIRS)))
    answers = [list(m.model.tokens(prompt, Sampling(16, 0.0), threading.Event())) for m in (served, cpu)]
    # The answer a client gets ends at the end token: the steps after it (which the decoder yields and the text
    # stream drops) are an untrained model's near ties, which fp16 and fp32 may break differently.
    ends = served.model.eos_token_ids
    answered = [tokens[: next((i + 1 for i, t in enumerate(tokens) if t in ends), len(tokens))] for tokens in answers]
    assert answered[0] == answered[1] and answered[0][-1] in ends
    served.retire()
    cpu.retire()
