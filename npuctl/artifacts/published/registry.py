"""Build steps as OCI artifacts. One image manifest per step, tagged by the step's key:

    artifactType  application/vnd.npuctl.step.v1+json
    config        the step's record.json, byte for byte (application/vnd.npuctl.step.record.v1+json)
    layers        one raw layer per file (application/vnd.npuctl.step.file.v1), digest = the store's sha256,
                  titled with org.opencontainers.image.title = the file's path in the step folder

The manifest is built from the record alone (sorted, no timestamps of its own), so publishing a step twice
gives the same digest. A reader fetches by key — or by the digest a signed bundle pins, so whoever can
write tags cannot swap a binary under a key — and checks every byte against its digest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from npuctl.artifacts.facts import AnyFacts, Facts
from npuctl.artifacts.oci import refs
from npuctl.artifacts.oci.auth import Credentials
from npuctl.artifacts.oci.client import OCI_MANIFEST, DigestError, RegistryClient, RegistryError, digest_of
from npuctl.artifacts.oci.refs import Reference
from npuctl.artifacts.store import RECORD, Record

if TYPE_CHECKING:
    from npuctl.artifacts.published.location import StoreLocation
    from npuctl.artifacts.result import BuildResult
    from npuctl.artifacts.store import Store

STEP_TYPE = "application/vnd.npuctl.step.v1+json"
RECORD_TYPE = "application/vnd.npuctl.step.record.v1+json"
FILE_TYPE = "application/vnd.npuctl.step.file.v1"
TITLE = "org.opencontainers.image.title"
STEP_ANNOTATION = "dev.npuctl.step"
MAX_RECORD_BYTES = 1 << 20


class StepError(RegistryError):
    """A step manifest or record that is not what its key (or pinned digest) promises."""


@dataclass(frozen=True)
class PushedSteps:
    digests: dict[str, str]
    """Step key -> manifest digest, for every step pushed or already there."""
    blobs_written: int
    bytes_written: int


def step_manifest(record: Record[Facts], record_bytes: bytes) -> bytes:
    layers = [{"mediaType": FILE_TYPE, "digest": f"sha256:{f.sha256}", "size": f.size,
               "annotations": {TITLE: f.path}} for f in sorted(record.files, key=lambda f: f.path)]
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": STEP_TYPE,
        "config": {"mediaType": RECORD_TYPE, "digest": digest_of(record_bytes), "size": len(record_bytes)},
        "layers": layers, "annotations": {STEP_ANNOTATION: record.step},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def push_steps(records: list[Record[Facts]], client: RegistryClient, repository: str) -> PushedSteps:
    """Push each record's files, then its record, then the manifest tagged by its key (in that order: a
    registry refuses a manifest naming blobs it lacks, and a reader never sees a tag without its files)."""
    digests: dict[str, str] = {}
    written = size = 0
    for record in records:
        if record.key in digests:
            continue
        for stored in record.files:
            if client.push_blob(repository, f"sha256:{stored.sha256}", record.path(stored.path)):
                written, size = written + 1, size + stored.size
        record_bytes = (record.folder / RECORD).read_bytes()
        client.push_blob(repository, digest_of(record_bytes), record_bytes)
        digests[record.key] = client.push_manifest(repository, record.key, step_manifest(record, record_bytes))
    return PushedSteps(digests, written, size)


def publish(results: list[BuildResult], store: Store, location: str, insecure: bool = False) -> PushedSteps:
    """`npuctl build --publish oci://HOST/REPO`: every stored step of `results`, pushed by key. Credentials from
    docker's config.json (`docker login`) and credential helpers. Raises ReferenceError, RegistryError."""
    from npuctl.artifacts.published.publish import stored_records

    reference = refs.parse(location, allow_tag=False)
    with RegistryClient(reference.host, insecure=insecure) as client:
        return push_steps([r for result in results for r in stored_records(result, store)], client,
                          reference.repository)


class OciStepSource:
    """A step repository as a published store (`artifactSources: [oci://HOST/REPO]`). `pins` (key -> manifest
    digest, from the signed bundles an agent follows): a pinned step is fetched by that digest only."""

    def __init__(self, reference: Reference, client: RegistryClient, pins: dict[str, str] | None = None) -> None:
        self.reference = reference
        self.location = str(reference)
        self.client = client
        self.pins = pins or {}
        self.resumed = 0
        """Blob downloads resumed with Range (for tests and figures)."""

    def fetch_step(self, step: str, key: str, workdir: Path) -> Record[AnyFacts] | None:
        from npuctl.artifacts.published.location import FetchError, safe_relative

        repository = self.reference.repository
        pinned = self.pins.get(key)
        try:
            if pinned is None and self.client.head_manifest(repository, key) is None:
                return None
            manifest = self.client.manifest(repository, pinned or key)
            assert manifest is not None  # no etag was sent
            layers, config = _read_manifest(manifest.data, self.location, key)
            record_bytes = self.client.blob(repository, config, MAX_RECORD_BYTES)
            record = Record.from_storage(json.loads(record_bytes), workdir)
            if (record.key, record.step) != (key, step):
                raise StepError(f"{self.location}:{key[:12]} describes {record.step} {record.key[:12]}, "
                                f"not {step} {key[:12]}")
            for stored in record.files:
                digest = f"sha256:{stored.sha256}"
                if (digest, stored.path) not in layers:
                    raise StepError(f"{self.location}:{key[:12]}: the manifest has no layer {digest[:19]}... "
                                    f"titled {stored.path!r}")
                target = workdir / safe_relative(stored.path, self.location)
                target.parent.mkdir(parents=True, exist_ok=True)
                self.resumed += self.client.download(repository, digest, stored.size, target)
        except DigestError as exc:
            raise FetchError(f"{exc}; the published file is corrupt") from exc
        except RegistryError as exc:
            raise FetchError(str(exc)) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError(f"{self.location}:{key[:12]} is not a step record: {exc}") from exc
        return record

    def close(self) -> None:
        self.client.close()


def _read_manifest(data: bytes, location: str, key: str) -> tuple[set[tuple[str, str]], str]:
    """((layer digest, title) of each layer, config digest) of a step manifest."""
    manifest = json.loads(data)
    if manifest.get("artifactType") != STEP_TYPE or manifest.get("config", {}).get("mediaType") != RECORD_TYPE:
        raise StepError(f"{location}:{key[:12]} is not an npuctl step (artifactType {manifest.get('artifactType')!r}, "
                        f"expected {STEP_TYPE!r})")
    layers = {(layer["digest"], layer.get("annotations", {}).get(TITLE, "")) for layer in manifest.get("layers", [])}
    return layers, str(manifest["config"]["digest"])


def open_registry(location: StoreLocation, pins: dict[str, str] | None) -> OciStepSource:
    """Raises ValueError (a ReferenceError or RegistryError message) for a bad reference or credentials."""
    reference = refs.parse(location.url, allow_tag=False)
    credentials = (Credentials(location.username, location.password.get_secret_value() if location.password else "")
                   if location.username else None)
    client = RegistryClient(reference.host, insecure=location.insecure, credentials=credentials)
    return OciStepSource(reference, client, pins)
