"""The edge: sizes, slow clients, headers, CORS, start-up refusal, errors, audit of DIMSE."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.app import create_app
from dicomweb.auth.security import check_security_settings, is_loopback
from dicomweb.cli import main
from dicomweb.config import Config, ConfigError
from tests.auth.conftest import Issuer, auth_config, bearer, open_client
from tests.conftest import ServerProcess, free_port
from tests.dicomfactory import CONTENT_TYPE, ct_dataset, ct_instance, multipart, new_uid

FAILED_SOP = "00081198"
FAILURE_REASON = "00081197"


def open_config(tmp_path: Path, **settings: object) -> Config:
    """A server without authentication (loopback), as the other tests run it."""
    return replace(auth_config(tmp_path), auth="none", **settings)  # type: ignore[arg-type]


async def test_security_headers(client: httpx.AsyncClient, issuer: Issuer) -> None:
    for response in (
        await client.get("/healthz"),
        await client.get("/dicomweb/studies"),
        await client.get("/dicomweb/studies", headers=bearer(issuer.token())),
    ):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        assert headers["x-frame-options"] == "DENY"
        assert "strict-transport-security" not in headers  # plain HTTP
    assert (await client.get("/dicomweb/studies")).headers["cache-control"] == "no-store"


async def test_oversized_requests(client: httpx.AsyncClient, issuer: Issuer) -> None:
    admin = bearer(issuer.token())
    long_url = await client.get("/dicomweb/studies", params={"PatientID": "x" * 9000})
    assert long_url.status_code == 414
    big_headers = {f"x-padding-{n}": "y" * 1000 for n in range(40)}
    assert (await client.get("/healthz", headers=big_headers)).status_code == 431

    declared = await client.post(
        "/api/links",
        content=b"{" + b" " * (2 * 1024**2) + b"}",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.headers["connection"] == "close"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 64 * 1024

    streamed = await client.post("/api/links", content=chunks(), headers=admin)
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"
    # STOW-RS bodies have their own, larger limit.
    body = multipart([ct_instance()])
    stored = await client.post(
        "/dicomweb/studies", content=body, headers={**admin, "Content-Type": CONTENT_TYPE}
    )
    assert stored.status_code == 200


async def test_stow_part_limit(tmp_path: Path) -> None:
    config = open_config(tmp_path, max_part_bytes=4096)
    small = ct_dataset(rows=8, columns=8)
    large = ct_dataset(rows=64, columns=64)
    body = multipart([ct_instance(sop=large.SOPInstanceUID, rows=64, columns=64), _bytes(small)])
    async for client in open_client(config):
        response = await client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": CONTENT_TYPE}
        )
        assert response.status_code == 202
        failed = response.json()[FAILED_SOP]["Value"]
        assert [item[FAILURE_REASON]["Value"][0] for item in failed] == [0xA770]
        assert small.SOPInstanceUID in response.text


def _bytes(ds: Dataset) -> bytes:
    from tests.dicomfactory import to_bytes

    return to_bytes(ds)


async def test_cors(tmp_path: Path, issuer: Issuer) -> None:
    viewer = "https://viewer.example.org"
    config = auth_config(tmp_path, oauth_issuer=issuer.url, cors_origins=viewer)
    async for client in open_client(config):
        preflight = await client.options(
            "/dicomweb/studies",
            headers={
                "Origin": viewer,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == viewer
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        denied = await client.get("/dicomweb/studies", headers={"Origin": viewer})
        # The browser may read the 401 and its challenge.
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == viewer
        other = await client.get("/healthz", headers={"Origin": "https://evil.example.org"})
        assert "access-control-allow-origin" not in other.headers
    async for client in open_client(replace(config, cors_origins="")):
        same_origin_only = await client.get("/healthz", headers={"Origin": viewer})
        assert "access-control-allow-origin" not in same_origin_only.headers


async def _boom(request: Request) -> Response:
    raise RuntimeError("a bug, with /secret/paths in its message")


async def test_errors_carry_no_stack_trace(tmp_path: Path) -> None:
    app = create_app(open_config(tmp_path))
    app.router.routes.insert(0, Route("/boom", _boom))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_a_route_without_a_rule_is_refused(oauth_config: Config, issuer: Issuer) -> None:
    app = create_app(oauth_config)
    app.router.routes.insert(0, Route("/boom", _boom))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get("/boom", headers=bearer(issuer.token()))
    assert response.status_code == 403
    assert response.json()["detail"] == "no access rule covers this route"


def test_no_auth_only_on_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "pacs.example.org", ""):
        assert not is_loopback(host), host
    with pytest.raises(ConfigError, match="without authentication"):
        check_security_settings(Config(host="0.0.0.0"))
    check_security_settings(Config(host="0.0.0.0", insecure_no_auth=True))
    check_security_settings(Config(host="0.0.0.0", auth="oauth2"))
    assert main(["serve", "--host", "0.0.0.0", "--dimse-port", "0"]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


async def test_dimse_operations_are_audited(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = open_config(tmp_path, dimse_port=free_port(), audit_log=str(audit))
    ds = ct_dataset()

    def peer() -> None:
        ae = AE(ae_title="MODALITY")
        for context in (Verification, CTImageStorage, StudyRootQueryRetrieveInformationModelFind):
            ae.add_requested_context(context)
        assoc = ae.associate("127.0.0.1", config.dimse_port, ae_title=config.aet)
        assert assoc.is_established
        try:
            assert assoc.send_c_echo().Status == 0
            assert assoc.send_c_store(ds).Status == 0
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ds.StudyInstanceUID
            found = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
            assert [status.Status for status, _ in found] == [0xFF00, 0x0000]
        finally:
            assoc.release()

    app = create_app(config)
    async with app.router.lifespan_context(app):
        await asyncio.to_thread(peer)
    lines = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    dimse = [line for line in lines if line["kind"] == "dimse"]
    assert [line["operation"] for line in dimse] == ["C-ECHO", "C-STORE", "C-FIND"]
    echo, store, find = dimse
    assert echo["who"] == "MODALITY@127.0.0.1" and echo["outcome"] == "success"
    assert (store["study"], store["series"], store["instance"]) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    assert store["status"] == "0x0000"
    assert find["study"] == ds.StudyInstanceUID and find["matches"] == 1


# A real uvicorn: what only the HTTP server's protocol sees.


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[ServerProcess]:
    database = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
    server = ServerProcess(
        tmp_path / "data",
        database,
        free_port(),
        extra_args=("--auth", "oauth2", "--client-timeout", "1"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _exchange(port: int, data: bytes, *, wait: float = 5.0) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes; the answer and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        if data:
            connection.sendall(data)
        answer = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - started


@pytest.mark.slow
def test_slow_clients_are_cut_off(guarded_server: ServerProcess) -> None:
    port = guarded_server.port
    # Nothing at all, and a request head that never ends: 408 after the timeout.
    for data in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "):
        answer, took = _exchange(port, data)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.9 < took < 3.5
    # A body that stops arriving.
    head = (
        b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    )
    answer, took = _exchange(port, head + b"grant_type=")
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"application/problem+json" in answer
    assert 0.9 < took < 3.5
    # The server still answers everyone else.
    assert httpx.get(f"{guarded_server.url}/healthz").status_code == 200


@pytest.mark.slow
def test_oversized_requests_against_uvicorn(guarded_server: ServerProcess) -> None:
    port = guarded_server.port
    long_line = b"GET /dicomweb/studies?PatientID=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _exchange(port, long_line)[0].startswith(b"HTTP/1.1 414")
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"y" * 1000) for n in range(40))
    big_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n"
    assert _exchange(port, big_head)[0].startswith(b"HTTP/1.1 431")
    # Refused by its Content-Length, before a byte of the body is sent.
    declared = (
        b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000000\r\n\r\n"
    )
    answer, took = _exchange(port, declared)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert took < 1.0
    token_url = f"{guarded_server.url}/dicomweb/studies/{new_uid()}"
    assert httpx.get(token_url).status_code == 401


@pytest.mark.slow
def test_a_client_that_stops_reading_is_disconnected(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
    server = ServerProcess(
        tmp_path / "data", database, free_port(), extra_args=("--client-timeout", "1")
    )
    server.start()
    try:
        study = new_uid()
        # 4 x 8 MiB: more than the socket buffers on both sides can hold.
        parts = [ct_instance(study=study, rows=2048, columns=2048, seed=n) for n in range(4)]
        stored = httpx.post(
            f"{server.url}/dicomweb/studies",
            content=multipart(parts),
            headers={"Content-Type": CONTENT_TYPE},
            timeout=60,
        )
        assert stored.status_code == 200
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(
                f"GET /dicomweb/studies/{study} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            time.sleep(4)  # not reading: the server's sends stall
            received = 0
            while chunk := connection.recv(1 << 20):
                received += len(chunk)
        # The connection ended before the whole study came.
        assert received < sum(len(p) for p in parts)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.stop()
