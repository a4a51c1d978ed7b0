"""Fixtures for the security tests: an issuer's JWKS on a real HTTP server, tokens, apps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from dicomweb.config import Config
from tests.conftest import app_client
from tests.dicomfactory import CONTENT_TYPE, ct_instance, multipart, new_uid

AUDIENCE = "dicomweb"
ALL_SCOPES = "dicomweb.read dicomweb.write dicomweb.delete dicomweb.admin"


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)


@dataclass
class Issuer:
    """An identity provider's discovery document and JWKS, served over real HTTP."""

    keys: list[RSAKey | ECKey] = field(default_factory=lambda: [rsa_key()])
    jwks_hits: int = 0
    discovery_hits: int = 0
    down: bool = False
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/realms/test"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    def token(
        self,
        scope: str = ALL_SCOPES,
        *,
        key: RSAKey | ECKey | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token of this issuer; keyword arguments override claims (None removes one)."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "scope": scope,
        }
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        signing = key or self.keys[0]
        head = {"alg": signing.alg or "RS256", "kid": signing.kid, **(header or {})}
        return jwt.encode(head, body, signing, algorithms=[head["alg"]])


def unsigned_token(claims: dict[str, Any]) -> str:
    """An `alg: none` JWT (RFC 7519 6.1), which must never be accepted."""
    return (
        f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(orjson.dumps(claims))}."
    )


def hs256_token(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    """A token MACed with `secret`: the HS/RS confusion attack when secret is a public key."""
    head = _b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
    body = _b64(orjson.dumps(claims))
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    """A separate HTTP server publishing OpenID Connect discovery and a JWKS."""
    state = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if state.down:
                self.send_error(503)
                return
            if self.path == "/realms/test/.well-known/openid-configuration":
                state.discovery_hits += 1
                body = {
                    "issuer": state.url,
                    "jwks_uri": f"{state.url}/protocol/certs",
                    # Only where a browser is sent to log in (test_viewer_link.py): not served.
                    "authorization_endpoint": f"{state.url}/protocol/auth",
                    "token_endpoint": f"{state.url}/protocol/token",
                }
            elif self.path == "/realms/test/protocol/certs":
                state.jwks_hits += 1
                body = state.jwks()
            else:
                self.send_error(404)
                return
            data = orjson.dumps(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            # The viewer's login reads the discovery document from another origin.
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.server.shutdown()
        state.server.server_close()
        thread.join(5)


def auth_config(tmp_path: Path, **settings: Any) -> Config:
    """Settings of a server with OAuth2 on, its index SQLite in tmp_path."""
    base = Config(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}",
        dimse_port=0,
        auth="oauth2",
    )
    return replace(base, **settings)


@pytest.fixture
def oauth_config(tmp_path: Path, issuer: Issuer) -> Config:
    return auth_config(tmp_path, oauth_issuer=issuer.url)


async def open_client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    # A loopback host name: authlib's token endpoint refuses plain HTTP elsewhere.
    async for client in app_client(config, "http://127.0.0.1"):
        yield client


@pytest.fixture
async def client(oauth_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async for client in open_client(oauth_config):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def store_study(
    client: httpx.AsyncClient, token: str | None, *, patient_id: str = "PAT-1"
) -> tuple[str, str, str]:
    """Store one CT instance; returns its study, series and SOP Instance UIDs."""
    study, series, sop = new_uid(), new_uid(), new_uid()
    body = multipart([ct_instance(study=study, series=series, sop=sop, patient_id=patient_id)])
    headers = {"Content-Type": CONTENT_TYPE, **(bearer(token) if token else {})}
    response = await client.post("/dicomweb/studies", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return study, series, sop
