"""The app served in process for the end-to-end fuzz tests, and what a response must be."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings

from dicomweb.config import Config
from tests.conftest import app_client
from tests.dicomfactory import ct_instance
from tests.fuzz.targets import BAD_HEADER_VALUE

STUDY_UID = "1.2.826.0.1.3680043.8.498.100"
SERIES_UID = "1.2.826.0.1.3680043.8.498.101"
BOUNDARY = "fuzz-boundary"


def end_to_end_examples() -> int:
    """Examples for a test that goes through the whole app: each is an HTTP request,
    and a STOW-RS one writes files, so fewer than the profile's default."""
    return 2_000 if settings.default.max_examples > 1_000 else 40


class Served:
    """The app in process on its own event loop, called synchronously (for @given)."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request and read the whole response."""
        return self._portal.call(lambda: self._client.request(method, url, **kwargs))


@contextlib.asynccontextmanager
async def _client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async for client in app_client(config):
        yield client


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Served]:
    """The app on SQLite under `root`, holding one study of three instances."""
    config = Config(
        data_dir=root / "data",
        database_url=f"sqlite+aiosqlite:///{root / 'index.sqlite3'}",
        dimse_port=0,
    )
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(_client(config)) as client,
    ):
        served = Served(portal, client)
        body = bytearray()
        for number, (name, modality) in enumerate(
            [("Doe^Jane", "CT"), ("Müller^Jürgen", "MR"), ("Smith^John", "CT")]
        ):
            instance = ct_instance(
                study=STUDY_UID,
                series=SERIES_UID,
                patient_name=name,
                modality=modality,
                instance_number=number + 1,
                rows=4,
                columns=4,
            )
            body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += instance + b"\r\n"
        body += f"--{BOUNDARY}--\r\n".encode()
        response = served.request(
            "POST",
            "/dicomweb/studies",
            content=bytes(body),
            headers={"content-type": f"multipart/related; boundary={BOUNDARY}"},
        )
        assert response.status_code == 200, response.text
        yield served


def check_response(response: httpx.Response) -> None:
    """No 5xx, headers a real server can send, and a body that is what it says."""
    assert response.status_code < 500, response.text
    for name, value in response.headers.raw:
        assert not BAD_HEADER_VALUE.search(value), f"header {name!r} carries {value!r}"
    media_type = response.headers.get("content-type", "").split(";")[0]
    if media_type in ("application/problem+json", "application/dicom+json"):
        orjson.loads(response.content)
