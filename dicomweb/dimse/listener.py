"""Running the DIMSE listener beside the HTTP server, or alone (`dicomweb dimse`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from anyio import to_thread
from anyio.from_thread import BlockingPortal

from dicomweb.auth.audit import AuditLog
from dicomweb.config import Config
from dicomweb.dimse.peers import parse_allowed, parse_peers
from dicomweb.dimse.server import Core, DimseServer
from dicomweb.index import Index
from dicomweb.ingest import Ingestor
from dicomweb.storage import FilesystemBlobStore


@contextlib.asynccontextmanager
async def dimse_listener(
    config: Config, ingestor: Ingestor, index: Index, blobs: FilesystemBlobStore
) -> AsyncIterator[DimseServer]:
    """Listen on `config.dimse_port` while the context is open.

    The portal belongs to the running event loop, which owns the index's connections;
    the listener stops before the portal closes.
    """
    async with BlockingPortal() as portal:
        server = DimseServer(
            Core(ingestor, index, blobs, portal),
            aet=config.aet,
            host=config.host,
            port=config.dimse_port,
            peers=parse_peers(config.dimse_peers),
            allowed=parse_allowed(config.dimse_allow),
            audit=AuditLog(config.audit_log),
            shared_port=config.dimse_processes > 1,
        )
        await to_thread.run_sync(server.start)
        try:
            yield server
        finally:
            await to_thread.run_sync(server.stop)
