"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames, bulk data and pixel data.

Every response is checked before its first byte (UIDs, Accept, the resource, frame
numbers, ranges), so each error is a status and a problem document; the body is then
streamed from the blob store and the index a batch at a time, so memory stays flat
whatever the size of a study. Data is sent as stored: where a request asks for another
transfer syntax, `_needs_transcoding` says so and the request is refused (406).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import NoReturn

import orjson
from anyio import to_thread
from pydicom.uid import UID
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomweb.dicomxml import json_to_xml
from dicomweb.errors import NotAcceptable, NotFound, RangeNotSatisfiable
from dicomweb.index import Index
from dicomweb.index.repository import InstanceSummary, StoredInstance
from dicomweb.multipart import (
    OutgoingPart,
    new_boundary,
    related_content_type,
    related_length,
    write_related,
)
from dicomweb.negotiation import (
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    MULTIPART_RELATED,
    NATIVE_LITTLE_ENDIAN,
    OCTET_STREAM,
    ZIP,
    Wanted,
    frame_media_type,
    instance_syntax,
    pixel_syntax,
    response_media_type,
    value_syntax,
    wanted,
)
from dicomweb.resources import is_valid_uid, service_url, validate_uid
from dicomweb.retrieve import (
    ByteSource,
    PixelData,
    bulk_value,
    check_frame_numbers,
    frame_sources,
    parse_bulkdata_path,
    parse_frame_list,
    pixel_data,
    pixel_data_tag,
)
from dicomweb.storage import BlobStore
from dicomweb.zipstream import ZipMember, write_zip

# Instances whose metadata is read from the index in one query while a response streams.
METADATA_BATCH = 200
_BULKDATA_URI = b'"BulkDataURI":"'
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.IGNORECASE)

# A function giving the transfer syntax that data stored in a syntax goes out in for a
# choice of representation, or None if that choice cannot carry it.
Target = Callable[[Wanted, str], str | None]


# Handlers


async def retrieve_instances(request: Request) -> Response:
    """GET a study, series or instance: its PS3.10 files, multipart or zip."""
    study, series, sop = _uids(request)
    zip_allowed = sop is None
    choices = _acceptable(request, DICOM, {ZIP: DICOM} if zip_allowed else {})
    instances = await _find(_index(request), study, series, sop)
    choice, targets = _choose(choices, instances, instance_syntax, values_only=False)
    blobs = _blobs(request)
    if choice.media_type == ZIP:
        members = _zip_members(blobs, instances)
        disposition = f'attachment; filename="{series or study}.zip"'
        return _stream(request, write_zip(members), ZIP, {"Content-Disposition": disposition})
    parts = [
        OutgoingPart(
            f"{DICOM}; transfer-syntax={targets[i.transfer_syntax_uid]}",
            blobs.iter_bytes(i.blob_key),
            length=i.size,
        )
        for i in instances
    ]
    return _multipart(request, parts, DICOM, set(targets.values()))


async def retrieve_metadata(request: Request) -> Response:
    """GET the metadata of a study, series or instance: DICOM JSON or multipart XML."""
    study, series, sop = _uids(request)
    media_type = response_media_type(request.headers.get("accept"))
    index = _index(request)
    instances = await _find(index, study, series, sop)
    service = service_url(str(request.base_url))
    etag = _etag(instances, media_type, service)
    headers = {"ETag": etag, "Vary": "Accept"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    batches = _metadata_batches(index, instances, service)
    if media_type == DICOM_JSON:
        return _stream(request, _json_array(batches), DICOM_JSON, headers)
    boundary = new_boundary()
    body = write_related(_xml_parts(batches), boundary)
    return _stream(request, body, related_content_type(boundary, DICOM_XML), headers)


async def retrieve_frames(request: Request) -> Response:
    """GET frames of an instance, as stored: one part per frame number in the list."""
    study, series, sop = _instance_uids(request)
    numbers = parse_frame_list(request.path_params["frames"])
    choices = _acceptable(request, OCTET_STREAM, {})
    stored = await _instance(_index(request), study, series, sop)
    if pixel_data_tag(stored) is None:
        raise NotFound(f"instance {sop} has no pixel data, so no frames")
    check_frame_numbers(numbers, stored.number_of_frames)
    _, targets = _choose(choices, [stored], pixel_syntax, values_only=True)
    target = targets[stored.transfer_syntax_uid]
    blobs = _blobs(request)
    sources = await frame_sources(blobs, stored, numbers)
    content_type = _part_type(target)
    parts = [OutgoingPart(content_type, s.chunks(blobs), length=s.length) for s in sources]
    return _multipart(request, parts, frame_media_type(target), {target})


async def retrieve_bulkdata(request: Request) -> Response:
    """GET the value a BulkDataURI of the metadata names."""
    study, series, sop = _instance_uids(request)
    path = parse_bulkdata_path(request.path_params["path"])
    choices = _acceptable(request, OCTET_STREAM, {OCTET_STREAM: OCTET_STREAM})
    stored = await _instance(_index(request), study, series, sop)
    if path == pixel_data_tag(stored):
        return await _instance_pixel_data(request, choices, stored)
    choice, targets = _choose(choices, [stored], _value_target, values_only=True)
    source = await bulk_value(_blobs(request), stored, path)
    content_type = _part_type(targets[stored.transfer_syntax_uid])
    return _value_response(request, choice, source, content_type)


async def retrieve_pixel_data(request: Request) -> Response:
    """GET the pixel data of a study, series or instance: one part per native value or
    per encapsulated frame."""
    study, series, sop = _uids(request)
    single = {OCTET_STREAM: OCTET_STREAM} if sop is not None else {}
    choices = _acceptable(request, OCTET_STREAM, single)
    index = _index(request)
    if sop is not None:
        stored = await _instance(index, *_instance_uids(request))
        return await _instance_pixel_data(request, choices, stored)
    images = [i for i in await _find(index, study, series, sop) if i.number_of_frames > 0]
    if not images:
        raise NotFound(f"no instance of {series or study} has pixel data")
    _, targets = _choose(choices, images, pixel_syntax, values_only=True)
    service = service_url(str(request.base_url))
    parts = _pixel_parts(index, _blobs(request), images, targets, service)
    types = {frame_media_type(t) for t in targets.values()}
    part_type = types.pop() if len(types) == 1 else OCTET_STREAM
    boundary = new_boundary()
    return _stream(
        request, write_related(parts, boundary), related_content_type(boundary, part_type)
    )


# Resources


def _uids(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    study = validate_uid(params["study"], "StudyInstanceUID")
    series = params.get("series")
    sop = params.get("instance")
    if series is not None:
        validate_uid(series, "SeriesInstanceUID")
    if sop is not None:
        validate_uid(sop, "SOPInstanceUID")
    return study, series, sop


def _instance_uids(request: Request) -> tuple[str, str, str]:
    """The UIDs of a URL below .../instances/{instance}."""
    study, series, sop = _uids(request)
    if series is None or sop is None:
        raise NotFound("this resource exists for instances only")
    return study, series, sop


def _index(request: Request) -> Index:
    index: Index = request.app.state.index
    return index


def _blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


async def _find(
    index: Index, study: str, series: str | None, sop: str | None
) -> list[InstanceSummary]:
    instances = await index.list_instances(study, series, sop)
    if not instances:
        raise NotFound(_missing(study, series, sop))
    return instances


async def _instance(index: Index, study: str, series: str, sop: str) -> StoredInstance:
    found = await index.get_instances([sop])
    if not found or found[0].study_instance_uid != study or found[0].series_instance_uid != series:
        raise NotFound(_missing(study, series, sop))
    return found[0]


def _missing(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"there is no instance {sop} in series {series} of study {study}"
    if series is not None:
        return f"there is no series {series} in study {study}"
    return f"there is no study {study}"


# Negotiation and the transcoding seam


def _acceptable(request: Request, default_part: str, single: Mapping[str, str]) -> list[Wanted]:
    choices = wanted(request.headers.get("accept"), default_part, single)
    if not choices:
        offered = [f'{MULTIPART_RELATED}; type="{default_part}"', *single]
        raise NotAcceptable(f"none of the accepted media types can be sent; offered: {offered}")
    return choices


def _choose(
    choices: Sequence[Wanted],
    instances: Iterable[InstanceSummary | StoredInstance],
    target: Target,
    *,
    values_only: bool,
) -> tuple[Wanted, dict[str, str]]:
    """The most preferred choice that sends every instance without transcoding, and per
    stored transfer syntax the one it goes out in."""
    stored = sorted({i.transfer_syntax_uid for i in instances})
    transcoding: tuple[Wanted, dict[str, str]] | None = None
    for choice in choices:
        targets = {syntax: target(choice, syntax) for syntax in stored}
        if any(t is None for t in targets.values()):
            continue
        plan = {syntax: t for syntax, t in targets.items() if t is not None}
        if not any(_needs_transcoding(s, t, values_only=values_only) for s, t in plan.items()):
            return choice, plan
        transcoding = transcoding or (choice, plan)
    if transcoding is None:
        raise NotAcceptable("none of the accepted media types can carry this resource")
    _refuse_transcoding(transcoding[1], values_only=values_only)


def _needs_transcoding(stored: str, target: str, *, values_only: bool) -> bool:
    """Whether data stored in `stored` must be re-encoded to be sent in `target`.

    Frames and bulk data carry values only, whose bytes are the same in every native
    little-endian syntax; a whole instance must be in the syntax asked for.
    """
    if stored == target:
        return False
    return not (values_only and stored in NATIVE_LITTLE_ENDIAN and target in NATIVE_LITTLE_ENDIAN)


def _refuse_transcoding(plan: Mapping[str, str], *, values_only: bool) -> NoReturn:
    # Transcoding (pixels/transcode.py) plugs in here, in place of this refusal.
    stored, target = next(
        (s, t) for s, t in plan.items() if _needs_transcoding(s, t, values_only=values_only)
    )
    raise NotAcceptable(
        f"the data is stored as {_syntax_name(stored)} ({stored}) and this server does not "
        f"transcode, so it cannot be sent as {_syntax_name(target)} ({target[:64]}); "
        "ask for transfer-syntax=* to receive it as stored"
    )


def _syntax_name(transfer_syntax: str) -> str:
    if is_valid_uid(transfer_syntax):
        name = str(UID(transfer_syntax).name)
        if name != transfer_syntax:
            return name
    return "an unknown transfer syntax"


def _value_target(choice: Wanted, _stored: str) -> str | None:
    return value_syntax(choice)


def _part_type(transfer_syntax: str) -> str:
    return f"{frame_media_type(transfer_syntax)}; transfer-syntax={transfer_syntax}"


# Responses


def _stream(
    request: Request,
    body: AsyncIterator[bytes],
    media_type: str,
    headers: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """A streamed response; HEAD gets the headers only and reads nothing."""
    if request.method != "HEAD":
        return StreamingResponse(body, status_code, headers=headers, media_type=media_type)
    response = Response(status_code=status_code, headers=headers, media_type=media_type)
    if headers is None or "Content-Length" not in headers:
        # The length of a GET is not known beforehand; the empty body's 0 would be wrong.
        del response.headers["content-length"]
    return response


def _multipart(
    request: Request, parts: list[OutgoingPart], part_type: str, syntaxes: set[str]
) -> Response:
    boundary = new_boundary()
    parameters = {"transfer_syntax": next(iter(syntaxes))} if len(syntaxes) == 1 else {}
    headers: dict[str, str] = {}
    length = related_length(boundary, parts)
    if length is not None:
        headers["Content-Length"] = str(length)
    media_type = related_content_type(boundary, part_type, **parameters)
    return _stream(request, write_related(parts, boundary), media_type, headers)


async def _instance_pixel_data(
    request: Request, choices: Sequence[Wanted], stored: StoredInstance
) -> Response:
    """The pixel data of one instance (its /pixeldata, or its pixel data BulkDataURI)."""
    blobs = _blobs(request)
    pixels = await pixel_data(blobs, stored)
    if len(pixels.sources) > 1:
        # Each frame needs a part of its own.
        choices = [c for c in choices if c.media_type == MULTIPART_RELATED]
        if not choices:
            raise NotAcceptable(
                f"the pixel data has {len(pixels.sources)} frames, which are sent as "
                f'{MULTIPART_RELATED}; type="{pixels.media_type}", one part per frame'
            )
    choice, targets = _choose(choices, [stored], pixel_syntax, values_only=True)
    target = targets[stored.transfer_syntax_uid]
    if choice.media_type != MULTIPART_RELATED:
        return _value_response(request, choice, pixels.sources[0], _part_type(target))
    parts = [
        OutgoingPart(_part_type(target), s.chunks(blobs), length=s.length) for s in pixels.sources
    ]
    return _multipart(request, parts, frame_media_type(target), {target})


def _value_response(
    request: Request, choice: Wanted, source: ByteSource, content_type: str
) -> Response:
    """One value: a single-part body with Range support, or a one-part multipart."""
    blobs = _blobs(request)
    if choice.media_type == MULTIPART_RELATED:
        part = OutgoingPart(content_type, source.chunks(blobs), length=source.length)
        return _multipart(request, [part], OCTET_STREAM, set())
    size = source.length
    headers = {"Accept-Ranges": "bytes"}
    wanted_range = None
    if request.headers.get("if-range") is None:
        # With If-Range the client's copy may be stale; sending it all is always right.
        wanted_range = _byte_range(request.headers.get("range"), size)
    if wanted_range is None:
        headers["Content-Length"] = str(size)
        return _stream(request, source.chunks(blobs), OCTET_STREAM, headers)
    start, stop = wanted_range
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    body = source.slice(start, stop).chunks(blobs)
    return _stream(request, body, OCTET_STREAM, headers, status_code=206)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) of the one range a Range header asks for (RFC 9110 14.2).

    None, to send everything, for no header, a malformed one, another unit or several
    ranges; RangeNotSatisfiable when no byte of the range exists.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the range {header!r} selects no byte", size)
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"the range {header!r} starts past the end ({size} bytes)", size)
    stop = min(int(last) + 1, size) if last else size
    return start, stop


# Bodies


async def _zip_members(
    blobs: BlobStore, instances: Sequence[InstanceSummary]
) -> AsyncIterator[ZipMember]:
    for i in instances:
        name = f"{i.series_instance_uid}/{i.sop_instance_uid}.dcm"
        yield ZipMember(name, i.size, blobs.iter_bytes(i.blob_key))


def _etag(instances: Sequence[InstanceSummary], media_type: str, service: str) -> str:
    """A strong validator: it changes with any instance's content, the set of instances,
    the representation and the service URL the BulkDataURIs carry."""
    digest = hashlib.sha256(f"{media_type}\n{service}\n".encode())
    for i in instances:
        digest.update(f"{i.sop_instance_uid}:{i.sha256}\n".encode())
    return f'"{digest.hexdigest()[:40]}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag` (weak comparison, RFC 9110 13.1.2)."""
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _metadata_batches(
    index: Index, instances: Sequence[InstanceSummary], service: str
) -> AsyncIterator[list[bytes]]:
    """The instances' stored DICOM JSON, with absolute BulkDataURIs, a batch at a time.

    Stored URIs are relative to the service root. They are made absolute by a byte
    replace: the stored JSON is orjson output, whose keys are fixed names and tags, so
    `"BulkDataURI":"` occurs only where that key begins (a quote inside a string value
    is escaped). The prefix is JSON-escaped, as the Host header it comes from is
    client input.
    """
    prefix = _BULKDATA_URI + orjson.dumps(service + "/")[1:-1]
    for start in range(0, len(instances), METADATA_BATCH):
        uids = [i.sop_instance_uid for i in instances[start : start + METADATA_BATCH]]
        stored = await index.get_instances(uids)
        yield [s.metadata.replace(_BULKDATA_URI, prefix) for s in stored]


async def _json_array(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    separator = b"["
    async for batch in batches:
        if batch:
            yield separator + b",".join(batch)
            separator = b","
    yield b"[]" if separator == b"[" else b"]"


async def _xml_parts(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[OutgoingPart]:
    async for batch in batches:
        documents = await to_thread.run_sync(_to_xml, batch)
        for document in documents:
            yield OutgoingPart(DICOM_XML, document)


def _to_xml(batch: list[bytes]) -> list[bytes]:
    return [json_to_xml(orjson.loads(metadata)) for metadata in batch]


async def _pixel_parts(
    index: Index,
    blobs: BlobStore,
    images: Sequence[InstanceSummary],
    targets: Mapping[str, str],
    service: str,
) -> AsyncIterator[OutgoingPart]:
    """The pixel data parts of many instances; each part says whose it is."""
    for start in range(0, len(images), METADATA_BATCH):
        uids = [i.sop_instance_uid for i in images[start : start + METADATA_BATCH]]
        for stored in await index.get_instances(uids):
            if pixel_data_tag(stored) is None:
                continue
            pixels = await pixel_data(blobs, stored)
            content_type = _part_type(targets[stored.transfer_syntax_uid])
            for location, source in _located(pixels, stored, service):
                yield OutgoingPart(content_type, source.chunks(blobs), source.length, location)


def _located(
    pixels: PixelData, stored: StoredInstance, service: str
) -> Iterable[tuple[str, ByteSource]]:
    base = (
        f"{service}/studies/{stored.study_instance_uid}/series/{stored.series_instance_uid}"
        f"/instances/{stored.sop_instance_uid}"
    )
    if not pixels.encapsulated:
        return [(f"{base}/pixeldata", pixels.sources[0])]
    return [(f"{base}/frames/{n}", s) for n, s in enumerate(pixels.sources, start=1)]
