"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames, bulk data and pixel data.

Every response is checked before its first byte (UIDs, Accept, the resource, frame
numbers, ranges, and whether each instance can be sent in the transfer syntax chosen),
so each error is a status and a problem document; the body is then streamed from the
blob store and the index a batch at a time, so memory stays flat whatever the size of a
study. Data stored in the syntax asked for goes out as stored; other data is transcoded
in worker threads (`transcoding`), frames through a cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import orjson
from anyio import to_thread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomweb.dicomxml import json_to_xml
from dicomweb.errors import NotAcceptable, NotFound, RangeNotSatisfiable
from dicomweb.index import Index
from dicomweb.index.repository import InstanceSummary, StoredInstance
from dicomweb.lru import SizedLRU
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
    LOSSY_SYNTAXES,
    MULTIPART_RELATED,
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
from dicomweb.pixels.transcode import FrameInfo, TranscodeError
from dicomweb.resources import etag_matches, missing, path_uids, service_url
from dicomweb.retrieve import (
    ByteSource,
    PixelData,
    bulk_value,
    check_frame_numbers,
    frame_sources,
    is_encapsulated,
    parse_bulkdata_path,
    parse_frame_list,
    pixel_data,
    pixel_data_tag,
)
from dicomweb.storage import BlobStore
from dicomweb.transcoding import (
    Stored,
    Target,
    Transcoder,
    choose,
    needs_description,
    needs_transcoding,
    syntax_name,
)
from dicomweb.zipstream import ZipMember, write_zip

# Instances whose metadata is read from the index in one query while a response streams.
METADATA_BATCH = 200
_BULKDATA_URI = b'"BulkDataURI":"'
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.IGNORECASE)
# Stored metadata longer than this is parsed in a worker thread, not on the event loop.
_PARSE_ON_LOOP = 64 * 1024


# Larger studies and series stream their metadata a batch at a time, and are not cached.
WHOLE_METADATA_INSTANCES = 5000


@dataclass(frozen=True, slots=True)
class CachedMetadata:
    """A study's or series' DICOM JSON metadata at one version of the index."""

    version: tuple[int, int]
    etag: str
    body: bytes


# Keyed by (study, series or "", service URL the BulkDataURIs carry).
MetadataCache = SizedLRU[tuple[str, str, str], CachedMetadata]


# Handlers


async def retrieve_instances(request: Request) -> Response:
    """GET a study, series or instance: its PS3.10 files, multipart or zip."""
    study, series, sop = path_uids(request.path_params)
    zip_allowed = sop is None
    choices = _acceptable(request, DICOM, {ZIP: DICOM} if zip_allowed else {})
    index = _index(request)
    instances = await _find(index, study, series, sop)
    sources = await _described(index, instances, choices, instance_syntax, values_only=False)
    choice, targets = choose(choices, sources, instance_syntax, values_only=False)
    blobs, transcoder = _blobs(request), _transcoder(request)
    if choice.media_type == ZIP:
        members = _zip_members(blobs, transcoder, instances, targets)
        disposition = f'attachment; filename="{series or study}.zip"'
        return _stream(request, write_zip(members), ZIP, {"Content-Disposition": disposition})
    parts = [_instance_part(blobs, transcoder, i, targets[i.sop_instance_uid]) for i in instances]
    if sop is not None and targets[sop] != instances[0].transfer_syntax_uid:
        # One instance: transcoded before the response starts, so that a failure is a
        # status and the length is known.
        parts = [await _produced(parts[0])]
    return _multipart(request, parts, DICOM, set(targets.values()))


async def retrieve_metadata(request: Request) -> Response:
    """GET the metadata of a study, series or instance: DICOM JSON or multipart XML.

    The DICOM JSON of a study or series is kept whole in memory (per process) for as
    long as the index's version of it is unchanged: a viewer asks for the same series
    again and again, and a hit then costs one lookup of a count.
    """
    study, series, sop = path_uids(request.path_params)
    media_type = response_media_type(request.headers.get("accept"))
    index = _index(request)
    service = service_url(str(request.base_url))
    cache: MetadataCache = request.app.state.metadata_cache
    key = (study, series or "", service)
    version = None  # set where the cache can answer: JSON for a study or series
    if media_type == DICOM_JSON and sop is None:
        version = await index.version(study, series)
        if version is None:
            raise NotFound(missing(study, series, sop))
        cached = cache.get(key)
        if cached is not None and cached.version == version:
            return _whole(request, cached.body, cached.etag)
    instances = await _find(index, study, series, sop)
    etag = _etag(instances, media_type, service)
    headers = {"ETag": etag, "Vary": "Accept"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    batches = _metadata_batches(index, instances, service)
    if media_type == DICOM_JSON:
        if version is None or len(instances) > WHOLE_METADATA_INSTANCES:
            return _stream(request, _json_array(batches), DICOM_JSON, headers)
        whole = b"".join([chunk async for chunk in _json_array(batches)])
        cache.put(key, CachedMetadata(version, etag, whole), len(whole))
        return _whole(request, whole, etag)
    boundary = new_boundary()
    body = write_related(_xml_parts(batches), boundary)
    return _stream(request, body, related_content_type(boundary, DICOM_XML), headers)


async def retrieve_frames(request: Request) -> Response:
    """GET frames of an instance: one part per frame number in the list, read from their
    byte ranges, transcoded where the Accept header asks for another syntax."""
    study, series, sop = _instance_uids(request)
    numbers = parse_frame_list(request.path_params["frames"])
    choices = _acceptable(request, OCTET_STREAM, {})
    stored = await _instance(_index(request), study, series, sop)
    if pixel_data_tag(stored) is None:
        raise NotFound(f"instance {sop} has no pixel data, so no frames")
    check_frame_numbers(numbers, stored.number_of_frames)
    source = await _describe(stored, choices, pixel_syntax, values_only=True)
    _, targets = choose(choices, [source], pixel_syntax, values_only=True)
    target = targets[sop]
    blobs = _blobs(request)
    sources = await frame_sources(blobs, stored, numbers)
    content_type = _part_type(target)
    if needs_transcoding(stored.transfer_syntax_uid, target, values_only=True):
        assert source.info is not None  # choose() refuses transcoding without it
        bodies = [
            _transcoded_frame(request, stored, source.info, n, s, target)
            for n, s in zip(numbers, sources, strict=True)
        ]
        parts = [OutgoingPart(content_type, _once(body)) for body in bodies]
        parts[0] = await _produced(parts[0])
    else:
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
    if stored.transfer_syntax_uid == ExplicitVRBigEndian:
        raise NotAcceptable(
            "the instance is stored as Explicit VR Big Endian, and its bulk data values are "
            "not converted to little endian"
        )
    # Values other than pixel data are little-endian bytes in every other syntax.
    values = Stored(sop, ExplicitVRLittleEndian, has_pixel_data=False)
    choice, targets = choose(choices, [values], _value_target, values_only=True)
    source = await bulk_value(_blobs(request), stored, path)
    content_type = _part_type(targets[stored.sop_instance_uid])
    return _value_response(request, choice, source, content_type)


async def retrieve_pixel_data(request: Request) -> Response:
    """GET the pixel data of a study, series or instance: one part per native value or
    per encapsulated frame."""
    study, series, sop = path_uids(request.path_params)
    single = {OCTET_STREAM: OCTET_STREAM} if sop is not None else {}
    choices = _acceptable(request, OCTET_STREAM, single)
    index = _index(request)
    if sop is not None:
        stored = await _instance(index, *_instance_uids(request))
        return await _instance_pixel_data(request, choices, stored)
    images = [i for i in await _find(index, study, series, sop) if i.number_of_frames > 0]
    if not images:
        raise NotFound(f"no instance of {series or study} has pixel data")
    sources = await _described(index, images, choices, pixel_syntax, values_only=True)
    _, targets = choose(choices, sources, pixel_syntax, values_only=True)
    service = service_url(str(request.base_url))
    parts = _pixel_parts(request, images, targets, service)
    types = {frame_media_type(t) for t in targets.values()}
    part_type = types.pop() if len(types) == 1 else OCTET_STREAM
    boundary = new_boundary()
    return _stream(
        request, write_related(parts, boundary), related_content_type(boundary, part_type)
    )


# Resources


def _instance_uids(request: Request) -> tuple[str, str, str]:
    """The UIDs of a URL below .../instances/{instance}."""
    study, series, sop = path_uids(request.path_params)
    if series is None or sop is None:
        raise NotFound("this resource exists for instances only")
    return study, series, sop


def _index(request: Request) -> Index:
    index: Index = request.app.state.index
    return index


def _blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


def _transcoder(request: Request) -> Transcoder:
    transcoder: Transcoder = request.app.state.transcoder
    return transcoder


async def _find(
    index: Index, study: str, series: str | None, sop: str | None
) -> list[InstanceSummary]:
    instances = await index.list_instances(study, series, sop)
    if not instances:
        raise NotFound(missing(study, series, sop))
    return instances


async def _instance(index: Index, study: str, series: str, sop: str) -> StoredInstance:
    found = await index.get_instances([sop])
    if not found or found[0].study_instance_uid != study or found[0].series_instance_uid != series:
        raise NotFound(missing(study, series, sop))
    return found[0]


# Negotiation


def _acceptable(request: Request, default_part: str, single: Mapping[str, str]) -> list[Wanted]:
    choices = wanted(request.headers.get("accept"), default_part, single)
    if not choices:
        offered = [f'{MULTIPART_RELATED}; type="{default_part}"', *single]
        raise NotAcceptable(f"none of the accepted media types can be sent; offered: {offered}")
    return choices


def _description(stored: StoredInstance) -> Stored:
    return Stored.from_metadata(
        stored.sop_instance_uid, stored.transfer_syntax_uid, stored.metadata
    )


async def _parsed_description(stored: StoredInstance) -> Stored:
    """The description from the stored metadata; a large one (multi-frame functional
    groups can take megabytes) is parsed in a worker thread."""
    if len(stored.metadata) > _PARSE_ON_LOOP:
        return await to_thread.run_sync(_description, stored)
    return _description(stored)


async def _describe(
    stored: StoredInstance, choices: Sequence[Wanted], target: Target, *, values_only: bool
) -> Stored:
    """What choosing needs to know of one instance. Its metadata is parsed only when a
    question needs it: frames sent as stored (what viewers ask for) parse nothing."""
    syntax = stored.transfer_syntax_uid
    if needs_description(syntax, choices, target, values_only=values_only):
        return await _parsed_description(stored)
    return Stored(stored.sop_instance_uid, syntax, lossy=syntax in LOSSY_SYNTAXES)


async def _described(
    index: Index,
    instances: Sequence[InstanceSummary],
    choices: Sequence[Wanted],
    target: Target,
    *,
    values_only: bool,
) -> list[Stored]:
    """What choosing needs to know of each instance. Metadata is read only for those
    whose stored syntax leaves a question (see `needs_description`)."""
    syntaxes = {i.transfer_syntax_uid for i in instances}
    asked = {s for s in syntaxes if needs_description(s, choices, target, values_only=values_only)}
    uids = [i.sop_instance_uid for i in instances if i.transfer_syntax_uid in asked]
    described: dict[str, Stored] = {}
    for start in range(0, len(uids), METADATA_BATCH):
        for stored in await index.get_instances(uids[start : start + METADATA_BATCH]):
            described[stored.sop_instance_uid] = await _parsed_description(stored)
    return [
        described.get(i.sop_instance_uid)
        or Stored(
            i.sop_instance_uid,
            i.transfer_syntax_uid,
            lossy=i.transfer_syntax_uid in LOSSY_SYNTAXES,
        )
        for i in instances
    ]


def _value_target(choice: Wanted, _stored: str, _lossy: bool) -> str | None:
    return value_syntax(choice)


def _part_type(transfer_syntax: str) -> str:
    return f"{frame_media_type(transfer_syntax)}; transfer-syntax={transfer_syntax}"


# Responses


def _whole(request: Request, body: bytes, etag: str) -> Response:
    """A DICOM JSON body held whole: 304 when If-None-Match names its ETag."""
    headers = {"ETag": etag, "Vary": "Accept"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(headers=headers, media_type=DICOM_JSON)
    return Response(body, headers=headers, media_type=DICOM_JSON)


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
    frames = stored.number_of_frames
    target_of = _pixel_target(frames)
    source = await _describe(stored, choices, target_of, values_only=True)
    try:
        choice, targets = choose(choices, [source], target_of, values_only=True)
    except NotAcceptable:
        if frames > 1 and all(c.media_type != MULTIPART_RELATED for c in choices):
            raise NotAcceptable(
                f"the pixel data has {frames} frames, which are sent as {MULTIPART_RELATED}; "
                f'type="{frame_media_type(stored.transfer_syntax_uid)}", one part per frame'
            ) from None
        raise
    target = targets[stored.sop_instance_uid]
    transcoded = needs_transcoding(stored.transfer_syntax_uid, target, values_only=True)
    parts = [part for _, part in await _pixel_value_parts(request, stored, target)]
    if transcoded:
        parts[0] = await _produced(parts[0])
    if choice.media_type != MULTIPART_RELATED:
        if transcoded:
            assert isinstance(parts[0].body, bytes)
            value = ByteSource(stored.blob_key, data=parts[0].body)
        else:
            value = (await pixel_data(_blobs(request), stored)).sources[0]
        return _value_response(request, choice, value, _part_type(target))
    return _multipart(request, parts, frame_media_type(target), {target})


def _pixel_target(frames: int) -> Target:
    """pixel_syntax, except that a single-part body cannot hold several compressed
    frames: each needs a part of its own (PS3.18 8.7.3.3.2)."""

    def target(choice: Wanted, stored: str, lossy: bool) -> str | None:
        sent = pixel_syntax(choice, stored, lossy)
        single = choice.media_type != MULTIPART_RELATED
        if sent is not None and single and frames > 1 and is_encapsulated(sent):
            return None
        return sent

    return target


async def _pixel_value_parts(
    request: Request, stored: StoredInstance, target: str
) -> list[tuple[str, OutgoingPart]]:
    """The parts of an instance's pixel data in `target`, each with the path below the
    instance that names it: native pixel data is one value (/pixeldata), encapsulated
    pixel data one part per frame (/frames/n)."""
    blobs = _blobs(request)
    content_type = _part_type(target)
    if not needs_transcoding(stored.transfer_syntax_uid, target, values_only=True):
        pixels = await pixel_data(blobs, stored)
        return [
            (path, OutgoingPart(content_type, s.chunks(blobs), length=s.length))
            for path, s in _located(pixels)
        ]
    info = (await _parsed_description(stored)).info
    assert info is not None  # choose() refuses transcoding without it
    numbers = list(range(1, stored.number_of_frames + 1))
    sources = await frame_sources(blobs, stored, numbers)
    frames = [
        _transcoded_frame(request, stored, info, n, s, target)
        for n, s in zip(numbers, sources, strict=True)
    ]
    if is_encapsulated(target):
        return [
            (f"/frames/{n}", OutgoingPart(content_type, _once(frame)))
            for n, frame in zip(numbers, frames, strict=True)
        ]
    # Native frames of whole bytes: the value's length is known beforehand.
    length = info.native_frame_length * len(numbers)
    body = _joined(frames, padding=length % 2)
    return [("/pixeldata", OutgoingPart(content_type, body, length=length + length % 2))]


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


def _instance_part(
    blobs: BlobStore, transcoder: Transcoder, instance: InstanceSummary, target: str
) -> OutgoingPart:
    """One instance as a part: the stored file, or its transcoding when it is needed."""
    content_type = f"{DICOM}; transfer-syntax={target}"
    if target == instance.transfer_syntax_uid:
        return OutgoingPart(content_type, blobs.iter_bytes(instance.blob_key), length=instance.size)
    work = partial(_transcoded_instance, blobs, transcoder, instance, target)
    return OutgoingPart(content_type, _once(work))


async def _transcoded_instance(
    blobs: BlobStore, transcoder: Transcoder, instance: InstanceSummary, target: str
) -> bytes:
    data = await blobs.read_range(instance.blob_key, 0, instance.size)
    try:
        return await transcoder.instance(data, target)
    except TranscodeError as exc:
        raise NotAcceptable(
            f"instance {instance.sop_instance_uid} cannot be sent as {syntax_name(target)}: {exc}"
        ) from exc


def _transcoded_frame(
    request: Request,
    stored: StoredInstance,
    info: FrameInfo,
    number: int,
    source: ByteSource,
    target: str,
) -> Callable[[], Awaitable[bytes]]:
    """The work of producing frame `number` in `target`, to run when its part is sent."""
    blobs, transcoder = _blobs(request), _transcoder(request)

    async def work() -> bytes:
        try:
            return await transcoder.frame(
                (stored.blob_key, number),
                partial(source.read, blobs),
                stored.transfer_syntax_uid,
                target,
                info,
            )
        except TranscodeError as exc:
            raise NotAcceptable(
                f"frame {number} of instance {stored.sop_instance_uid} cannot be sent as "
                f"{syntax_name(target)}: {exc}"
            ) from exc

    return work


async def _once(work: Callable[[], Awaitable[bytes]]) -> AsyncIterator[bytes]:
    """A body whose bytes `work` produces when the body is sent (never, for HEAD)."""
    yield await work()


async def _joined(
    works: Sequence[Callable[[], Awaitable[bytes]]], padding: int
) -> AsyncIterator[bytes]:
    for work in works:
        yield await work()
    if padding:
        yield b"\0"


async def _produced(part: OutgoingPart) -> OutgoingPart:
    """`part` with its body made now, before the response starts."""
    if isinstance(part.body, bytes):
        return part
    body = b"".join([chunk async for chunk in part.body])
    return OutgoingPart(part.content_type, body, len(body), part.location)


async def _zip_members(
    blobs: BlobStore,
    transcoder: Transcoder,
    instances: Sequence[InstanceSummary],
    targets: Mapping[str, str],
) -> AsyncIterator[ZipMember]:
    for i in instances:
        name = f"{i.series_instance_uid}/{i.sop_instance_uid}.dcm"
        target = targets[i.sop_instance_uid]
        if target == i.transfer_syntax_uid:
            yield ZipMember(name, i.size, blobs.iter_bytes(i.blob_key))
            continue
        # A zip member's size is written before its data: transcode first.
        data = await _transcoded_instance(blobs, transcoder, i, target)
        yield ZipMember(name, len(data), _held(data))


async def _held(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _etag(instances: Sequence[InstanceSummary], media_type: str, service: str) -> str:
    """A strong validator: it changes with any instance's content, the set of instances,
    the representation and the service URL the BulkDataURIs carry."""
    digest = hashlib.sha256(f"{media_type}\n{service}\n".encode())
    for i in instances:
        digest.update(f"{i.sop_instance_uid}:{i.sha256}\n".encode())
    return f'"{digest.hexdigest()[:40]}"'


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
        stored = await index.get_metadata(uids)
        yield [metadata.replace(_BULKDATA_URI, prefix) for metadata in stored]


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
    request: Request,
    images: Sequence[InstanceSummary],
    targets: Mapping[str, str],
    service: str,
) -> AsyncIterator[OutgoingPart]:
    """The pixel data parts of many instances; each part says whose it is."""
    index = _index(request)
    for start in range(0, len(images), METADATA_BATCH):
        uids = [i.sop_instance_uid for i in images[start : start + METADATA_BATCH]]
        for stored in await index.get_instances(uids):
            if pixel_data_tag(stored) is None:
                continue
            base = (
                f"{service}/studies/{stored.study_instance_uid}"
                f"/series/{stored.series_instance_uid}/instances/{stored.sop_instance_uid}"
            )
            target = targets[stored.sop_instance_uid]
            for path, part in await _pixel_value_parts(request, stored, target):
                yield OutgoingPart(part.content_type, part.body, part.length, base + path)


def _located(pixels: PixelData) -> Iterable[tuple[str, ByteSource]]:
    if not pixels.encapsulated:
        return [("/pixeldata", pixels.sources[0])]
    return [(f"/frames/{n}", s) for n, s in enumerate(pixels.sources, start=1)]
