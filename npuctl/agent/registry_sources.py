"""Following a bundle in an OCI registry (`sources: [{url: oci://HOST/REPO:TAG}]`): a conditional GET of the
tag's manifest (If-None-Match: the digest in effect), the bundle layer by digest when the tag moved, the
cosign signature when the source names a cosign key, and — before anything is applied — the bundle's step
pins checked against the registries the agent fetches steps from. Blocking calls: the poller runs them in a
thread."""

from __future__ import annotations

from dataclasses import dataclass

from npuctl.agent.bundles import MAX_BUNDLE_BYTES, BundleError
from npuctl.agent.config import ManifestSource
from npuctl.artifacts.oci import cosign, refs
from npuctl.artifacts.oci.auth import Credentials
from npuctl.artifacts.oci.bundles import etag_of, pull_bundle
from npuctl.artifacts.oci.client import RegistryClient
from npuctl.artifacts.published.location import StoreLocation


@dataclass(frozen=True)
class Pulled:
    digest: str
    data: bytes
    signature: str


def client_for(url: str, insecure: bool, username: str | None, password: str | None) -> RegistryClient:
    """Raises RegistryError when docker's config.json cannot be read."""
    credentials = Credentials(username, password or "") if username else None
    return RegistryClient(refs.parse(url).host, insecure=insecure, credentials=credentials)


class RegistryFollower:
    """One oci:// source. `poll` raises RegistryError (Unreachable) or ValueError: BundleError, NotABundle,
    SignatureError (Rejected)."""

    def __init__(self, source: ManifestSource) -> None:
        self.source = source
        self.reference = refs.parse(source.url, need_tag=True)
        self._client: RegistryClient | None = None

    def poll(self, digest_in_effect: str | None, deadline: float) -> Pulled | None:
        """The bundle at the tag, None when the tag still names `digest_in_effect`. DeadlineExceeded when the
        registry is still sending at `deadline` (time.monotonic())."""
        client = self._connect()
        pulled = pull_bundle(client, self.reference, etag_of(digest_in_effect) if digest_in_effect else None,
                             MAX_BUNDLE_BYTES, deadline)
        if pulled is None:
            return None
        if self.source.cosign_public_key:
            cosign.verify(client, self.reference, pulled.digest, self.source.cosign_public_key)
        return Pulled(pulled.digest, pulled.data, pulled.signature)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _connect(self) -> RegistryClient:
        if self._client is None:
            password = self.source.password.get_secret_value() if self.source.password else None
            self._client = client_for(self.source.url, self.source.insecure, self.source.username, password)
        return self._client


def check_pins(steps: dict[str, str], registries: list[StoreLocation]) -> None:
    """Raise BundleError unless, for every pinned step, the first registry that has the key serves the pinned
    manifest under it. RegistryError when a registry cannot be asked."""
    if not steps or not registries:
        return
    clients = [(r, client_for(r.url, r.insecure, r.username, r.password.get_secret_value() if r.password else None))
               for r in registries]
    try:
        for key, pinned in sorted(steps.items()):
            for location, client in clients:
                served = client.head_manifest(refs.parse(location.url).repository, key)
                if served is None:
                    continue
                if served != pinned:
                    raise BundleError(f"step {key[:12]} is pinned to {pinned[:19]}... but {location.url} serves "
                                      f"{served[:19]}... under its key (a step replaced under its key?)")
                break
            else:
                raise BundleError(f"step {key[:12]} (pinned {pinned[:19]}...) is in none of the artifact "
                                  f"registries ({', '.join(r.url for r in registries)})")
    finally:
        for _, client in clients:
            client.close()
