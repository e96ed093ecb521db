"""A real registry for the tests: Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1 with a
temporary root, anonymous or behind htpasswd (bcrypt), and a proxy that can cut a blob download mid-way."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.agent.harness import free_port

BINARY = shutil.which("docker-registry")
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>[0-9]{3}) (?P<size>[0-9]+) ')
needs_registry = pytest.mark.skipif(
    BINARY is None, reason="docker-registry (Debian package docker-registry, CNCF distribution 2.8) is not "
    "installed: apt-get install docker-registry (.ci/run does)")

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
{auth}"""

HTPASSWD = """\
auth:
  htpasswd:
    realm: npuctl-tests
    path: {path}
"""


@dataclass
class Registry:
    """One registry process. `host` is what an oci:// reference names (127.0.0.1:PORT)."""

    root: Path
    users: dict[str, str] = field(default_factory=dict)
    """username -> password (htpasswd); empty: anonymous access, or `auth`'s."""
    auth: str = ""
    """An `auth:` section of the config instead (a token service's)."""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        assert BINARY is not None
        self.root.mkdir(parents=True, exist_ok=True)
        auth = self.auth
        if self.users:
            import bcrypt

            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n"
                                        for user, password in self.users.items()))
            auth = HTPASSWD.format(path=htpasswd)
        config = self.root / "config.yml"
        config.write_text(CONFIG.format(root=self.root / "data", port=self.port, auth=auth))
        with (self.root / "registry.log").open("ab") as log:  # the access log is on stdout
            self.process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not start:\n{(self.root / 'registry.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, from the registry's access log."""
        return [(method, path, status) for method, path, status, _ in self.access_log()]

    def access_log(self) -> list[tuple[str, str, int, int]]:
        """(method, path, status, bytes sent) of every request so far."""
        found = []
        for line in (self.root / "registry.log").read_text(errors="replace").splitlines():
            match = _ACCESS.search(line)
            if match:
                found.append((match["method"], match["path"], int(match["status"]), int(match["size"])))
        return found

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (for tampering with them)."""
        hex_ = digest.removeprefix("sha256:")
        return self.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


class CuttingProxy:
    """A TCP proxy to a registry that, while `armed`, closes the client's connection after `cut_after` bytes of
    the first blob response (a Wi-Fi drop in the middle of a download), then disarms. Records Range headers."""

    def __init__(self, upstream_port: int, cut_after: int, armed: bool = True) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.armed = armed
        self.only = b"/blobs/"
        """Cut only a GET whose path contains this."""
        self.port = free_port()
        self.cuts = 0
        self.ranges: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> CuttingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:  # the registry is down: so is the proxy, to its clients
            client.close()
            return
        # What the current request on this connection is, and how much of its answer went back (no pipelining:
        # a client sends the next request after reading the answer).
        current = {"blob": False, "sent": 0}
        try:
            threading.Thread(target=self._upstream, args=(client, upstream, current), daemon=True).start()
            while data := upstream.recv(65536):
                if current["blob"] and current["sent"] + len(data) > self.cut_after and self._take_cut():
                    client.sendall(data[: max(0, self.cut_after - current["sent"])])
                    return
                client.sendall(data)
                current["sent"] += len(data)
        except OSError:
            pass
        finally:
            # shutdown, not only close: the other thread's recv() keeps a closed socket open (no FIN sent).
            for end in (client, upstream):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def _take_cut(self) -> bool:
        with self._lock:
            if not self.armed:
                return False
            self.armed = False
            self.cuts += 1
            return True

    def _upstream(self, client: socket.socket, upstream: socket.socket, current: dict[str, int]) -> None:
        try:
            while data := client.recv(65536):
                lines = data.split(b"\r\n")
                if lines[0].startswith((b"GET ", b"HEAD ")):
                    current["blob"], current["sent"] = int(self.only in lines[0] and lines[0].startswith(b"GET ")), 0
                for line in lines:
                    if line.lower().startswith(b"range:"):
                        self.ranges.append(line.decode().split(":", 1)[1].strip())
                upstream.sendall(data)
        except OSError:
            pass
