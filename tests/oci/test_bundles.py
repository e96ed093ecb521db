"""Bundles in a real registry: the cosign signature checked the way the cosign spec (specs/SIGNATURE_SPEC.md,
"simple signing") describes it, written here independently of npuctl's verifier; the agent's verifier refusing
other keys, other digests and missing signatures; and the poller's rules (rollback across a restart, expiry,
conditional polls answered 304)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from npuctl.agent import bundles
from npuctl.agent.config import ManifestSource
from npuctl.agent.registry_sources import RegistryFollower
from npuctl.agent.sources import SourcePoller
from npuctl.artifacts.oci import cosign
from npuctl.artifacts.oci.bundles import push_bundle
from npuctl.artifacts.oci.client import RegistryClient
from npuctl.artifacts.oci.refs import parse
from tests.oci.registry import Registry

MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: tiny
spec:
  model:
    source: file:/models/tiny.onnx
    task: tensor
  precision: {precision}
  targets: [x-elite]
"""
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def push(registry: Registry, tag: str, version: str, key: bytes, created: datetime,
         expires: datetime | None = None, cosign_key: bytes | None = None) -> str:
    bundle = bundles.Bundle(version, {"tiny.yaml": MANIFEST.format(precision="w8a16")}, created,
                            expires or created + timedelta(days=1))
    data = bundle.as_bytes()
    reference = parse(f"oci://{registry.host}/fleet/desired:{tag}")
    with RegistryClient(registry.host, insecure=True) as client:
        digest = push_bundle(client, reference, data, bundles.sign(data, bundles.load_private_key(key)), version,
                             bundles.timestamp(created))
        if cosign_key:
            cosign.sign(client, reference, digest, cosign_key)
    return digest


def test_the_cosign_signature_is_what_cosign_verify_key_checks(registry: Registry) -> None:
    key, _ = bundles.generate_key()
    private, public = cosign.generate_key()
    digest = push(registry, "signed", "v1", key, datetime.now(UTC), cosign_key=private)

    # From the spec: the signature manifest sits at tag sha256-<hex>.sig in the same repository ...
    base = f"http://{registry.host}/v2/fleet/desired"
    signature_manifest = httpx.get(f"{base}/manifests/sha256-{digest.removeprefix('sha256:')}.sig",
                                   headers={"Accept": ACCEPT})
    assert signature_manifest.status_code == 200
    manifest = signature_manifest.json()
    assert manifest["mediaType"] == ACCEPT and manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    # ... each layer a simple-signing payload, the base64 signature in its annotation ...
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = httpx.get(f"{base}/blobs/{layer['digest']}").content
    assert json.loads(payload) == {"critical": {"identity": {"docker-reference": f"{registry.host}/fleet/desired"},
                                                "image": {"docker-manifest-digest": digest},
                                                "type": "cosign container image signature"},
                                   "optional": None}
    # ... an ECDSA P-256 signature (ASN.1 DER) over the payload's SHA-256, by the PEM public key cosign takes.
    public_key = serialization.load_pem_public_key(public)
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    public_key.verify(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]), payload,
                      ec.ECDSA(hashes.SHA256()))
    # The bundle manifest it signs is the one the tag names.
    assert httpx.head(f"{base}/manifests/signed", headers={"Accept": ACCEPT}).headers["docker-content-digest"] == digest


def test_the_agent_refuses_another_key_another_digest_and_no_signature(registry: Registry) -> None:
    key, _ = bundles.generate_key()
    private, public = cosign.generate_key()
    other_private, _ = cosign.generate_key()
    now = datetime.now(UTC)
    signed = push(registry, "a", "a", key, now, cosign_key=private)
    by_other = push(registry, "b", "b", key, now + timedelta(seconds=1), cosign_key=other_private)
    unsigned = push(registry, "c", "c", key, now + timedelta(seconds=2))
    reference = parse(f"oci://{registry.host}/fleet/desired:a")
    with RegistryClient(registry.host, insecure=True) as client:
        cosign.verify(client, reference, signed, public.decode())
        with pytest.raises(cosign.SignatureError, match="does not verify with the cosign key"):
            cosign.verify(client, reference, by_other, public.decode())
        with pytest.raises(cosign.SignatureError, match="no cosign signature"):
            cosign.verify(client, reference, unsigned, public.decode())
        # A valid signature copied to another manifest's .sig tag names the digest it was made for.
        copied = client.manifest("fleet/desired", cosign.signature_tag(signed))
        assert copied is not None
        client.push_manifest("fleet/desired", cosign.signature_tag(unsigned), copied.data)
        with pytest.raises(cosign.SignatureError, match=f"a signature for {signed}"):
            cosign.verify(client, reference, unsigned, public.decode())


def test_rollback_is_refused_across_a_restart_unless_allowed_and_expiry_is_reported(
        registry: Registry, tmp_path: Path) -> None:
    key, public = bundles.generate_key()
    now = datetime.now(UTC).replace(microsecond=0)
    v1 = push(registry, "fleet", "v1", key, now - timedelta(hours=2))
    push(registry, "fleet", "v2", key, now - timedelta(hours=1), expires=now + timedelta(seconds=2))
    source = ManifestSource(name="fleet", url=f"oci://{registry.host}/fleet/desired:fleet", public_key=public,
                            insecure=True)

    def poller(source: ManifestSource) -> tuple[SourcePoller, RegistryFollower]:
        return SourcePoller([source], tmp_path / "manifests", lambda: None, state=tmp_path / "state"), \
            RegistryFollower(source)

    first, follower = poller(source)
    first.poll_registry(follower)
    assert (first.states["fleet"].state, first.states["fleet"].version) == ("Synced", "v2")
    polls = len(registry.requests())
    first.poll_registry(follower)  # unchanged tag: If-None-Match answered 304, nothing else asked
    assert registry.requests()[polls:] == [("GET", "/v2/fleet/desired/manifests/fleet", 304)]
    follower.close()

    with RegistryClient(registry.host, insecure=True) as client:  # the tag is pointed back at v1
        old = client.manifest("fleet/desired", v1)
        assert old is not None
        client.push_manifest("fleet/desired", "fleet", old.data)
    restarted, follower = poller(source)  # a new process: what was in effect is read from the state folder
    assert restarted.states["fleet"].version == "v2"
    restarted.poll_registry(follower)
    state = restarted.states["fleet"]
    assert state.state == "Rejected" and "a rollback; set allowRollback: true" in state.message
    assert state.version == "v2" and "v2" in (tmp_path / "manifests" / "fleet.bundle.yaml").read_text()
    follower.close()

    allowing = source.model_copy(update={"allow_rollback": True})
    permissive, follower = poller(allowing)
    permissive.poll_registry(follower)
    assert (permissive.states["fleet"].state, permissive.states["fleet"].version) == ("Synced", "v1")
    follower.close()


def test_a_bundle_past_its_expiry_is_refused_and_one_in_effect_is_reported(registry: Registry, tmp_path: Path) -> None:
    key, public = bundles.generate_key()
    now = datetime.now(UTC).replace(microsecond=0)
    push(registry, "expired", "old", key, now - timedelta(days=2), expires=now - timedelta(days=1))
    source = ManifestSource(name="fleet", url=f"oci://{registry.host}/fleet/desired:expired", public_key=public,
                            insecure=True)
    poller, follower = SourcePoller([source], tmp_path, lambda: None), RegistryFollower(source)
    poller.poll_registry(follower)
    assert poller.states["fleet"].state == "Rejected" and "expired at" in poller.states["fleet"].message

    # Expiry times are whole seconds: a fresh clock and a few seconds' room, so the push and the first poll
    # land before it.
    created = datetime.now(UTC).replace(microsecond=0)
    expires = created + timedelta(seconds=5)
    push(registry, "expiring", "soon", key, created, expires=expires)
    soon = source.model_copy(update={"url": f"oci://{registry.host}/fleet/desired:expiring"})
    poller, follower = SourcePoller([soon], tmp_path, lambda: None), RegistryFollower(soon)
    poller.poll_registry(follower)
    assert poller.states["fleet"].state == "Synced", poller.states["fleet"].message
    # the bundle in effect expires; the tag stays where it is
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    poller.poll_registry(follower)  # 304: a frozen mirror
    state = poller.states["fleet"]
    assert state.state == "Rejected" and "expired" in state.message and "serves no newer one" in state.message
    follower.close()
