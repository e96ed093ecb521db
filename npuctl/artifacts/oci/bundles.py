"""A signed manifest bundle as an OCI artifact, under a tag a fleet follows:

    artifactType  application/vnd.npuctl.bundle.v1+json
    config        the OCI empty descriptor ({})
    layer         the bundle JSON, byte for byte (application/vnd.npuctl.bundle.v1+json), with npuctl's
                  ed25519 signature of those bytes in the annotation dev.npuctl.bundle.signature
    annotations   org.opencontainers.image.version / .created

Agents poll the tag with If-None-Match (registries' ETag is the manifest digest) and fetch the layer by
digest only when the tag moved. What the bundle means (signature, pins, rollback, expiry) is the agent's
business; this module moves bytes and checks digests."""

from __future__ import annotations

import json
from dataclasses import dataclass

from npuctl.artifacts.oci.client import OCI_MANIFEST, RegistryClient, digest_of
from npuctl.artifacts.oci.refs import Reference

BUNDLE_TYPE = "application/vnd.npuctl.bundle.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
SIGNATURE_ANNOTATION = "dev.npuctl.bundle.signature"
VERSION_ANNOTATION = "org.opencontainers.image.version"
CREATED_ANNOTATION = "org.opencontainers.image.created"


class NotABundle(ValueError):
    """The tag holds something other than an npuctl bundle."""


@dataclass(frozen=True)
class PulledBundle:
    digest: str
    """The bundle manifest's digest (what the tag pointed at)."""
    data: bytes
    """The bundle JSON."""
    signature: str
    """npuctl's ed25519 signature of `data` (base64), from the layer annotation."""


def push_bundle(client: RegistryClient, reference: Reference, data: bytes, signature: str, version: str,
                created: str) -> str:
    """Push the bundle and tag it; returns the manifest digest."""
    assert reference.tag is not None
    repository = reference.repository
    client.push_blob(repository, digest_of(EMPTY), EMPTY)
    client.push_blob(repository, digest_of(data), data)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": digest_of(EMPTY), "size": len(EMPTY)},
        "layers": [{"mediaType": BUNDLE_TYPE, "digest": digest_of(data), "size": len(data),
                    "annotations": {SIGNATURE_ANNOTATION: signature, "org.opencontainers.image.title": "bundle.json"}}],
        "annotations": {VERSION_ANNOTATION: version, CREATED_ANNOTATION: created},
    }
    return client.push_manifest(repository, reference.tag, json.dumps(manifest, sort_keys=True).encode())


def pull_bundle(client: RegistryClient, reference: Reference, etag: str | None, limit: int,
                deadline: float | None = None) -> PulledBundle | None:
    """The bundle at the reference's tag; None when the tag still points at `etag`'s manifest (304).
    Raises RegistryError (unreachable, refused, or bytes that do not match their digest; DeadlineExceeded past
    `deadline`, a time.monotonic()), NotABundle."""
    fetched = client.manifest(reference.repository, reference.tag or reference.digest or "", etag=etag,
                              deadline=deadline)
    if fetched is None:
        return None
    try:
        manifest = json.loads(fetched.data)
        layer = next(layer for layer in manifest["layers"] if layer["mediaType"] == BUNDLE_TYPE)
        signature = str(layer.get("annotations", {}).get(SIGNATURE_ANNOTATION, ""))
        digest = str(layer["digest"])
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise NotABundle(f"{reference} is not an npuctl bundle (artifactType {BUNDLE_TYPE}): {exc!r}") from exc
    return PulledBundle(fetched.digest, client.blob(reference.repository, digest, limit, deadline=deadline), signature)


def etag_of(digest: str) -> str:
    """The ETag a registry gives a manifest: its digest, quoted."""
    return f'"{digest}"'
