from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci.registry import BINARY, Registry
from tests.oci.token_server import TokenServer


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous docker-registry on 127.0.0.1."""
    if BINARY is None:
        pytest.skip("docker-registry (Debian package docker-registry, CNCF distribution 2.8) is not installed: "
                    "apt-get install docker-registry (.ci/run does)")
    started = Registry(tmp_path_factory.mktemp("registry")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A docker-registry behind htpasswd (bcrypt) auth: user `fleet`, password `s3cret-pw`."""
    if BINARY is None:
        pytest.skip("docker-registry is not installed: apt-get install docker-registry (.ci/run does)")
    started = Registry(tmp_path_factory.mktemp("locked-registry"), users={"fleet": "s3cret-pw"}).start()
    yield started
    started.stop()


def stored_step(root: Path, key: str, files: dict[str, bytes]):  # -> Record
    from npuctl.artifacts.facts import Compile, Coverage
    from npuctl.artifacts.store import Store
    from npuctl.schema.models import Precision

    store = Store(root)
    work = store.new_workdir(key)
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    return store.commit(work, key=key, inputs={"model": "ab" * 32}, parameters={"soc_model": 60},
                        tool_versions={"qnn": "2.x"}, seconds=1.0, details=Compile(
        soc_model=60, htp_arch=73, precision=Precision.W8A16, qnn_sdk="2.x", ep_compatibility_info=None, npu_coverage=1.0,
        coverage=Coverage(qnn_share=1.0, nodes_by_ep={"QNNExecutionProvider": 1}, other_ops={})))


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenServer]]:
    """A docker-registry behind a bearer token service (as Docker Hub, GHCR, ACR): anonymous pull, user `fleet`
    (password `s3cret-pw`) push."""
    if BINARY is None:
        pytest.skip("docker-registry is not installed: apt-get install docker-registry (.ci/run does)")
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(root / "tokens", "fleet", "s3cret-pw").start()
    started = Registry(root / "registry", auth=tokens.registry_auth()).start()
    yield started, tokens
    started.stop()
    tokens.stop()
