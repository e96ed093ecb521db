"""Cosign-compatible signatures, so IT's own tools can check what npuctl pushed (`cosign verify --key
cosign.pub --insecure-ignore-tlog HOST/REPO@sha256:...`). The legacy layout of cosign's SIGNATURE_SPEC:

    tag       sha256-<hex of the signed manifest's digest>.sig, in the signed manifest's repository
    manifest  an OCI image manifest with one layer per signature
    layer     application/vnd.dev.cosign.simplesigning.v1+json: the "simple signing" payload
              {"critical": {"identity": {"docker-reference": HOST/REPO},
                            "image": {"docker-manifest-digest": "sha256:..."},
                            "type": "cosign container image signature"}, "optional": null}
    annotation dev.cosignproject.cosign/signature: base64 of the ECDSA P-256 / SHA-256 signature (DER) of
              the payload's exact bytes

Keys are PEM: a PKCS#8 EC P-256 private key to sign (cosign's own encrypted key files convert with
`cosign import-key-pair`), the SubjectPublicKeyInfo public key `cosign verify --key` reads."""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from npuctl.artifacts.oci.client import OCI_MANIFEST, RegistryClient, RegistryError, digest_of
from npuctl.artifacts.oci.refs import Reference

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MAX_PAYLOAD_BYTES = 64 << 10


class SignatureError(ValueError):
    """A cosign signature that is missing, malformed, for another manifest, or not made by the configured key."""


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def payload(reference: Reference, digest: str) -> bytes:
    critical = {"identity": {"docker-reference": reference.name}, "image": {"docker-manifest-digest": digest},
                "type": SIGNATURE_TYPE}
    return json.dumps({"critical": critical, "optional": None}, separators=(",", ":")).encode()


def generate_key() -> tuple[bytes, bytes]:
    """(PKCS#8 PEM private key, PEM public key) of a new ECDSA P-256 pair."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def sign(client: RegistryClient, reference: Reference, digest: str, private_pem: bytes) -> str:
    """Push the cosign signature of manifest `digest`; returns the signature manifest's digest."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError("the cosign key is not an ECDSA P-256 private key (PKCS#8 PEM)")
    body = payload(reference, digest)
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    config = json.dumps({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(body)]}}, separators=(",", ":")).encode()
    repository = reference.repository
    client.push_blob(repository, digest_of(body), body)
    client.push_blob(repository, digest_of(config), config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": digest_of(config)},
                "layers": [{"mediaType": SIMPLE_SIGNING, "size": len(body), "digest": digest_of(body),
                            "annotations": {SIGNATURE_ANNOTATION: signature}}]}
    return client.push_manifest(repository, signature_tag(digest), json.dumps(manifest, separators=(",", ":")).encode())


def verify(client: RegistryClient, reference: Reference, digest: str, public_pem: str) -> None:
    """Raise SignatureError unless a signature at the `.sig` tag of `digest` verifies with `public_pem` and its
    payload names `digest`. RegistryError when the registry cannot be asked."""
    try:
        key = serialization.load_pem_public_key(public_pem.encode())
    except ValueError as exc:
        raise SignatureError(f"the cosign public key is not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("the cosign public key is not an ECDSA key")
    repository = reference.repository
    if client.head_manifest(repository, signature_tag(digest)) is None:
        raise SignatureError(f"no cosign signature at {reference.name}:{signature_tag(digest)}")
    fetched = client.manifest(repository, signature_tag(digest))
    assert fetched is not None
    problems = []
    for layer in json.loads(fetched.data).get("layers", []):
        if layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        try:
            body = client.blob(repository, layer["digest"], MAX_PAYLOAD_BYTES)
            signature = base64.b64decode(layer.get("annotations", {}).get(SIGNATURE_ANNOTATION, ""), validate=True)
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
            signed = json.loads(body)["critical"]
            if signed["image"]["docker-manifest-digest"] != digest or signed["type"] != SIGNATURE_TYPE:
                problems.append(f"a signature for {signed['image']['docker-manifest-digest']}")
                continue
            return
        except (InvalidSignature, binascii.Error) as exc:
            problems.append(f"a signature that does not verify with the cosign key ({type(exc).__name__})")
        except (RegistryError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"a malformed signature ({exc})")
    raise SignatureError(f"{reference.name}:{signature_tag(digest)} holds no valid cosign signature for {digest}: "
                         + ("; ".join(problems) or "no simple-signing layer"))
