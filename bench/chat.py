"""Chat generation through the HTTP server vs onnxruntime-genai called directly: same model, same prompt.

The model is the tests' tiny random-weight Llama (2 layers, hidden 64, built here with onnxruntime-genai's
model builder, fp32 on the CPU) unless --model names an onnxruntime-genai folder. Greedy decoding, a fixed
number of new tokens at most (both stop at end-of-sequence, at the same token). Direct and HTTP runs alternate:
  direct_ttft_ms / http_ttft_ms       request to first token (HTTP: first content chunk of the SSE stream, read
                                      by the official openai client)
  sse_ttft_ms                         the same read by a plain SSE line reader (httpx), which costs the client
                                      almost nothing: the server's own share
  http_over_direct_ttft_ms            sse_ttft_ms - direct_ttft_ms (goal: <= 3 ms)
  direct_tokens_per_s / http_... / sse_...   tokens after the first, per second of decoding
  server_us_per_token                 the server process's CPU time per streamed token, less onnxruntime-genai's
                                      own CPU time per token called directly (2000 tokens, ignore_eos; goal <= 20)
The server runs as `npuctl serve` in its own process on 127.0.0.1, as users run it.

--npu: the trained tiny Llama (tests/tiny_chat.py) built here as w8a16 QNN decoder-pipeline packs for x-elite,
one with attention on the HTP (spec.generation.attention: npu) and one with it on the CPU (attention: cpu), served
from the HTP simulator, against the same build's fp32 CPU decoder, all through HTTP:
  npu_ttft_ms / npu_cpu_attention_ttft_ms / cpu_ttft_ms, the same for tokens_per_s, each pack's placement (share
  of nodes and of MACs per decoded token on QNN), and build_seconds per step. The simulator emulates the HTP on
  the CPU: its speed says nothing about a Snapdragon's.
  host_cpu_ms_per_token, per path, onnxruntime-genai called in a child process (bench/host_cpu.py says what
  each figure holds and why the host's share cannot be cut out exactly on the simulator): process_ms (the
  simulator's emulation included), calling_thread_ms (an upper bound of the host's work outside the HTP calls)
  and execute_calling_ms (the calling thread inside the decode graphs' execute calls, each graph run alone).

    python bench/chat.py [--json] [--runs 10] [--tokens 200] [--model GENAI_DIR | --npu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.serving import Serving, npuctl_serve  # noqa: E402

LONG_TOKENS = 2000
MESSAGES = [{"role": "user", "content": "Hello world, how are you today? Tell me about the lazy dog."}]
MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: chat}}
spec:
  model: {{source: "file:{source}", task: text-generation, format: {format}}}
  precision: fp32
  runtime: {{device: cpu}}
  serve: {{maxBatch: 1}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--model", type=Path, help="an onnxruntime-genai folder (default: build the tiny Llama)")
    parser.add_argument("--npu", action="store_true", help="a decoder-pipeline pack on the simulator vs the CPU")
    args = parser.parse_args()
    if args.npu:
        _print(_npu_case(args.runs, args.tokens), args.json)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.model:
            source, kind = args.model.resolve(), "genai"
        else:
            from tests.tiny_llama import make_tiny_llama

            source, kind = make_tiny_llama(folder / "hf"), "transformers"
        (folder / "chat.yaml").write_text(MANIFEST.format(source=source, format=kind), encoding="utf-8")
        with npuctl_serve(folder / "chat.yaml", folder / "store", folder / "server.log") as served:
            genai_dir = args.model or _built_folder(folder / "store")
            results = _measure(served.url, genai_dir, args.runs, args.tokens)
            results |= _cpu_per_token(served, genai_dir)
    results["http_over_direct_ttft_ms"] = round(results["sse_ttft_ms"] - results["direct_ttft_ms"], 2)
    results["http_over_direct_tokens_per_s"] = round(results["http_tokens_per_s"] / results["direct_tokens_per_s"], 2)
    _print(results, args.json)


def _print(results: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:32} {value}")


NPU_MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{source: "file:{source}", task: text-generation}}
  precision: w8a16
  targets: [x-elite]
  generation: {{contextLength: 256, attention: {attention}}}
  accuracy: {{samples: 4}}
  runtime: {{device: {device}, allowSimulator: true}}
  serve: {{maxBatch: 1}}
"""


def _npu_case(runs: int, tokens: int) -> dict[str, object]:
    import openai

    from npuctl.artifacts import Store
    from npuctl.artifacts.facts import GenaiBuilder, LlmCompile, Targeted
    from tests.tiny_chat import CONTEXT, TRAIN_STEPS
    from tests.tiny_llama import make_tiny_decoder

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        source = make_tiny_decoder(folder / "hf", "llama", train_steps=TRAIN_STEPS, context_length=CONTEXT)
        cases = {"npu": ("chat-npu", "npu", "npu"), "npu_cpu_attention": ("chat-npu-cpu-attention", "npu", "cpu"),
                 "cpu": ("chat", "cpu", "npu")}
        for name, device, attention in cases.values():
            (folder / "manifests").mkdir(exist_ok=True)
            (folder / "manifests" / f"{name}.yaml").write_text(
                NPU_MANIFEST.format(name=name, source=source, device=device, attention=attention), encoding="utf-8")
        with npuctl_serve(folder / "manifests", folder / "store", folder / "server.log", timeout=1800) as served:
            client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases.values()}
            for run in range(runs + 1):  # run 0 warms up
                for model in figures:
                    measured = _http(client, tokens, model)
                    if run:
                        figures[model].append(measured)
        steps: dict[str, float] = {}
        placements: dict[str, dict[str, float | None]] = {}
        host_cpu: dict[str, dict[str, float | str]] = {}
        for record in Store(folder / "store").records():
            soc = record.details.soc_model if isinstance(record.details, Targeted) else ""
            key = f"{record.step} {soc}".strip()
            steps[key if key not in steps else f"{key} (2)"] = round(record.seconds, 1)
            case = None
            if isinstance(record.details, LlmCompile):
                placement = record.details.placement
                on_cpu = any(s.cpu_ops.get("GroupQueryAttention") for s in placement.stages.values())
                case = "npu_cpu_attention" if on_cpu else "npu"
                placements[case] = {
                    "node_share": round(placement.node_share, 3), "decode_mac_share": placement.decode_mac_share}
            elif isinstance(record.details, GenaiBuilder) and record.details.precision == "fp32":
                case = "cpu"
            if case is not None:
                host_cpu[case] = _host_cpu(record.folder, folder / "views", tokens, runs)
    results: dict[str, object] = {"max_new_tokens": tokens, "runs": runs}
    for case, (name, _, _) in cases.items():
        results[f"{case}_ttft_ms"] = round(statistics.median(t for t, _ in figures[name]) * 1000, 1)
        results[f"{case}_tokens_per_s"] = round(statistics.median(s for _, s in figures[name]), 1)
    return results | {"placement": placements, "host_cpu_ms_per_token": host_cpu, "build_seconds": steps}


def _host_cpu(folder: Path, views: Path, tokens: int, runs: int) -> dict[str, float | str]:
    """bench/host_cpu.py on one model, in a child process (the simulator's libraries may abort at teardown)."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("host_cpu.py")), str(folder), str(views),
                           str(tokens), str(runs)], capture_output=True, text=True, timeout=1800)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    figures: dict[str, float | str] = json.loads(lines[-1])
    return figures


def _built_folder(store: Path) -> Path:
    return next(p.parent for p in (store / "steps").glob("*/genai_config.json"))


def _measure(url: str, genai_dir: Path, runs: int, tokens: int) -> dict[str, Any]:
    import onnxruntime_genai as og
    import openai

    from npuctl.runtime.prompts import PromptTokenizer

    ids = PromptTokenizer(genai_dir).chat(MESSAGES)
    model = og.Model(str(genai_dir))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    runs_by_client: dict[str, list[tuple[float, float]]] = {"direct": [], "http": [], "sse": []}
    with httpx.Client(base_url=url, timeout=60) as plain:
        for run in range(runs + 1):  # interleaved, so drift hits all alike; run 0 warms up
            measured = {"direct": _direct(og, model, ids, tokens), "http": _http(client, tokens), "sse": _sse(plain, tokens)}
            for name, pair in measured.items():
                if run:
                    runs_by_client[name].append(pair)
    results: dict[str, Any] = {"prompt_tokens": len(ids), "max_new_tokens": tokens, "runs": runs}
    for name, pairs in runs_by_client.items():
        ttft = [t * 1000 for t, _ in pairs]
        results[f"{name}_ttft_ms"] = round(statistics.median(ttft), 2)
        results[f"{name}_ttft_ms_spread"] = f"{min(ttft):.2f}..{max(ttft):.2f}"
    for name, pairs in runs_by_client.items():
        results[f"{name}_tokens_per_s"] = round(statistics.median(s for _, s in pairs), 1)
    return results


def _cpu_per_token(served: Serving, genai_dir: Path, tokens: int = LONG_TOKENS, runs: int = 3) -> dict[str, float]:
    """CPU time per token: the server's (whole process) for a streamed answer, and onnxruntime-genai's called
    directly in this process, alternately; the difference is what serving a token costs."""
    import onnxruntime_genai as og
    import psutil

    from npuctl.runtime.prompts import PromptTokenizer

    ids = PromptTokenizer(genai_dir).chat(MESSAGES)
    model = og.Model(str(genai_dir))
    server = psutil.Process(served.pid)
    direct: list[float] = []
    streamed: list[float] = []
    request = {"model": "chat", "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "stream": True,
               "ignore_eos": True}
    with httpx.Client(base_url=served.url, timeout=120) as http:
        for _ in range(runs):
            started = time.process_time()
            _direct(og, model, ids, tokens, ignore_eos=True)
            direct.append((time.process_time() - started) / tokens)
            before = sum(server.cpu_times()[:2])
            with http.stream("POST", "/v1/chat/completions", json=request) as answer:
                for _line in answer.iter_lines():
                    pass
            streamed.append((sum(server.cpu_times()[:2]) - before) / tokens)
    return {"direct_cpu_us_per_token": round(statistics.median(direct) * 1e6, 1),
            "server_cpu_us_per_token": round(statistics.median(streamed) * 1e6, 1),
            "server_us_per_token": round((statistics.median(streamed) - statistics.median(direct)) * 1e6, 1)}


def _direct(og: object, model: object, ids: list[int], tokens: int, ignore_eos: bool = False) -> tuple[float, float]:
    started = time.perf_counter()
    params = og.GeneratorParams(model)  # type: ignore[attr-defined]
    length = len(ids) + tokens
    params.set_search_options(max_length=length, do_sample=False, **({"min_length": length} if ignore_eos else {}))
    generator = og.Generator(model, params)  # type: ignore[attr-defined]
    generator.append_tokens(ids)
    first = None
    count = 0
    while not generator.is_done():
        generator.generate_next_token()
        generator.get_next_tokens()
        count += 1
        first = first or time.perf_counter()
    return first - started, (count - 1) / (time.perf_counter() - first)  # type: ignore[operator]


def _http(client: object, tokens: int, model: str = "chat") -> tuple[float, float]:
    started = time.perf_counter()
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model=model, messages=MESSAGES, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True})
    first = None
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        usage = chunk.usage or usage
    assert first is not None and usage is not None, usage
    return first - started, (usage.completion_tokens - 1) / max(time.perf_counter() - first, 1e-9)


def _sse(http: httpx.Client, tokens: int) -> tuple[float, float]:
    """The stream read as plain lines: first content chunk, then content chunks per second."""
    request = {"model": "chat", "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = None
    count = 0
    with http.stream("POST", "/v1/chat/completions", json=request) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                count += 1
                first = first or time.perf_counter()
    assert first is not None
    return first - started, (count - 1) / (time.perf_counter() - first)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
