"""Fleet figures on one machine: real agent processes (half X Elite, half X2 Elite facts) following one signed
bundle, artifacts from one published store over HTTP (the tiny tensor model, so fetching and loading is what
is timed, not compiling).

- convergence: from publishing a new bundle version (new artifacts: w8a16 -> w8a8) until every agent serves
  it, for each fleet size; with --interval (default 1 s) between polls.
- load on the bundle server: requests per agent per hour at the default poll interval, computed from the
  interval and its jitter, and checked against the server's access log over --rate-seconds at --interval
  (the count scales with 1/interval, so the log figure is projected to the default interval).

    python bench/fleet.py [--agents 4 8 16] [--interval 1] [--rate-seconds 30] [--registry [--minilm-cache DIR]] [--json]
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
from tests.oci.registry import Registry  # noqa: E402

JITTER = (0.8, 1.2)
"""The poller's wait is interval x uniform(0.8, 1.2) (npuctl.agent.sources)."""


def serving(precision: str):  # -> condition on an Agent
    def check(agent: Agent) -> bool:
        status = agent.status("tiny")
        return bool(status and status["phase"] == "Ready"
                    and [a["precision"] for a in status["artifacts"]] == [precision])
    return check


class StaticDesired:
    """The bundle on a static web server, artifacts from a published folder over HTTP."""

    def __init__(self, root: Path, model: Path, key: bytes, store_url: str) -> None:
        self.root, self.model, self.key, self.artifacts = root, model, key, store_url
        self.source_options: dict[str, Any] = {}
        self.server: StaticServer | None = None

    def start(self, size: int) -> str:
        self.server = StaticServer(self.root / f"bundles-{size}")
        self.publish("v1", "w8a16")
        self.server.start()
        return f"{self.server.url}/fleet.json"

    def publish(self, version: str, precision: str) -> None:
        assert self.server is not None
        publish_bundle(self.server.root, version, {"tiny.yaml": fleet_manifest(self.model, precision=precision)},
                       self.key)

    def polls(self, since: float) -> int:
        assert self.server is not None
        return len([r for r in self.server.log("/fleet.json") if r.time >= since and not r.path.endswith(".sig")])

    def stop(self) -> None:
        if self.server:
            self.server.stop()


class RegistryDesired:
    """The bundle and the steps in one OCI registry (docker-registry on 127.0.0.1)."""

    def __init__(self, root: Path, model: Path, key: Path, registry: Any, steps: str) -> None:
        self.root, self.model, self.key, self.registry, self.steps = root, model, key, registry, steps
        self.artifacts: Any = {"url": steps, "insecure": True}
        self.source_options = {"insecure": True}
        self.tag = ""
        self._seen: list[tuple[float, tuple[str, str, int, int]]] = []

    def start(self, size: int) -> str:
        self.tag = f"oci://{self.registry.host}/fleet/desired-{size}:stable"
        self.publish("v1", "w8a16")
        return self.tag

    def publish(self, version: str, precision: str) -> None:
        from npuctl.agent import bundle_push
        from npuctl.artifacts.store import Store

        folder = self.root / self.tag.rsplit("/", 1)[1].replace(":", "-") / version
        folder.mkdir(parents=True)
        (folder / "tiny.yaml").write_text(fleet_manifest(self.model, precision=precision))
        bundle_push.push(folder, self.tag, self.key, self.steps, version=version, insecure=True,
                         store=Store(self.root / "build-host" / "cache"))

    def polls(self, since: float) -> int:
        path = f"/v2/{self.tag.split('/', 3)[3].replace(':', '/manifests/')}"
        return len([1 for when, (method, logged, _, _) in self._timed() if when >= since and logged == path
                    and method == "GET"])

    def _timed(self) -> list[tuple[float, tuple[str, str, int, int]]]:
        # The access log has second resolution: entries are timed by when this process first saw them.
        log = self.registry.access_log()
        now = time.monotonic()
        self._seen += [(now, entry) for entry in log[len(self._seen):]]
        return self._seen

    def stop(self) -> None:
        pass


def run_fleet(root: Path, size: int, desired: Any, interval: float, rate_seconds: float, public_key: str) -> dict[str, Any]:
    url = desired.start(size)
    agents = [fleet_agent(root / f"fleet-{size}" / f"agent-{i}", soc=("x-elite", "x2-elite")[i % 2],
                          bundle_url=url, public_key=public_key, artifacts_url=desired.artifacts, interval=interval,
                          source_options=desired.source_options) for i in range(size)]
    try:
        started = time.monotonic()
        start_all(agents, timeout=600)
        wait_all(agents, serving("w8a16"), "v1", timeout=600)
        start_to_ready = time.monotonic() - started
        desired.publish("v2", "w8a8")
        converge = wait_all(agents, serving("w8a8"), "v2", timeout=600)
        desired.polls(0)
        since = time.monotonic()
        time.sleep(rate_seconds)
        per_hour = desired.polls(since) / size / rate_seconds * 3600
        return {"agents": size, "start_to_ready_s": round(start_to_ready, 2), "converge_s": round(converge, 2),
                "polls_per_agent_hour_at_interval": round(per_hour, 1),
                "polls_per_agent_hour_projected_to_default": round(per_hour * interval / default_interval(), 2)}
    finally:
        for agent in agents:
            agent.stop()
        desired.stop()


def minilm_bytes(root: Path, registry: Any, cache: Path, key: Path, public_key: str) -> dict[str, Any]:
    """Bytes one agent pulls from the registry for examples/fleet-x-series.yaml (all-MiniLM-L6-v2, w8a16,
    build.strategy: prebuilt), per SoC: publish from a build host's store (`cache`; built there if missing),
    push a bundle, then one agent at a time from an empty cache to Ready."""
    from npuctl.agent import bundle_push
    from npuctl.artifacts.store import Store

    example = REPO / "examples" / "fleet-x-series.yaml"
    steps = f"oci://{registry.host}/fleet/minilm"
    publish_artifacts(example, cache, steps, "--plain-http")
    folder = root / "minilm-desired"
    folder.mkdir()
    (folder / example.name).write_text(example.read_text())
    tag = f"oci://{registry.host}/fleet/minilm-desired:stable"
    bundle_push.push(folder, tag, key, steps, version="v1", insecure=True, store=Store(cache))
    result: dict[str, Any] = {}
    for soc in ("x-elite", "x2-elite"):
        agent = fleet_agent(root / f"minilm-{soc}", soc=soc, bundle_url=tag, public_key=public_key,
                            artifacts_url={"url": steps, "insecure": True}, interval=300.0,
                            labels={"ring": "pilot"}, facts={"memoryGiB": 32}, source_options={"insecure": True})
        mark = len(registry.access_log())
        try:
            start_all([agent], timeout=600)
            wait_all([agent], lambda a: (a.status("fleet-embed") or {}).get("phase") == "Ready", "MiniLM Ready", 1200)
        finally:
            agent.stop()
        pulled = [entry for entry in registry.access_log()[mark:] if entry[0] == "GET" and entry[2] in (200, 206)]
        result[soc] = {"requests": len(registry.access_log()) - mark, "bytes": sum(e[3] for e in pulled),
                       "blob_bytes": sum(e[3] for e in pulled if "/blobs/" in e[1])}
    return result


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
    parser.add_argument("--registry", action="store_true",
                        help="bundle and steps in an OCI registry (docker-registry on 127.0.0.1) instead of static HTTP")
    parser.add_argument("--minilm-cache", type=Path, default=None,
                        help="with --registry: also measure the bytes an agent pulls for examples/fleet-x-series.yaml, "
                             "published from this build host store (built there first if it is not)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npuctl-bench-fleet-") as tmp:
        root = Path(tmp)
        model = root / "share" / "tiny.onnx"
        model.parent.mkdir()
        tiny_model(model)
        key_file = root / "bundle.key"
        public_key = bundles.write_private_key(key_file)
        registry = Registry(root / "registry").start() if args.registry else None
        store = None
        try:
            steps = f"oci://{registry.host}/fleet/steps" if registry else str(root / "published")
            for precision in ("w8a16", "w8a8"):
                manifest = root / "build-host" / precision / "tiny.yaml"
                manifest.parent.mkdir(parents=True)
                manifest.write_text(fleet_manifest(model, precision=precision))
                publish_artifacts(manifest, root / "build-host" / "cache", steps, *(["--plain-http"] if registry else []))
            if registry:
                desired: Any = RegistryDesired(root, model, key_file, registry, steps)
            else:
                store = StaticServer(root / "published").start()
                desired = StaticDesired(root, model, key_file.read_bytes(), store.url)
            runs = [run_fleet(root, size, desired, args.interval, args.rate_seconds, public_key)
                    for size in args.agents]
            minilm = (minilm_bytes(root, registry, args.minilm_cache, key_file, public_key)
                      if registry and args.minilm_cache else None)
        finally:
            if store:
                store.stop()
            if registry:
                registry.stop()
    result = {"store": "registry" if args.registry else "http", "interval_s": args.interval, "runs": runs,
              "computed": computed_rate(), "minilm_pull": minilm}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['store']}; poll interval {args.interval} s; default {default_interval()} s")
    for run in runs:
        print(f"{run['agents']:>3} agents: start to Ready {run['start_to_ready_s']} s, new version everywhere in "
              f"{run['converge_s']} s, {run['polls_per_agent_hour_at_interval']} polls/agent/h "
              f"(= {run['polls_per_agent_hour_projected_to_default']} at the default interval)")
    computed = result["computed"]
    print(f"computed at the default interval: {computed['requests_per_agent_hour_unchanged']} requests/agent/h; "
          f"10,000 agents: {computed['requests_per_second_10000_agents']} requests/s")
    if minilm:
        for soc, pulled in minilm.items():
            print(f"MiniLM (fleet-x-series.yaml) on {soc}: {pulled['bytes']:,} bytes in {pulled['requests']} requests")


if __name__ == "__main__":
    main()
