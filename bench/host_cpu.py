"""Host CPU time per decoded token of an onnxruntime-genai model, split between the thread that calls
onnxruntime-genai and every other thread of the process (bench/chat.py --npu).

On a Snapdragon the HTP runs beside the CPU and the host's share is the calling thread's work: onnxruntime-genai
(the sequence lengths, the KV cache bookkeeping, sampling), onnxruntime's session runs and the QNN EP's host side
of each execute (CPU graph nodes, such as attention with `attention: cpu`, run there too). On the x86 HTP
simulator the HTP is emulated by the process's other threads and partly on the calling thread, inside each
execute, so the calling thread's figure is only an upper bound of the host CPU outside the HTP calls.
`execute_calling_ms`, the calling thread's CPU of the decode graphs run alone through onnxruntime (as many
times), estimates the part of it spent inside the execute calls, the simulator's share included (with
`attention: cpu` also the CPU attention between the partitions). The time inside the QNN EP's execute cannot be
read here: onnxruntime's profiler (`enable_profiling`) and the QNN EP's (`profiling_level`) both abort the
process with heap corruption on these packs under the simulator."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

PROMPT = [{"role": "user", "content": "Hello world, how are you today? Tell me about the lazy dog."}]


def per_token(folder: Path, views: Path, tokens: int, runs: int) -> dict[str, float]:
    """Median over `runs` of `tokens` decoded tokens (end-of-sequence ignored): ms of CPU per token of the whole
    process, of the calling thread, and, for a QNN pack (its host view made in `views`), of the calling thread
    inside its decode graphs."""
    import onnxruntime_genai as og

    from npuctl.runtime import qnn
    from npuctl.runtime.genai_pack import host_view, read_pack
    from npuctl.runtime.prompts import PromptTokenizer

    pack = read_pack(folder)
    on_qnn = any(stage.on_qnn for stage in pack.stages)
    if on_qnn:
        qnn.register_genai(og)
        folder = host_view(pack, {}, views)
    model = og.Model(str(folder))
    ids = PromptTokenizer(folder).chat(PROMPT)
    figures: dict[str, list[float]] = {"process_ms": [], "calling_thread_ms": []}
    for _ in range(runs):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=pack.context_length, min_length=pack.context_length, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        generator.generate_next_token()
        process_before, thread_before = time.process_time(), time.thread_time()
        for _ in range(tokens):
            generator.generate_next_token()
        figures["process_ms"].append((time.process_time() - process_before) * 1e3 / tokens)
        figures["calling_thread_ms"].append((time.thread_time() - thread_before) * 1e3 / tokens)
        del generator
    result = {name: round(statistics.median(values), 3) for name, values in figures.items()}
    if on_qnn:
        result["execute_calling_ms"] = round(_execute_calling_ms(folder, tokens), 3)
    return result


def _execute_calling_ms(view: Path, runs: int) -> float:
    """Calling-thread CPU ms of one run of each QNN decode graph (run_on_prompt false), each alone in onnxruntime."""
    import numpy as np
    import onnxruntime as ort

    from npuctl.runtime import qnn

    [stages] = json.loads((view / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]["pipeline"]
    total = 0.0
    for stage in stages.values():
        providers = stage.get("session_options", {}).get("provider_options", [])
        if stage.get("run_on_prompt", True) or not providers:
            continue
        options = {k: str(v) for k, v in providers[0]["qnn"].items() if k not in ("backend_type", "backend_path", "soc_model")}
        session = ort.InferenceSession(str(view / stage["filename"]),
                                       qnn.session_options(int(providers[0]["qnn"]["soc_model"]), provider_options=options))
        # A decode step at position 64 (a symbolic KV cache length, attention: cpu, given 128 rows).
        feeds = {i.name: np.full([d if isinstance(d, int) else _KV_ROWS for d in i.shape], _POSITIONS.get(i.name, 0),
                                 _DTYPES[i.type]) for i in session.get_inputs()}
        session.run(None, feeds)
        before = time.thread_time()
        for _ in range(runs):
            session.run(None, feeds)
        total += (time.thread_time() - before) * 1e3 / runs
        del session
    return total


_KV_ROWS = 128
_POSITIONS = {"past_seq_len": 64, "total_seq_len": 65}
_DTYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint16)": "uint16",
           "tensor(uint8)": "uint8"}


if __name__ == "__main__":
    import sys

    print(json.dumps(per_token(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))), flush=True)
    # The HTP simulator's libraries can abort at teardown; the figures are out.
    os._exit(0)
