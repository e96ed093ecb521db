"""Build steps in a real registry (docker-registry 2.8 on 127.0.0.1): the manifest format other tools see,
fetching with digest checks, a download cut mid-way resumed with Range, a tampered blob caught, pins, and
the auth a locked registry asks for (basic from the agent config, docker's config.json, a credential helper)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import httpx
import pytest

from npuctl.artifacts.facts import Compile
from npuctl.artifacts.oci.auth import Credentials
from npuctl.artifacts.oci.client import RegistryClient
from npuctl.artifacts.published.fetch import open_source
from npuctl.artifacts.published.location import FetchError, StoreLocation
from npuctl.artifacts.published.registry import FILE_TYPE, RECORD_TYPE, STEP_TYPE, TITLE, push_steps
from npuctl.artifacts.store import RECORD, sha256_file
from tests.oci.conftest import stored_step
from tests.oci.registry import CuttingProxy, Registry
from tests.oci.token_server import TokenServer

KEY = "1f" * 32
BIG = os.urandom(3 << 20)
FILES = {"model_ctx.onnx": b"wrapper bytes", "model.bin": BIG}


@pytest.fixture(scope="module")
def published(registry: Registry, tmp_path_factory: pytest.TempPathFactory):  # -> (record, digest)
    record = stored_step(tmp_path_factory.mktemp("build-host"), KEY, FILES)
    with RegistryClient(registry.host, insecure=True) as client:
        pushed = push_steps([record], client, "fleet/steps")
    return record, pushed.digests[KEY]


def test_a_step_is_an_oci_image_manifest_tagged_by_its_key_with_the_stores_digests(registry: Registry,
                                                                                     published) -> None:
    record, digest = published
    response = httpx.get(f"http://{registry.host}/v2/fleet/steps/manifests/{KEY}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert response.status_code == 200 and response.headers["docker-content-digest"] == digest
    manifest = response.json()
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == STEP_TYPE and manifest["config"]["mediaType"] == RECORD_TYPE
    config = httpx.get(f"http://{registry.host}/v2/fleet/steps/blobs/{manifest['config']['digest']}").content
    assert config == (record.folder / RECORD).read_bytes()
    assert sorted((layer["annotations"][TITLE], layer["digest"], layer["mediaType"]) for layer in manifest["layers"]) \
        == sorted((name, f"sha256:{sha256_file(record.path(name))}", FILE_TYPE) for name in FILES)


def test_publishing_again_uploads_nothing_and_keeps_the_digest(registry: Registry, published) -> None:
    record, digest = published
    with RegistryClient(registry.host, insecure=True) as client:
        again = push_steps([record], client, "fleet/steps")
    assert again.digests == {KEY: digest} and again.blobs_written == 0


def test_a_fetched_step_matches_what_was_built(registry: Registry, published, tmp_path: Path) -> None:
    source = open_source(StoreLocation(url=f"oci://{registry.host}/fleet/steps", insecure=True))
    try:
        assert source.fetch_step("compile", "2e" * 32, tmp_path / "none") is None, "a key nobody published"
        record = source.fetch_step("compile", KEY, tmp_path)
    finally:
        source.close()
    assert record is not None and record.key == KEY and isinstance(record.details, Compile) and record.details.soc_model == 60
    assert {name: (tmp_path / name).read_bytes() for name in FILES} == FILES


def test_a_download_cut_mid_way_resumes_with_range(registry: Registry, published, tmp_path: Path) -> None:
    proxy = CuttingProxy(registry.port, cut_after=1 << 20).start()
    source = open_source(StoreLocation(url=f"oci://{proxy.host}/fleet/steps", insecure=True))
    try:
        record = source.fetch_step("compile", KEY, tmp_path)
    finally:
        source.close()
        proxy.stop()
    assert proxy.cuts == 1 and source.resumed == 1  # type: ignore[attr-defined]
    assert any(r.startswith("bytes=") and int(r[6:].rstrip("-")) > 0 for r in proxy.ranges), proxy.ranges
    assert record is not None and (tmp_path / "model.bin").read_bytes() == BIG


def test_a_tampered_blob_is_caught_by_its_digest(registry: Registry, tmp_path: Path) -> None:
    key = "3c" * 32
    record = stored_step(tmp_path / "build-host", key, {"model.bin": b"the real context binary"})
    with RegistryClient(registry.host, insecure=True) as client:
        push_steps([record], client, "fleet/tampered")
    blob = registry.blob_file(f"sha256:{record.files[0].sha256}")
    blob.write_bytes(b"the evil context binary")  # same length: only the digest can tell
    source = open_source(StoreLocation(url=f"oci://{registry.host}/fleet/tampered", insecure=True))
    try:
        with pytest.raises(FetchError, match="digest .* not used; the published file is corrupt"):
            source.fetch_step("compile", key, tmp_path / "fetched")
    finally:
        source.close()
    assert not (tmp_path / "fetched" / "model.bin").exists()


def test_a_pinned_step_is_fetched_by_its_digest_whatever_the_tag_says(registry: Registry, tmp_path: Path) -> None:
    key = "4d" * 32
    good = stored_step(tmp_path / "a", key, {"model.bin": b"published by the build host"})
    evil = stored_step(tmp_path / "b", key, {"model.bin": b"pushed over the tag by someone else"})
    with RegistryClient(registry.host, insecure=True) as client:
        pin = push_steps([good], client, "fleet/pinned").digests[key]
        push_steps([evil], client, "fleet/pinned")  # the tag now names another manifest
    location = StoreLocation(url=f"oci://{registry.host}/fleet/pinned", insecure=True)
    pinned = open_source(location, {key: pin})
    unknown = open_source(location, {key: "sha256:" + "0" * 64})
    try:
        assert pinned.fetch_step("compile", key, tmp_path / "pinned") is not None
        assert (tmp_path / "pinned" / "model.bin").read_bytes() == b"published by the build host"
        with pytest.raises(FetchError, match="HTTP 404"):
            unknown.fetch_step("compile", key, tmp_path / "unknown")
    finally:
        pinned.close()
        unknown.close()


def test_a_locked_registry_takes_basic_auth_from_the_config_docker_config_or_a_helper(
        locked_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "5e" * 32
    record = stored_step(tmp_path / "build-host", key, {"model.bin": b"locked"})
    url = f"oci://{locked_registry.host}/fleet/steps"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker"))
    anonymous = open_source(StoreLocation(url=url, insecure=True))
    with pytest.raises(FetchError, match="HTTP 401 .*credentials"):
        anonymous.fetch_step("compile", key, tmp_path / "anonymous")
    anonymous.close()
    with RegistryClient(locked_registry.host, insecure=True) as client:
        with pytest.raises(Exception, match="HTTP 401"):
            push_steps([record], client, "fleet/steps")

    # docker login wrote an auths entry
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(b"fleet:s3cret-pw").decode()
    (docker / "config.json").write_text(json.dumps({"auths": {f"http://{locked_registry.host}": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    with RegistryClient(locked_registry.host, insecure=True) as client:
        assert push_steps([record], client, "fleet/steps").blobs_written == 1

    # a credential helper (as docker-credential-wincred / -osxkeychain / -pass answer)
    helper = tmp_path / "bin" / "docker-credential-npuctl-test"
    helper.parent.mkdir()
    helper.write_text(f"#!{sys.executable}\nimport json, sys\nhost = sys.stdin.read().strip()\n"
                      f"print(json.dumps({{'ServerURL': host, 'Username': 'fleet', 'Secret': 's3cret-pw'}}))\n")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    (docker / "config.json").write_text(json.dumps({"credHelpers": {locked_registry.host: "npuctl-test"}}))
    source = open_source(StoreLocation(url=url, insecure=True))
    assert source.fetch_step("compile", key, tmp_path / "helper") is not None
    source.close()

    # the agent config's own credentials
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker"))
    configured = open_source(StoreLocation(url=url, insecure=True, username="fleet", password="s3cret-pw"))
    assert configured.fetch_step("compile", key, tmp_path / "configured") is not None
    configured.close()
    wrong = open_source(StoreLocation(url=url, insecure=True, username="fleet", password="guess"))
    with pytest.raises(FetchError, match="HTTP 401"):
        wrong.fetch_step("compile", key, tmp_path / "wrong")
    wrong.close()


def test_a_bearer_token_registry_lets_anyone_pull_and_the_user_push(
        token_registry: tuple[Registry, TokenServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, tokens = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker"))
    key = "6f" * 32
    record = stored_step(tmp_path / "build-host", key, {"model.bin": b"behind a token service"})
    challenge = httpx.get(f"http://{registry.host}/v2/fleet/steps/manifests/{key}")
    assert challenge.status_code == 401 and challenge.headers["www-authenticate"].startswith(
        f'Bearer realm="{tokens.realm}",service="npuctl-test-registry",scope="repository:fleet/steps:pull"')
    with RegistryClient(registry.host, insecure=True) as anonymous:
        with pytest.raises(Exception, match="HTTP 401"):
            push_steps([record], anonymous, "fleet/steps")  # an anonymous token grants pull only
    with RegistryClient(registry.host, insecure=True, credentials=Credentials("fleet", "s3cret-pw")) as client:
        assert push_steps([record], client, "fleet/steps").blobs_written == 1
    source = open_source(StoreLocation(url=f"oci://{registry.host}/fleet/steps", insecure=True))
    try:
        assert source.fetch_step("compile", key, tmp_path / "fetched") is not None
    finally:
        source.close()
    assert (tmp_path / "fetched" / "model.bin").read_bytes() == b"behind a token service"
    # (the registry lists a scope's actions in no fixed order)
    issued = {(user, scope.rsplit(":", 1)[0], frozenset(scope.rsplit(":", 1)[1].split(",")))
              for user, scope in tokens.issued}
    assert ("fleet", "repository:fleet/steps", frozenset({"pull", "push"})) in issued
    assert (None, "repository:fleet/steps", frozenset({"pull"})) in issued
    with RegistryClient(registry.host, insecure=True, credentials=Credentials("fleet", "guess")) as wrong:
        with pytest.raises(Exception, match="token service .* HTTP 401"):
            wrong.head_manifest("fleet/steps", key)


def test_a_registry_sending_more_than_the_limits_is_cut_off(tmp_path: Path) -> None:
    """A server speaking the registry API (a static web server here) with a 5 MiB manifest, an oversized
    config and a blob longer than its manifest says: each is refused without being read to the end."""
    from npuctl.artifacts.oci.client import MAX_MANIFEST_BYTES, RegistryError, digest_of
    from tests.agent.fleet_harness import StaticServer

    root = tmp_path / "site"
    manifests = root / "v2" / "fleet" / "big" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "huge").write_bytes(b" " * (MAX_MANIFEST_BYTES + 1))
    blobs = root / "v2" / "fleet" / "big" / "blobs"
    blobs.mkdir()
    config = b"{" + b" " * (2 << 20) + b"}"
    (blobs / digest_of(config)).write_bytes(config)
    long_blob = b"x" * 1000
    (blobs / digest_of(long_blob)).write_bytes(long_blob)
    server = StaticServer(root).start()
    try:
        with RegistryClient(f"127.0.0.1:{server.port}", insecure=True) as client:
            with pytest.raises(RegistryError, match=f"manifest fleet/big:huge is over {MAX_MANIFEST_BYTES} bytes"):
                client.manifest("fleet/big", "huge")
            with pytest.raises(RegistryError, match="is over 1048576 bytes, the limit"):
                client.blob("fleet/big", digest_of(config), 1 << 20)
            with pytest.raises(RegistryError, match="longer than the 10 bytes its manifest says"):
                client.download("fleet/big", digest_of(long_blob), 10, tmp_path / "out")
            assert not (tmp_path / "out").exists()
    finally:
        server.stop()
