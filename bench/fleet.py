"""Fleet figures on one machine: real agent processes (half X Elite, half X2 Elite facts) following one signed
bundle, artifacts from one published store over HTTP (the tiny tensor model, so fetching and loading is what
is timed, not compiling).

- convergence: from publishing a new bundle version (new artifacts: w8a16 -> w8a8) until every agent serves
  it, for each fleet size; with --interval (default 1 s) between polls.
- load on the bundle server: requests per agent per hour at the default poll interval, computed from the
  interval and its jitter, and checked against the server's access log over --rate-seconds at --interval
  (the count scales with 1/interval, so the log figure is projected to the default interval).

    python bench/fleet.py [--agents 4 8 16] [--interval 1] [--rate-seconds 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from npuctl.agent import bundles  # noqa: E402
from npuctl.agent.config import ManifestSource  # noqa: E402
from tests.agent.fleet_harness import (  # noqa: E402
    StaticServer,
    fleet_agent,
    fleet_manifest,
    publish_artifacts,
    publish_bundle,
    start_all,
    wait_all,
)
from tests.agent.harness import Agent, tiny_model  # noqa: E402

JITTER = (0.8, 1.2)
"""The poller's wait is interval x uniform(0.8, 1.2) (npuctl.agent.sources)."""


def serving(precision: str):  # -> condition on an Agent
    def check(agent: Agent) -> bool:
        status = agent.status("tiny")
        return bool(status and status["phase"] == "Ready"
                    and [a["precision"] for a in status["artifacts"]] == [precision])
    return check


def run_fleet(root: Path, size: int, model: Path, published: str, key: bytes, public_key: str, interval: float,
              rate_seconds: float) -> dict[str, Any]:
    bundle_server = StaticServer(root / f"bundles-{size}")
    publish_bundle(bundle_server.root, "v1", {"tiny.yaml": fleet_manifest(model)}, key)
    bundle_server.start()
    agents = [fleet_agent(root / f"fleet-{size}" / f"agent-{i}", soc=("x-elite", "x2-elite")[i % 2],
                          bundle_url=f"{bundle_server.url}/fleet.json", public_key=public_key,
                          artifacts_url=published, interval=interval) for i in range(size)]
    try:
        started = time.monotonic()
        start_all(agents, timeout=600)
        wait_all(agents, serving("w8a16"), "v1", timeout=600)
        start_to_ready = time.monotonic() - started
        publish_bundle(bundle_server.root, "v2", {"tiny.yaml": fleet_manifest(model, precision="w8a8")}, key)
        converge = wait_all(agents, serving("w8a8"), "v2", timeout=600)
        since = time.monotonic()
        time.sleep(rate_seconds)
        polls = [r for r in bundle_server.log("/fleet.json") if r.time >= since and not r.path.endswith(".sig")]
        per_hour = len(polls) / size / rate_seconds * 3600
        return {"agents": size, "start_to_ready_s": round(start_to_ready, 2), "converge_s": round(converge, 2),
                "polls_per_agent_hour_at_interval": round(per_hour, 1),
                "polls_per_agent_hour_projected_to_default": round(per_hour * interval / default_interval(), 2)}
    finally:
        for agent in agents:
            agent.stop()
        bundle_server.stop()


def default_interval() -> float:
    return float(ManifestSource.model_fields["interval_seconds"].default)


def computed_rate() -> dict[str, float]:
    """Requests per agent per hour at the default interval: the mean wait is the interval (the jitter is
    symmetric); an unchanged bundle is one conditional GET answered 304, a changed one adds the signature."""
    mean_wait = default_interval() * sum(JITTER) / 2
    return {"default_interval_s": default_interval(), "jitter": list(JITTER),
            "requests_per_agent_hour_unchanged": round(3600 / mean_wait, 2),
            "requests_per_second_10000_agents": round(10000 / mean_wait, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval of the benchmark's agents (s)")
    parser.add_argument("--rate-seconds", type=float, default=30.0, help="how long the access log is counted")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npuctl-bench-fleet-") as tmp:
        root = Path(tmp)
        model = root / "share" / "tiny.onnx"
        model.parent.mkdir()
        tiny_model(model)
        for precision in ("w8a16", "w8a8"):
            manifest = root / "build-host" / precision / "tiny.yaml"
            manifest.parent.mkdir(parents=True)
            manifest.write_text(fleet_manifest(model, precision=precision))
            publish_artifacts(manifest, root / "build-host" / "cache", root / "published")
        key, public_key = bundles.generate_key()
        store = StaticServer(root / "published").start()
        try:
            runs = [run_fleet(root, size, model, store.url, key, public_key, args.interval, args.rate_seconds)
                    for size in args.agents]
        finally:
            store.stop()
    result = {"interval_s": args.interval, "runs": runs, "computed": computed_rate()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"poll interval {args.interval} s; default {default_interval()} s")
    for run in runs:
        print(f"{run['agents']:>3} agents: start to Ready {run['start_to_ready_s']} s, new version everywhere in "
              f"{run['converge_s']} s, {run['polls_per_agent_hour_at_interval']} polls/agent/h "
              f"(= {run['polls_per_agent_hour_projected_to_default']} at the default interval)")
    computed = result["computed"]
    print(f"computed at the default interval: {computed['requests_per_agent_hour_unchanged']} requests/agent/h; "
          f"10,000 agents: {computed['requests_per_second_10000_agents']} requests/s")


if __name__ == "__main__":
    main()
