"""The fleet of tests/agent/test_fleet.py (12 real agents, half X Elite, half X2 Elite facts) on a real OCI
registry (docker-registry 2.8 on 127.0.0.1): the build host publishes steps with `npuctl build --publish
oci://` and the desired state with `npuctl bundle push` (ed25519 + cosign signatures, step pins); agents
follow the tag. The manifests say `build.strategy: prebuilt` (as examples/fleet-x-series.yaml): the build host
compiles, agents only fetch. New versions converge without a compile; forged, replayed (rolled back) and mispinned
bundles are refused by every agent while the old state serves; a blob download cut mid-way resumes; a
tampered binary is caught by its digest; a registry down is Unreachable. The tests run in order on one fleet."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from npuctl.agent import bundle_push, bundles
from npuctl.artifacts.oci import cosign
from npuctl.artifacts.oci.bundles import push_bundle
from npuctl.artifacts.oci.client import RegistryClient
from npuctl.artifacts.oci.refs import parse
from npuctl.artifacts.store import Store
from tests.agent.fleet_harness import (
    AGENTS_PER_SOC,
    POLL_SECONDS,
    fleet_agent,
    fleet_manifest,
    publish_artifacts,
    ready_on,
    source_state,
    start_all,
    wait_all,
)
from tests.agent.harness import Agent, X, infer, tiny_model
from tests.oci.registry import BINARY, CuttingProxy, Registry

PREBUILT = "  build:\n    strategy: prebuilt\n"
"""As examples/fleet-x-series.yaml: the publisher compiles, agents only fetch."""

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    BINARY is None, reason="docker-registry (Debian package docker-registry, CNCF distribution 2.8) is not "
    "installed: apt-get install docker-registry (.ci/run does)")]


@dataclass
class Fleet:
    root: Path
    model: Path
    registry: Registry
    proxy: CuttingProxy
    key: Path
    cosign_key: Path
    agents: list[Agent]
    timings: dict[str, float]
    digests: dict[str, str]
    """Bundle version -> manifest digest, as `npuctl bundle push` printed it."""

    @property
    def tag(self) -> str:
        return f"oci://{self.registry.host}/fleet/desired:stable"

    @property
    def steps(self) -> str:
        return f"oci://{self.registry.host}/fleet/steps"

    def push(self, version: str, precision: str, key: Path | None = None, cosign_key: Path | None = None,
             cli: bool = False, model: Path | None = None) -> str:
        """What `npuctl bundle push` does (`cli`: run the command itself); returns the bundle's digest."""
        folder = self.root / "desired" / version
        folder.mkdir(parents=True)
        (folder / "tiny.yaml").write_text(fleet_manifest(model or self.model, precision=precision, extra=PREBUILT))
        if not cli:  # in-process: a command's start-up costs seconds on this shared machine
            pushed = bundle_push.push(folder, self.tag, key or self.key, self.steps, version=version,
                                      cosign_key=cosign_key or self.cosign_key, insecure=True,
                                      store=Store(self.root / "build-host" / "cache"))
            self.digests[version] = pushed.reference.split("@", 1)[1]
            return self.digests[version]
        done = subprocess.run([sys.executable, "-m", "npuctl", "bundle", "push", str(folder), self.tag,
                               "--key", str(key or self.key), "--steps", self.steps, "--version", version,
                               "--cosign-key", str(cosign_key or self.cosign_key), "--plain-http",
                               "--cache", str(self.root / "build-host" / "cache")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        _, hex_digest, _ = done.stdout.split("@", 1)[1].split(":", 2)
        self.digests[version] = f"sha256:{hex_digest}"
        return self.digests[version]

    def client(self) -> RegistryClient:
        return RegistryClient(self.registry.host, insecure=True)

    def new_variant(self, seed: int, precision: str) -> Path:
        """Another tiny model or precision, published by the build host (steps the agents have not fetched)."""
        model = self.root / "share" / f"tiny-{seed}.onnx"
        if not model.exists():
            tiny_model(model, seed=seed)
        manifest = self.root / "build-host" / f"seed-{seed}-{precision}" / "tiny.yaml"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(fleet_manifest(model, precision=precision, extra=PREBUILT))
        publish_artifacts(manifest, self.root / "build-host" / "cache", self.steps, "--plain-http")
        return model


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("oci-fleet")
    model = root / "share" / "tiny.onnx"
    model.parent.mkdir()
    tiny_model(model)
    registry = Registry(root / "registry").start()
    # The agents reach the steps through a proxy that can drop a blob download mid-way (16 KiB of a 48 KiB binary).
    proxy = CuttingProxy(registry.port, cut_after=16 << 10, armed=False).start()
    key = root / "bundle.key"
    public_key = bundles.write_private_key(key)
    cosign_key = root / "cosign.key"
    cosign_public = bundles.write_cosign_key(cosign_key).read_text()
    fleet = Fleet(root, model, registry, proxy, key, cosign_key, [], {}, {})
    for precision in ("w8a16", "w8a8"):  # the build host publishes both versions' variants ahead of time
        manifest = root / "build-host" / precision / "tiny.yaml"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(fleet_manifest(model, precision=precision, extra=PREBUILT))
        publish_artifacts(manifest, root / "build-host" / "cache", fleet.steps, "--plain-http")
    fleet.push("v1", "w8a16", cli=True)
    fleet.agents = [
        fleet_agent(root / f"agent-{soc}-{i}", soc=soc, bundle_url=fleet.tag, public_key=public_key,
                    artifacts_url={"url": f"oci://{proxy.host}/fleet/steps", "insecure": True}, interval=POLL_SECONDS,
                    source_options={"insecure": True, "cosignPublicKey": cosign_public}, model_roots=[root / "share"])
        for soc in ("x-elite", "x2-elite") for i in range(AGENTS_PER_SOC)]
    try:
        started = time.monotonic()
        start_all(fleet.agents)
        fleet.timings["launch_to_live"] = time.monotonic() - started
        yield fleet
    finally:
        for agent in fleet.agents:
            agent.stop()
        registry.stop()
        proxy.stop()
        print(f"\noci fleet timings (s): {json.dumps(fleet.timings)}")


def serving(fleet: Fleet) -> dict[str, str]:
    return {a.url: a.status("tiny")["servingGeneration"] for a in fleet.agents}


def assert_still_serving(fleet: Fleet, before: dict[str, str], version: str) -> None:
    for agent in fleet.agents:
        status = agent.status("tiny")
        assert status["phase"] == "Ready" and status["servingGeneration"] == before[agent.url]
        assert source_state(agent)["version"] == version
        with agent.client() as client:
            assert infer(client, "tiny", X).status_code == 200


def test_bundle_versions_from_the_registry_converge_with_steps_fetched_not_compiled(fleet: Fleet) -> None:
    fleet.timings["start_to_ready_v1"] = wait_all(fleet.agents, ready_on(precision="w8a16"), "v1 Ready")
    before = serving(fleet)
    fleet.push("v2", "w8a8")
    fleet.timings["converge_v2"] = wait_all(fleet.agents, ready_on(precision="w8a8"), "v2 (w8a8) Ready")
    for agent in fleet.agents:
        assert agent.status("tiny")["servingGeneration"] != before[agent.url]
        assert source_state(agent)["state"] == "Synced" and source_state(agent)["version"] == "v2"
        events = agent.events("tiny")
        ran = {e["message"].split()[0] for e in events if e["reason"] == "StepDone"}
        assert not ran & {"compile", "verify", "quantize"}, f"{agent.url} built {ran} instead of fetching"
        assert any(e["reason"] == "StepFetched" and e["message"].startswith("compile") for e in events)
    assert {a.status("tiny")["artifacts"][0]["socModel"] for a in fleet.agents[:AGENTS_PER_SOC]} == {60}
    assert {a.status("tiny")["artifacts"][0]["socModel"] for a in fleet.agents[AGENTS_PER_SOC:]} == {88}

    # Steps were pulled by the digests the bundles pin, never by tag, and each agent pulled only its own
    # SoC's context binaries: every compile step's binary went to the 6 agents of its SoC, once each.
    requests = [(method, path) for method, path, status in fleet.registry.requests() if status in (200, 206)]
    pins: dict[str, str] = {}
    with fleet.client() as client:
        for version in ("v1", "v2"):
            bundle = json.loads(client.blob("fleet/desired", _layer(client, fleet.digests[version]), 1 << 20))
            pins |= bundle["steps"]
        compiles = []
        for key, digest in pins.items():
            assert ("GET", f"/v2/fleet/steps/manifests/{digest}") in requests
            assert ("GET", f"/v2/fleet/steps/manifests/{key}") not in requests
            manifest = json.loads(client.manifest("fleet/steps", digest).data)  # type: ignore[union-attr]
            if manifest["annotations"]["dev.npuctl.step"] == "compile":
                record = json.loads(client.blob("fleet/steps", manifest["config"]["digest"], 1 << 20))
                compiles.append((record["details"]["soc_model"], record["details"]["precision"], max(manifest["layers"], key=lambda l: l["size"])))
    assert sorted((soc, precision) for soc, precision, _ in compiles) == [
        (60, "w8a16"), (60, "w8a8"), (88, "w8a16"), (88, "w8a8")]
    for soc, precision, binary in compiles:
        pulls = requests.count(("GET", f"/v2/fleet/steps/blobs/{binary['digest']}"))
        assert pulls == AGENTS_PER_SOC, (soc, precision, pulls)


def test_a_forged_bundle_is_refused_by_every_agent(fleet: Fleet) -> None:
    before = serving(fleet)
    forger = fleet.root / "forger"
    forger.mkdir()
    bundles.write_private_key(forger / "bundle.key")
    bundles.write_cosign_key(forger / "cosign.key")
    fleet.push("v3-forged", "w8a16", key=forger / "bundle.key", cosign_key=forger / "cosign.key")
    fleet.timings["refuse_forged"] = wait_all(
        fleet.agents, lambda a: source_state(a)["state"] == "Rejected", "the forged bundle Rejected")
    for agent in fleet.agents:
        assert "signature" in source_state(agent)["message"]
    assert_still_serving(fleet, before, "v2")


def test_a_replayed_older_bundle_is_refused_as_a_rollback(fleet: Fleet) -> None:
    before = serving(fleet)
    # Someone with write access to the tag points it back at v1: a bundle every key still verifies.
    with fleet.client() as client:
        old = client.manifest("fleet/desired", fleet.digests["v1"])
        assert old is not None
        client.push_manifest("fleet/desired", "stable", old.data)
    fleet.timings["refuse_rollback"] = wait_all(
        fleet.agents, lambda a: "a rollback" in source_state(a)["message"], "the replayed v1 Rejected")
    for agent in fleet.agents:
        assert source_state(agent)["state"] == "Rejected"
    assert_still_serving(fleet, before, "v2")


def test_a_bundle_pinning_other_digests_than_the_registry_serves_is_refused_and_nothing_loads(fleet: Fleet) -> None:
    before = serving(fleet)
    with fleet.client() as client:
        v2 = json.loads(client.blob("fleet/desired", _layer(client, fleet.digests["v2"]), 1 << 20))
        pins = v2["steps"]
        # A step replaced under its key (same record, a manifest with one more annotation: another digest).
        swapped_key = sorted(pins)[0]
        original = client.manifest("fleet/steps", swapped_key)
        assert original is not None
        changed = json.loads(original.data)
        changed["annotations"]["dev.npuctl.replaced"] = "yes"
        client.push_manifest("fleet/steps", swapped_key, json.dumps(changed).encode())
        # The build host's bundle, signed right, pins what it published.
        created = datetime.now(UTC).replace(microsecond=0)
        manifests = {"tiny.yaml": fleet_manifest(fleet.model, precision="w8a16", extra=PREBUILT)}
        bundle = bundles.Bundle("v4-mispinned", manifests, created, created + timedelta(days=1), pins)
        data = bundle.as_bytes()
        signature = bundles.sign(data, bundles.load_private_key(fleet.key.read_bytes()))
        reference = parse(fleet.tag)
        digest = push_bundle(client, reference, data, signature, bundle.version, bundles.timestamp(created))
        cosign.sign(client, reference, digest, fleet.cosign_key.read_bytes())
    try:
        fleet.timings["refuse_mispinned"] = wait_all(
            fleet.agents, lambda a: "pinned to" in source_state(a)["message"], "the mispinned bundle Rejected")
        for agent in fleet.agents:
            state = source_state(agent)
            assert state["state"] == "Rejected" and swapped_key[:12] in state["message"]
            assert [a["precision"] for a in agent.status("tiny")["artifacts"]] == ["w8a8"]
            assert not (agent.manifests / "fleet.bundle.yaml").read_text().count("v4-mispinned")
        assert_still_serving(fleet, before, "v2")
    finally:
        with fleet.client() as client:
            client.push_manifest("fleet/steps", swapped_key, original.data)


def test_a_download_cut_mid_way_resumes_and_a_tampered_binary_is_caught(fleet: Fleet) -> None:
    before = serving(fleet)
    model = fleet.new_variant(seed=1, precision="w8a16")
    with fleet.client() as client:  # the pins `bundle push` will write: the new steps' manifests
        pins = bundle_push.pins_for(fleet.root / "build-host" / "seed-1-w8a16",
                                    Store(fleet.root / "build-host" / "cache"), parse(fleet.steps), client)
        binaries = {}
        for pinned in pins.values():
            manifest = json.loads(client.manifest("fleet/steps", pinned).data)  # type: ignore[union-attr]
            record = json.loads(client.blob("fleet/steps", manifest["config"]["digest"], 1 << 20))
            if manifest["annotations"]["dev.npuctl.step"] == "compile":
                binaries[record["details"]["soc_model"]] = max(manifest["layers"], key=lambda layer: layer["size"])["digest"]
    # The X Elite binary: one bit flipped on the registry's disk. The X2 Elite binary: the first download of it
    # is cut off after 16 KiB.
    blob = fleet.registry.blob_file(binaries[60])
    tampered = bytearray(blob.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    blob.write_bytes(bytes(tampered))
    fleet.proxy.only = binaries[88].encode()
    fleet.proxy.ranges.clear()
    fleet.proxy.armed = True
    fleet.push("v5", "w8a16", model=model)

    x_elite, x2_elite = fleet.agents[:AGENTS_PER_SOC], fleet.agents[AGENTS_PER_SOC:]
    fleet.timings["converge_v5_x2_with_a_cut"] = wait_all(
        x2_elite, lambda a: source_state(a)["version"] == "v5" and ready_on(before[a.url], "w8a16")(a),
        "v5 on the X2 Elite half")
    assert fleet.proxy.cuts == 1
    resumed_at = [int(r.removeprefix("bytes=").rstrip("-")) for r in fleet.proxy.ranges]
    assert len(resumed_at) == 1 and 0 < resumed_at[0] < 16 << 10, fleet.proxy.ranges
    for agent in x2_elite:
        with agent.client() as client:
            assert infer(client, "tiny", X).status_code == 200

    def refused(agent: Agent) -> bool:
        return any(e["reason"] == "BuildFailed" and "the published file is corrupt" in e["message"]
                   for e in agent.events("tiny"))

    fleet.timings["refuse_tampered"] = wait_all(x_elite, refused, "the tampered binary refused on the X Elite half")
    for agent in x_elite:
        status = agent.status("tiny")
        assert status["phase"] == "Degraded" and status["servingGeneration"] == before[agent.url]
        with agent.client() as client:
            assert infer(client, "tiny", X).status_code == 200
        assert not any(p.read_bytes() == bytes(tampered) for p in agent.cache.rglob("model_ctx_qnn.bin"))


def test_a_registry_down_is_unreachable_and_everything_keeps_serving(fleet: Fleet) -> None:
    before = serving(fleet)
    fleet.registry.stop()
    try:
        fleet.timings["report_unreachable"] = wait_all(
            fleet.agents, lambda a: source_state(a)["state"] == "Unreachable", "the source Unreachable")
        for agent in fleet.agents:
            status = agent.status("tiny")  # the X Elite half is Degraded since the tampered binary
            assert status["phase"] in ("Ready", "Degraded") and status["servingGeneration"] == before[agent.url]
            assert source_state(agent)["version"] == "v5"
            with agent.client() as client:
                assert infer(client, "tiny", X).status_code == 200
    finally:
        fleet.registry.start()


def _layer(client: RegistryClient, digest: str) -> str:
    fetched = client.manifest("fleet/desired", digest)
    assert fetched is not None
    return str(json.loads(fetched.data)["layers"][0]["digest"])
