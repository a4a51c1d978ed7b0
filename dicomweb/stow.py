"""STOW-RS (PS3.18 10.5): multipart/related in, Store Instances Response out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.auth.edge import content_length
from dicomweb.dicomxml import json_to_xml
from dicomweb.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from dicomweb.ingest import Incoming, Ingestor, StoreOutcome
from dicomweb.multipart import MalformedMultipart, PartHeaders, parse_content_type, read_related
from dicomweb.negotiation import DICOM_XML, response_media_type
from dicomweb.resources import service_url, study_path, validate_uid
from dicomweb.status import MEANINGS, Status

DICOM = "application/dicom"
# Failures that mean the request's content was not understood; only these make a 400.
_SYNTAX_FAILURES = frozenset(
    {Status.CANNOT_UNDERSTAND, Status.TRUNCATED_DATA_SET, Status.UNSUPPORTED_MEDIA_TYPE_PART}
)
_MAX_WARNING_HEADERS = 20
# Parts of one request stored at the same time; each holds at most 1 MiB in memory.
PARTS_IN_FLIGHT = 4


async def store_instances(request: Request) -> Response:
    """POST /studies and /studies/{study}."""
    study = request.path_params.get("study")
    if study is not None:
        validate_uid(study, "StudyInstanceUID in the request URL")
    media_type = response_media_type(request.headers.get("accept"))
    boundary = _boundary(request.headers.get("content-type"))
    limit: int = request.app.state.config.max_request_bytes
    length = content_length(request.scope["headers"])
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")

    ingestor: Ingestor = request.app.state.ingestor
    stream = _limited(request.stream(), limit)
    max_part: int = request.app.state.config.max_part_bytes
    outcomes = await _store_parts(ingestor, stream, boundary, study, max_part)
    status, body = store_response(outcomes, service_url(str(request.base_url)), study)
    content = json_to_xml(body) if media_type == DICOM_XML else orjson.dumps(body)
    response = Response(content, status, media_type=media_type)
    response.raw_headers.extend(_warnings(outcomes))
    return response


def _boundary(content_type: str | None) -> str:
    if not content_type:
        raise UnsupportedMediaType("Content-Type is missing; send multipart/related")
    media_type, params = parse_content_type(content_type)
    if media_type != "multipart/related":
        raise UnsupportedMediaType(
            f'Content-Type {media_type!r} is not supported; send multipart/related; type="{DICOM}"'
        )
    part_type = params.get("type", DICOM).strip().lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(
            f"multipart/related parts of type {part_type!r} are not supported; "
            f"this server stores {DICOM} parts"
        )
    boundary = params.get("boundary")
    if not boundary:
        raise BadRequest("the multipart/related Content-Type has no boundary parameter")
    return boundary


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        yield chunk


async def _store_parts(
    ingestor: Ingestor,
    body: AsyncIterator[bytes],
    boundary: str,
    study: str | None,
    max_part: int,
) -> list[StoreOutcome]:
    """Store each part as it arrives; a failed part does not stop the ones after it.

    A complete part is stored while the next one is read, up to PARTS_IN_FLIGHT at a
    time, so parsing, hashing and writing of several instances overlap and their index
    rows share transactions. Outcomes keep the order of the parts.
    """
    slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
    pending: list[asyncio.Future[StoreOutcome]] = []

    async def store(incoming: Incoming) -> StoreOutcome:
        try:
            return await ingestor.store(incoming, expected_study=study)
        finally:
            slots.release()

    def done(outcome: StoreOutcome) -> None:
        future: asyncio.Future[StoreOutcome] = asyncio.get_running_loop().create_future()
        future.set_result(outcome)
        pending.append(future)

    incoming: Incoming | None = None
    skipping: Status | None = None
    part_bytes = 0
    try:
        async for event in read_related(body, boundary):
            if isinstance(event, PartHeaders):
                part_bytes = 0
                if event.content_type not in (None, DICOM):
                    skipping = Status.UNSUPPORTED_MEDIA_TYPE_PART
                else:
                    incoming = ingestor.receive()
            elif event is None:
                if incoming is not None:
                    await slots.acquire()
                    pending.append(asyncio.create_task(store(incoming)))
                    incoming = None
                elif skipping is not None:
                    done(StoreOutcome(skipping, MEANINGS[skipping]))
                    skipping = None
            elif incoming is not None:
                part_bytes += len(event)
                if part_bytes > max_part:
                    # This part fails (A770); its remaining bytes are read and dropped.
                    await incoming.abort()
                    incoming = None
                    skipping = Status.OUT_OF_RESOURCES_REQUEST_TOO_LARGE
                    continue
                await incoming.write(event)
    except (MalformedMultipart, PayloadTooLarge) as exc:
        if incoming is not None:
            await incoming.abort()
        outcomes = list(await asyncio.gather(*pending))
        # With nothing to report per instance, the request as a whole failed.
        nothing_stored = not any(o.stored for o in outcomes)
        if isinstance(exc, PayloadTooLarge) and nothing_stored:
            raise
        if not outcomes and incoming is None:
            raise
        return [*outcomes, StoreOutcome(exc.dicom_status, exc.detail)]
    except BaseException:
        if incoming is not None:
            await incoming.abort()
        # Parts already complete are stored all the same; the client is gone.
        raise
    outcomes = list(await asyncio.gather(*pending))
    if not outcomes:
        raise BadRequest("the multipart body has no parts")
    return outcomes


def store_response(
    outcomes: Sequence[StoreOutcome], service: str, study: str | None
) -> tuple[int, dict[str, object]]:
    """The HTTP status and Store Instances Response module (PS3.18 10.5.3, Annex I)."""
    referenced = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    body: dict[str, object] = {}
    studies = {o.study_instance_uid for o in referenced if o.study_instance_uid}
    retrieve_study = study or (studies.pop() if len(studies) == 1 else None)
    if retrieve_study is not None:
        body["00081190"] = _ur(f"{service}/{study_path(retrieve_study)}")
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
    if referenced:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [_referenced_item(o, service) for o in referenced],
        }
    if not referenced:
        syntax_only = all(o.status in _SYNTAX_FAILURES for o in failed)
        return (400 if syntax_only else 409), body
    if failed or any(o.status.is_warning for o in referenced):
        return 202, body
    return 200, body


def _ui(value: str | None) -> dict[str, object]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _ur(value: str) -> dict[str, object]:
    return {"vr": "UR", "Value": [value]}


def _failed_item(outcome: StoreOutcome) -> dict[str, object]:
    return {
        "00081150": _ui(outcome.sop_class_uid),
        "00081155": _ui(outcome.sop_instance_uid),
        "00081197": {"vr": "US", "Value": [int(outcome.status)]},
    }


def _referenced_item(outcome: StoreOutcome, service: str) -> dict[str, object]:
    item: dict[str, object] = {
        "00081150": _ui(outcome.sop_class_uid),
        "00081155": _ui(outcome.sop_instance_uid),
    }
    key = outcome.key
    if key is not None:
        item["00081190"] = _ur(f"{service}/{key.path}")
    if outcome.status.is_warning:
        item["00081196"] = {"vr": "US", "Value": [int(outcome.status)]}
    return item


def _warnings(outcomes: Sequence[StoreOutcome]) -> list[tuple[bytes, bytes]]:
    """Warning headers that say in words why instances failed."""
    lines: list[tuple[bytes, bytes]] = []
    for number, outcome in enumerate(outcomes, start=1):
        if outcome.stored:
            continue
        uid = outcome.sop_instance_uid or "unknown SOP Instance UID"
        text = f"part {number} ({uid}): {outcome.detail}".replace('"', "'")
        value = f'299 dicomweb "{text[:400]}"'.encode("latin-1", "replace")
        lines.append((b"warning", value))
        if len(lines) == _MAX_WARNING_HEADERS:
            break
    return lines
