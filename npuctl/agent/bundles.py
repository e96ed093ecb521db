"""Manifest bundles: the desired state a fleet publishes, signed with ed25519.

A bundle is one JSON document, `{"apiVersion", "kind": "ManifestBundle", "version", "manifests":
{"<file>.yaml": "<yaml text>"}}`, served by any static web server next to its detached signature
(`<bundle>.sig`: base64 of the ed25519 signature over the bundle's exact bytes). JSON instead of an
archive: there are no paths to slip out of the folder, only file names checked against one pattern.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from npuctl.agent.files import SAFE_FILE
from npuctl.schema import API_VERSION, ManifestError, load_text

KIND = "ManifestBundle"
MAX_BUNDLE_BYTES = 8 << 20


class BundleError(ValueError):
    """A bundle that must not be applied: bad signature, bad format, or invalid manifests."""


@dataclass(frozen=True)
class Bundle:
    version: str
    manifests: dict[str, str]
    """File name -> YAML text."""

    def as_bytes(self) -> bytes:
        data = {"apiVersion": API_VERSION, "kind": KIND, "version": self.version, "manifests": self.manifests}
        return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")

    def as_yaml(self) -> str:
        """Every manifest in one multi-document YAML text: written as one file, it is replaced in one rename."""
        parts = [f"# {name} (bundle version {self.version})\n{text.rstrip()}\n" for name, text in sorted(self.manifests.items())]
        return "---\n".join(parts)


def pack(folder: Path, version: str) -> Bundle:
    """A bundle of the manifest files directly in `folder`; each must be valid."""
    manifests = {file.name: file.read_text(encoding="utf-8") for file in sorted(folder.glob("*.y*ml"))}
    bundle = Bundle(version, manifests)
    check(bundle)
    return bundle


def parse(data: bytes) -> Bundle:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is {len(data)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"not a bundle (JSON): {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") != KIND or not isinstance(raw.get("manifests"), dict):
        raise BundleError(f"not a {KIND}: expected an object with kind {KIND!r} and a manifests mapping")
    manifests = raw["manifests"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifests.items()):
        raise BundleError("manifests must map file names to YAML text")
    bundle = Bundle(str(raw.get("version", "")), manifests)
    check(bundle)
    return bundle


def check(bundle: Bundle) -> None:
    """Refuse unsafe file names and invalid manifests (all errors named, with file:line:col)."""
    bad_names = [name for name in bundle.manifests if not SAFE_FILE.match(name)]
    if bad_names:
        raise BundleError(f"unsafe manifest file names: {', '.join(map(repr, bad_names))}")
    errors: list[ManifestError] = []
    for name, text in bundle.manifests.items():
        errors += load_text(text, name).errors
    if errors:
        raise BundleError("invalid manifests: " + "; ".join(map(str, errors[:5])))


def generate_key() -> tuple[bytes, str]:
    """(private key PEM, public key as base64 of its 32 raw bytes — what agent configs hold)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, public_key_text(key.public_key())


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("the signing key is not an ed25519 private key")
    return key


def sign(data: bytes, key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(data)).decode()


def signature_location(bundle: str) -> str:
    """Where a bundle's detached signature lives: its own path or URL + `.sig`."""
    return f"{bundle}.sig"


def write_private_key(path: Path) -> str:
    """Write a new signing key to `path` (owner-only; never over an existing file). Returns its public key."""
    pem, public = generate_key()
    if path.exists():
        raise BundleError(f"{path} exists; refusing to overwrite a signing key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return public


def write_signature(bundle_file: Path, data: bytes, key_file: Path) -> Path:
    """Sign `data` (the bundle's bytes) with the PEM key in `key_file`; write the signature beside the bundle."""
    try:
        signature = sign(data, load_private_key(key_file.read_bytes()))
    except ValueError as exc:
        raise BundleError(f"{key_file}: {exc}") from exc
    path = Path(signature_location(str(bundle_file)))
    path.write_text(signature + "\n", encoding="utf-8")
    return path


def verify(data: bytes, signature: str, public_key: str) -> None:
    """Raise BundleError unless `signature` over `data` was made by `public_key`'s private key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(base64.b64decode(signature.strip(), validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise BundleError("the bundle's signature does not verify with this agent's public key") from exc
