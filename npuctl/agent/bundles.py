"""Manifest bundles: the desired state a fleet publishes, signed with ed25519.

A bundle is one JSON document, `{"apiVersion", "kind": "ManifestBundle", "version", "manifests":
{"<file>.yaml": "<yaml text>"}}`, served by any static web server next to its detached signature
(`<bundle>.sig`: base64 of the ed25519 signature over the bundle's exact bytes). JSON instead of an
archive: there are no paths to slip out of the folder, only file names checked against one pattern.

Signed with the rest: `created` and `expires` (UTC, ISO 8601), which `npuctl bundle pack` and `push` always
write: an agent refuses a bundle created before the one in effect, and once it has applied a dated bundle it
refuses an undated one (no rollback unless its source allows it); it refuses a bundle past its expiry and reports
the one in effect once it expires. Bundles without dates (written before pack dated them) are still read. `steps`:
step key -> OCI manifest digest of every build step the manifests need (pins: an agent fetches those steps
by that digest only, and refuses a bundle whose pins the registry does not serve under the keys).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from npuctl.agent.files import SAFE_FILE
from npuctl.errors import NpuctlError
from npuctl.schema import API_VERSION, ManifestError, load_text

KIND = "ManifestBundle"
MAX_BUNDLE_BYTES = 8 << 20
DEFAULT_VALIDITY = timedelta(days=30)
"""How long a packed or pushed bundle is valid unless the publisher says otherwise (--expires-in)."""
_KEY = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class BundleError(NpuctlError, ValueError):
    """A bundle that must not be applied: bad signature, bad format, or invalid manifests."""


@dataclass(frozen=True)
class Bundle:
    version: str
    manifests: dict[str, str]
    """File name -> YAML text."""
    created: datetime | None = None
    expires: datetime | None = None
    steps: dict[str, str] = field(default_factory=dict)
    """Step key -> pinned OCI manifest digest."""

    def as_bytes(self) -> bytes:
        data: dict[str, object] = {"apiVersion": API_VERSION, "kind": KIND, "version": self.version,
                                   "manifests": self.manifests}
        if self.created:
            data["created"] = timestamp(self.created)
        if self.expires:
            data["expires"] = timestamp(self.expires)
        if self.steps:
            data["steps"] = self.steps
        return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")

    def as_yaml(self) -> str:
        """Every manifest in one multi-document YAML text: written as one file, it is replaced in one rename."""
        parts = [f"# {name} (bundle version {self.version})\n{text.rstrip()}\n" for name, text in sorted(self.manifests.items())]
        return "---\n".join(parts)


def pack(folder: Path, version: str, created: datetime, valid_for: timedelta = DEFAULT_VALIDITY) -> Bundle:
    """A bundle of the manifest files directly in `folder` (each must be valid), created at `created` (to the
    second) and expiring `valid_for` later: an agent can then refuse an older replayed one."""
    if valid_for <= timedelta(0):
        raise BundleError(f"a bundle must be valid for some time, not {valid_for}")
    manifests = {file.name: file.read_text(encoding="utf-8") for file in sorted(folder.glob("*.y*ml"))}
    created = created.astimezone(UTC).replace(microsecond=0)
    bundle = Bundle(version, manifests, created, created + valid_for)
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
    steps = raw.get("steps") or {}
    if not isinstance(steps, dict) or not all(isinstance(k, str) and _KEY.match(k) and isinstance(v, str)
                                              and _DIGEST.match(v) for k, v in steps.items()):
        raise BundleError("steps must map step keys (64 hex digits) to manifest digests (sha256:<64 hex>)")
    bundle = Bundle(str(raw.get("version", "")), manifests, _time(raw, "created"), _time(raw, "expires"), steps)
    if bundle.created and bundle.expires and bundle.expires <= bundle.created:
        raise BundleError(f"expires ({timestamp(bundle.expires)}) is not after created ({timestamp(bundle.created)})")
    check(bundle)
    return bundle


def _time(raw: dict[str, object], name: str) -> datetime | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BundleError(f"{name}: {value!r} is not an ISO 8601 time (e.g. 2026-12-01T19:30:00Z)")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BundleError(f"{name}: {value!r} is not an ISO 8601 time (e.g. 2026-12-01T19:30:00Z)") from exc
    if parsed.tzinfo is None:
        raise BundleError(f"{name}: {value!r} has no time zone (write it in UTC, ending in Z)")
    return parsed


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_version(moment: datetime) -> str:
    """A bundle version from its creation time: 20261201T193000Z (sorts as it ages)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


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
    _write_new(path, pem)
    return public


def write_cosign_key(path: Path) -> Path:
    """Write a new ECDSA P-256 key for cosign signatures to `path` (owner-only) and its public key to
    `path`.pub. Returns the public key's path."""
    from npuctl.artifacts.oci.cosign import generate_key as cosign_key

    private, public = cosign_key()
    public_path = path.with_name(path.name + ".pub")
    _write_new(path, private)
    public_path.write_bytes(public)
    return public_path


def _write_new(path: Path, data: bytes) -> None:
    if path.exists():
        raise BundleError(f"{path} exists; refusing to overwrite a signing key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


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
