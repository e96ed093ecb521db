"""A token service as Docker Hub, GHCR, ACR and Harbor run one (distribution's token auth): the registry
answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, the client asks the realm for a
JWT (with basic credentials, or anonymously), the registry checks the JWT's signature against the certificate
in its `rootcertbundle`. Anonymous clients get `pull`; the one user gets what it asks for."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.agent.harness import free_port

ISSUER = "npuctl-test-token-service"
SERVICE = "npuctl-test-registry"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, folder: Path, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.issued: list[tuple[str | None, str]] = []
        """(user or None for anonymous, scope) of every token issued."""
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.now(UTC)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        self.certificate = folder / "token-ca.pem"
        self.certificate.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._server: ThreadingHTTPServer | None = None

    def registry_auth(self) -> str:
        """The `auth:` section of the registry's config."""
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {self.certificate}\n")

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = server._answer(self)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        query = parse_qs(urlparse(handler.path).query)
        user = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (name, password) != (self.user, self.password):
                return 401, b'{"details": "incorrect username or password"}'
            user = name
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            granted = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": repository, "actions": granted})
            self.issued.append((user, scope))
        token = self._token(user or "", query.get("service", [""])[0], access)
        return 200, json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()

    def _token(self, subject: str, audience: str, access: list[dict[str, Any]]) -> str:
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]}
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": subject, "aud": audience, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
