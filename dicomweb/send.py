"""POST /api/send: push stored instances to a configured DICOM AE with C-STORE.

Not a DICOMweb transaction. The body names the destination (an AE title from
--dimse-peer) and a study, optionally a series and an instance; the response streams one
JSON line per instance as the peer answers (application/x-ndjson), then a summary line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import orjson
from anyio import from_thread, to_thread
from starlette.requests import Request
from starlette.responses import StreamingResponse

from dicomweb.dimse.peers import parse_peers
from dicomweb.dimse.scu import SendError, SendResult, send
from dicomweb.errors import BadRequest, NotFound
from dicomweb.index import Index
from dicomweb.jsonbody import json_object
from dicomweb.resources import validate_uid
from dicomweb.storage import FilesystemBlobStore

NDJSON = "application/x-ndjson"


async def send_instances(request: Request) -> StreamingResponse:
    """POST /api/send with {"destination", "study", "series"?, "instance"?}."""
    body = await json_object(request)
    config = request.app.state.config
    destination = body.get("destination")
    peer = (
        parse_peers(config.dimse_peers).get(destination) if isinstance(destination, str) else None
    )
    if peer is None:
        raise BadRequest(f"destination {destination!r} is not a configured DICOM AE")
    study = validate_uid(body.get("study"), "study")
    series = body.get("series")
    sop = body.get("instance")
    index: Index = request.app.state.index
    located = await index.list_instances(
        study,
        None if series is None else validate_uid(series, "series"),
        None if sop is None else validate_uid(sop, "instance"),
    )
    if not located:
        raise NotFound("no stored instance matches")
    blobs: FilesystemBlobStore = request.app.state.blobs
    sender, receiver = anyio.create_memory_object_stream[bytes](max_buffer_size=len(located) + 1)

    def report(result: SendResult) -> None:
        line = {"sop_instance_uid": result.sop_instance_uid, "status": result.status}
        if result.detail:
            line["detail"] = result.detail
        from_thread.run_sync(sender.send_nowait, orjson.dumps(line) + b"\n")

    async def run() -> None:
        async with sender:
            try:
                results = await to_thread.run_sync(
                    send,
                    peer,
                    config.aet,
                    located,
                    lambda item: blobs.blob_path(item.blob_key),
                    report,
                )
            except SendError as exc:
                await sender.send(orjson.dumps({"error": str(exc)}) + b"\n")
                return
            failed = sum(not r.ok for r in results)
            summary = {"sent": len(results) - failed, "failed": failed, "destination": str(peer)}
            await sender.send(orjson.dumps(summary) + b"\n")

    async def stream() -> AsyncIterator[bytes]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            async with receiver:
                async for line in receiver:
                    yield line

    return StreamingResponse(stream(), media_type=NDJSON)
