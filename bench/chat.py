"""Chat generation through the HTTP server vs onnxruntime-genai called directly: same model, same prompt.

The model is the tests' tiny random-weight Llama (2 layers, hidden 64, built here with onnxruntime-genai's
model builder, fp32 on the CPU) unless --model names an onnxruntime-genai folder. Greedy decoding, a fixed
number of new tokens at most (both stop at end-of-sequence, at the same token):
  direct_ttft_ms / http_ttft_ms       request to first token (HTTP: first content chunk of the SSE stream)
  direct_tokens_per_s / http_...      tokens after the first, per second of decoding
The server runs as `npuctl serve` in its own process on 127.0.0.1, as users run it; the client is the
official openai package.

    python bench/chat.py [--json] [--runs 10] [--tokens 200] [--model GENAI_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving import npuctl_serve  # noqa: E402

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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.model:
            source, kind = args.model.resolve(), "genai"
        else:
            from tests.tiny_llama import make_tiny_llama

            source, kind = make_tiny_llama(folder / "hf"), "transformers"
        (folder / "chat.yaml").write_text(MANIFEST.format(source=source, format=kind), encoding="utf-8")
        with npuctl_serve(folder / "chat.yaml", folder / "store", folder / "server.log") as url:
            results = _measure(url, args.model or _built_folder(folder / "store"), args.runs, args.tokens)
    results["http_over_direct_ttft"] = round(results["http_ttft_ms"] / results["direct_ttft_ms"], 2)
    results["http_over_direct_tokens_per_s"] = round(results["http_tokens_per_s"] / results["direct_tokens_per_s"], 2)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:32} {value}")


def _built_folder(store: Path) -> Path:
    return next(p.parent for p in (store / "steps").glob("*/genai_config.json"))


def _measure(url: str, genai_dir: Path, runs: int, tokens: int) -> dict[str, float | int | str]:
    import onnxruntime_genai as og
    import openai

    from npuctl.runtime.prompts import PromptTokenizer

    ids = PromptTokenizer(genai_dir).chat(MESSAGES)
    model = og.Model(str(genai_dir))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    direct: list[tuple[float, float]] = []
    http: list[tuple[float, float]] = []
    for run in range(runs + 1):  # interleaved, so drift hits both alike; run 0 warms up
        direct_run = _direct(og, model, ids, tokens)
        http_run = _http(client, tokens)
        if run:
            direct.append(direct_run)
            http.append(http_run)
    return {
        "prompt_tokens": len(ids), "max_new_tokens": tokens, "runs": runs,
        "direct_ttft_ms": round(statistics.median(t for t, _ in direct) * 1000, 2),
        "http_ttft_ms": round(statistics.median(t for t, _ in http) * 1000, 2),
        "direct_tokens_per_s": round(statistics.median(s for _, s in direct), 1),
        "http_tokens_per_s": round(statistics.median(s for _, s in http), 1),
    }


def _direct(og: object, model: object, ids: list[int], tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    params = og.GeneratorParams(model)  # type: ignore[attr-defined]
    params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
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


def _http(client: object, tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model="chat", messages=MESSAGES, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True})
    first = None
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        usage = chunk.usage or usage
    assert first is not None and usage is not None, usage
    return first - started, (usage.completion_tokens - 1) / (time.perf_counter() - first)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
