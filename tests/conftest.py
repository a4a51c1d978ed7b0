"""Fixtures: the index on SQLite and on PostgreSQL, the app in process, a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from dicomweb.app import create_app
from dicomweb.config import Config

POSTGRES_URL = os.environ.get(
    "DICOMWEB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _admin(sql: str) -> None:
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty index database: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
        return
    name = f"dicomweb_test_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Config:
    return Config(data_dir=tmp_path / "data", database_url=database_url, dimse_port=0)


async def app_client(
    config: Config, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to an app for `config` in process, its lifespan running."""
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


@pytest.fixture
async def client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in process, with its lifespan running."""
    async for c in app_client(config):
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """`dicomweb serve` in a child process on a loopback port."""

    data_dir: Path
    database_url: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        env = dict(os.environ, DICOMWEB_SWEEP_GRACE_SECONDS="0")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dicomweb",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--database-url",
                    self.database_url,
                    "--port",
                    str(self.port),
                    "--dimse-port",
                    "0",
                    *self.extra_args,
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    """A real `dicomweb serve` (uvicorn) on loopback; stopped after the test."""
    proc = ServerProcess(tmp_path / "data", database_url, free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
