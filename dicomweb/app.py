"""The ASGI application: routes, error handling and the lifespan that owns resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from dicomweb.admin import get_stats
from dicomweb.auth.endpoints import ROUTES as SECURITY_ROUTES
from dicomweb.auth.protocol import GuardedHttpToolsProtocol
from dicomweb.auth.security import Security
from dicomweb.capabilities import (
    OptionsRoute,
    answer_options,
    openapi_description,
    retrieve_capabilities,
)
from dicomweb.config import SERVICE_ROOT, Config
from dicomweb.delete import delete_resource
from dicomweb.dimse import dimse_listener
from dicomweb.errors import DicomwebError
from dicomweb.index import Index
from dicomweb.ingest import Ingestor
from dicomweb.qido import search_instances, search_series, search_studies
from dicomweb.rendered import retrieve_rendered, retrieve_thumbnail
from dicomweb.send import send_instances
from dicomweb.storage import BlobStore, FilesystemBlobStore
from dicomweb.stow import store_instances
from dicomweb.transcoding import Transcoder
from dicomweb.viewer import serve_viewer
from dicomweb.wado import (
    MetadataCache,
    retrieve_bulkdata,
    retrieve_frames,
    retrieve_instances,
    retrieve_metadata,
    retrieve_pixel_data,
)
from dicomweb.wadouri import retrieve_wado_uri

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_SERIES = "/studies/{study}/series/{series}"
_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


def problem(status: int, title: str, detail: str) -> Response:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(orjson.dumps(body), status, media_type=PROBLEM_JSON)


async def _dicomweb_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomwebError)
    response = problem(exc.http_status, exc.title, exc.detail)
    response.headers.update(exc.headers)
    return response


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = problem(exc.status_code, _reason(exc.status_code), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _blob_gone(_request: Request, exc: Exception) -> Response:
    # The instance was deleted between the index lookup and the read of its file.
    assert isinstance(exc, FileNotFoundError)
    return problem(404, "Not Found", "the instance was deleted while it was being read")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def healthz(request: Request) -> Response:
    """200 when the index answers and the blob store can be written."""
    index: Index = request.app.state.index
    blobs: BlobStore = request.app.state.blobs
    index_ok, blobs_ok = await asyncio.gather(index.healthy(), blobs.healthy())
    body = {"index": "ok" if index_ok else "failing", "storage": "ok" if blobs_ok else "failing"}
    status = 200 if index_ok and blobs_ok else 503
    return Response(orjson.dumps(body), status, media_type="application/json")


def create_app(config: Config) -> Starlette:
    """Build the server for `config`; resources open in the lifespan."""
    # Every request passes the security middleware (dicomweb/auth/): edge limits,
    # the permission its route needs (auth/policy.py), the audit log.
    security = Security(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        index = await Index.open(config.resolved_database_url)
        blobs = FilesystemBlobStore(config.data_dir)
        app.state.config = config
        app.state.security = security
        app.state.index = index
        app.state.blobs = blobs
        app.state.transcoder = Transcoder(config.frame_cache_bytes)
        app.state.metadata_cache = MetadataCache(config.metadata_cache_bytes)
        ingestor = Ingestor(
            blobs,
            index,
            bulk_data_threshold=config.bulk_data_threshold,
            store_transfer_syntax=config.store_transfer_syntax,
        )
        app.state.ingestor = ingestor
        sweeper = asyncio.create_task(
            sweep(blobs, index, config.sweep_grace_seconds)
            if config.sweep_at_start
            else index.analyze()
        )
        app.state.maintenance = sweeper
        try:
            async with contextlib.AsyncExitStack() as stack:
                if config.dimse_port:
                    app.state.dimse = await stack.enter_async_context(
                        dimse_listener(config, ingestor, index, blobs)
                    )
                yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await index.close()
            await security.aclose()

    routes = [
        # OPTIONS on any path: its methods and description (capabilities.py).
        OptionsRoute("/{path:path}", answer_options),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi_description, methods=["GET"]),
        # Retrieve Capabilities (PS3.18 8.9): the service root, with or without its slash.
        Route(SERVICE_ROOT, retrieve_capabilities, methods=["GET"]),
        Route(f"{SERVICE_ROOT}/", retrieve_capabilities, methods=["GET"]),
        Route("/api/send", send_instances, methods=["POST"]),
        Route("/api/stats", get_stats, methods=["GET"]),
        # WADO-URI (PS3.18 9) lives at the server root, where legacy clients look for it.
        Route("/wado", retrieve_wado_uri, methods=["GET"]),
        Mount(
            SERVICE_ROOT,
            routes=[
                Route("/studies", store_instances, methods=["POST"]),
                Route("/studies/{study}", store_instances, methods=["POST"]),
                Route("/studies", search_studies, methods=["GET"]),
                Route("/series", search_series, methods=["GET"]),
                Route("/instances", search_instances, methods=["GET"]),
                Route("/studies/{study}/series", search_series, methods=["GET"]),
                Route("/studies/{study}/instances", search_instances, methods=["GET"]),
                Route(
                    "/studies/{study}/series/{series}/instances",
                    search_instances,
                    methods=["GET"],
                ),
                Route("/studies/{study}", retrieve_instances, methods=["GET"]),
                Route("/studies/{study}", delete_resource, methods=["DELETE"]),
                Route(_SERIES, delete_resource, methods=["DELETE"]),
                Route(_INSTANCE, delete_resource, methods=["DELETE"]),
                Route("/studies/{study}/metadata", retrieve_metadata, methods=["GET"]),
                Route("/studies/{study}/pixeldata", retrieve_pixel_data, methods=["GET"]),
                Route(_SERIES, retrieve_instances, methods=["GET"]),
                Route(f"{_SERIES}/metadata", retrieve_metadata, methods=["GET"]),
                Route(f"{_SERIES}/pixeldata", retrieve_pixel_data, methods=["GET"]),
                Route(_INSTANCE, retrieve_instances, methods=["GET"]),
                Route(f"{_INSTANCE}/metadata", retrieve_metadata, methods=["GET"]),
                Route(f"{_INSTANCE}/pixeldata", retrieve_pixel_data, methods=["GET"]),
                Route(f"{_INSTANCE}/frames/{{frames}}", retrieve_frames, methods=["GET"]),
                Route(f"{_INSTANCE}/bulkdata/{{path:path}}", retrieve_bulkdata, methods=["GET"]),
                Route("/studies/{study}/rendered", retrieve_rendered, methods=["GET"]),
                Route(f"{_SERIES}/rendered", retrieve_rendered, methods=["GET"]),
                Route(f"{_INSTANCE}/rendered", retrieve_rendered, methods=["GET"]),
                Route(
                    f"{_INSTANCE}/frames/{{frames}}/rendered", retrieve_rendered, methods=["GET"]
                ),
                Route("/studies/{study}/thumbnail", retrieve_thumbnail, methods=["GET"]),
                Route(f"{_SERIES}/thumbnail", retrieve_thumbnail, methods=["GET"]),
                Route(f"{_INSTANCE}/thumbnail", retrieve_thumbnail, methods=["GET"]),
                Route(
                    f"{_INSTANCE}/frames/{{frames}}/thumbnail", retrieve_thumbnail, methods=["GET"]
                ),
            ],
        ),
        # The built-in authorization server and signed links (dicomweb/auth/).
        *SECURITY_ROUTES,
        # Last: the OHIF viewer and its client-side routes take every other GET.
        Route("/{path:path}", serve_viewer, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=security.middleware(),
        lifespan=lifespan,
        exception_handlers={
            DicomwebError: _dicomweb_error,
            HTTPException: _http_error,
            FileNotFoundError: _blob_gone,
        },
    )


def create_app_from_environ() -> Starlette:
    """The app for a worker process: settings from DICOMWEB_* variables."""
    config = Config.from_sources()
    GuardedHttpToolsProtocol.configure(config)
    return create_app(config)


async def sweep(blobs: BlobStore, index: Index, grace: float) -> None:
    """Start-up maintenance: remove staging files and unindexed blobs older than
    `grace` seconds, then refresh the index's statistics."""
    try:
        report = await blobs.sweep(index.referenced_blobs, grace)
    except Exception:
        log.exception("start-up sweep failed")
    else:
        if report.temporary_removed or report.orphans_removed:
            log.info(
                "sweep removed %d staging files and %d unindexed blobs",
                report.temporary_removed,
                report.orphans_removed,
            )
    # Statistics may be missing or stale (a bulk load, an upgrade): searches need them.
    await index.analyze()


async def sweep_data_dir(config: Config) -> None:
    """`sweep` for the data directory and index of `config`, opened for the purpose."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    index = await Index.open(config.resolved_database_url)
    try:
        await sweep(FilesystemBlobStore(config.data_dir), index, config.sweep_grace_seconds)
    finally:
        await index.close()
