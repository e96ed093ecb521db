"""Redirects from registries: blob downloads may be redirected anywhere (registries hand them to S3 or a
CDN; the bytes are checked against their digest), manifests only within the registry; each redirect's body is
capped and a bounded read has a deadline. Against a scripted server on 127.0.0.1 (no registry binary needed)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from npuctl.artifacts.oci.auth import Credentials
from npuctl.artifacts.oci.client import DeadlineExceeded, DigestError, RegistryClient, RegistryError, digest_of
from tests.agent.hostile_server import HostileServer, endless, redirect, static, trickle

BLOB = b'{"layer": "bytes"}'
DIGEST = digest_of(BLOB)


@pytest.fixture
def servers() -> Iterator[tuple[HostileServer, HostileServer]]:
    registry, storage = HostileServer(), HostileServer()
    yield registry, storage
    registry.stop()
    storage.stop()


def client_of(server: HostileServer) -> RegistryClient:
    return RegistryClient(server.origin.removeprefix("http://"), insecure=True, credentials=Credentials("u", "p"))


def test_a_blob_may_redirect_to_storage_and_is_checked_there(servers: tuple[HostileServer, HostileServer]) -> None:
    registry, storage = servers
    registry.routes[f"/v2/fleet/blobs/{DIGEST}"] = redirect(f"{storage.origin}/s3/object?sig=1", 307)
    storage.routes["/s3/object"] = static(BLOB)
    with client_of(registry) as client:
        assert client.blob("fleet", DIGEST, 1 << 20) == BLOB
        storage.routes["/s3/object"] = static(b'{"layer": "other"}')
        with pytest.raises(DigestError):
            client.blob("fleet", DIGEST, 1 << 20)


def test_a_manifest_redirected_to_another_host_is_refused(servers: tuple[HostileServer, HostileServer]) -> None:
    registry, storage = servers
    registry.routes["/v2/fleet/manifests/pilot"] = redirect(f"{storage.origin}/v2/fleet/manifests/pilot")
    storage.routes["/v2/fleet/manifests/pilot"] = static(b"{}")
    with client_of(registry) as client, pytest.raises(RegistryError, match="only blob downloads may leave"):
        client.manifest("fleet", "pilot")
    assert storage.requests == []


def test_redirects_are_bounded_in_number_and_body(servers: tuple[HostileServer, HostileServer]) -> None:
    registry, _ = servers
    registry.routes[f"/v2/fleet/blobs/{DIGEST}"] = redirect(f"/v2/fleet/blobs/{DIGEST}")
    with client_of(registry) as client, pytest.raises(RegistryError, match="TooManyRedirects"):
        client.blob("fleet", DIGEST, 1 << 20)

    def fat_redirect(handler: object, server: HostileServer) -> None:
        handler.send_response(302)  # type: ignore[attr-defined]
        handler.send_header("Location", "/elsewhere")  # type: ignore[attr-defined]
        handler.end_headers()  # type: ignore[attr-defined]
        endless(None)(handler, server)  # type: ignore[arg-type]

    registry.routes["/v2/fleet/manifests/pilot"] = fat_redirect
    with client_of(registry) as client, pytest.raises(RegistryError, match="body over 65536 bytes"):
        client.manifest("fleet", "pilot")
    assert registry.sent < 32 << 20


def test_a_bounded_read_stops_at_its_deadline(servers: tuple[HostileServer, HostileServer]) -> None:
    registry, _ = servers
    registry.routes["/v2/fleet/manifests/pilot"] = trickle(0.2)
    with client_of(registry) as client, pytest.raises(DeadlineExceeded, match="still arriving at the deadline"):
        client.manifest("fleet", "pilot", deadline=time.monotonic() + 1)
