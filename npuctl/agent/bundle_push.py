"""`npuctl bundle push`: a folder of manifests as a signed bundle in an OCI registry, pinning the manifest
digest of every build step the manifests need (found in the local store, then asked of the step repository:
what a fleet's agents will be allowed to fetch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from npuctl.agent import bundles
from npuctl.artifacts.oci import cosign, refs
from npuctl.artifacts.oci.bundles import push_bundle
from npuctl.artifacts.oci.client import RegistryClient
from npuctl.artifacts.pipeline import survey
from npuctl.artifacts.store import Store
from npuctl.schema import load_file


@dataclass(frozen=True)
class Pushed:
    reference: str
    """oci://HOST/REPO@sha256:... of the bundle manifest."""
    version: str
    manifests: int
    pins: int
    cosign_signature: str | None
    """Digest of the cosign signature manifest, when signed."""


def pins_for(folder: Path, store: Store, steps: refs.Reference, client: RegistryClient) -> dict[str, str]:
    """Step key -> manifest digest in `steps` for every stored step of every manifest in `folder`. Raises
    BundleError naming the manifest and step when one is not built here or not in the step repository."""
    pins: dict[str, str] = {}
    for file in sorted(folder.glob("*.y*ml")):
        for deployment in load_file(file, folder).deployments:
            found = survey(deployment, store=store)
            if found.next_step is not None:
                raise bundles.BundleError(
                    f"{file}: {deployment.name}: step {found.next_step} is not built in {store.root}; build and "
                    f"publish it first: npuctl build -f {file} --all-targets --publish {steps}")
            for run in found.stored:
                digest = client.head_manifest(steps.repository, run.key)
                if digest is None:
                    raise bundles.BundleError(
                        f"{file}: {deployment.name}: step {run.name} ({run.key[:12]}) is not in {steps}; publish "
                        f"it first: npuctl build -f {file} --all-targets --publish {steps}")
                pins[run.key] = digest
    return pins


def push(folder: Path, target: str, key_file: Path, steps: str, *, version: str | None = None,
         expires_in: timedelta = bundles.DEFAULT_VALIDITY, cosign_key: Path | None = None, insecure: bool = False,
         store: Store | None = None, now: datetime | None = None) -> Pushed:
    """Raises BundleError (bad manifests, unbuilt or unpublished steps, bad key), ReferenceError, RegistryError."""
    reference = refs.parse(target, need_tag=True)
    steps_reference = refs.parse(steps, allow_tag=False)
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    key = bundles.load_private_key(key_file.read_bytes())
    packed = bundles.pack(folder, version or bundles.default_version(created), created, expires_in)
    with RegistryClient(steps_reference.host, insecure=insecure) as step_client:
        pins = pins_for(folder, store or Store(), steps_reference, step_client)
    bundle = bundles.Bundle(packed.version, packed.manifests, created, created + expires_in, pins)
    data = bundle.as_bytes()
    with RegistryClient(reference.host, insecure=insecure) as client:
        digest = push_bundle(client, reference, data, bundles.sign(data, key), bundle.version,
                             bundles.timestamp(created))
        signature = cosign.sign(client, reference, digest, cosign_key.read_bytes()) if cosign_key else None
    return Pushed(str(reference.with_digest(digest)), bundle.version, len(bundle.manifests), len(pins), signature)
