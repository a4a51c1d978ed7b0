"""WADO-URI (PS3.18 chapter 9): one instance named by query parameters, for legacy
clients and viewers' "wadouri" mode.

`GET /wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...&contentType=...`,
at the server root, outside the WADO-RS service root, where such clients look for it.

- application/dicom: the PS3.10 file. `transferSyntax` names the syntax; without it the
  default of the web services applies (PS3.18 9.4.2.4 refers to it; 8.7.3.4 defines it):
  Explicit VR Little Endian, except that lossy compressed pixel data goes out as stored.
- image/jpeg: one frame rendered (`frameNumber`, `windowCenter` with `windowWidth`,
  `rows`, `columns`, `imageQuality`) by `pixels.render`.

Missing or malformed parameters are 400, an unknown instance or frame 404, a media type
or transfer syntax that cannot be produced 406.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomweb.errors import BadRequest, NotAcceptable, NotFound
from dicomweb.index import Index
from dicomweb.index.repository import StoredInstance
from dicomweb.negotiation import (
    ANY_TRANSFER_SYNTAX,
    DICOM,
    Wanted,
    as_sent,
    instance_syntax,
)
from dicomweb.pixels.metadata import RenderError, bulk_paths
from dicomweb.pixels.render import encode_image, render_stored_frame
from dicomweb.pixels.transcode import FrameInfo, TranscodeError
from dicomweb.resources import validate_uid
from dicomweb.retrieve import bulk_value, check_frame_numbers, frame_sources, pixel_data_tag
from dicomweb.storage import BlobStore
from dicomweb.transcoding import Stored, Transcoder, refusal, syntax_name

JPEG = "image/jpeg"
_RENDERING_PARAMETERS = (
    "frameNumber",
    "windowCenter",
    "windowWidth",
    "rows",
    "columns",
    "imageQuality",
)
_BIG_ENDIAN = "1.2.840.10008.1.2.2"


async def retrieve_wado_uri(request: Request) -> Response:
    """GET /wado: Retrieve DICOM Instance or Retrieve Rendered Instance (PS3.18 9.4, 9.5)."""
    params = request.query_params
    request_type = params.get("requestType")
    if request_type != "WADO":
        raise BadRequest(f"requestType must be WADO, not {request_type!r}")
    study = _uid(params, "studyUID")
    series = _uid(params, "seriesUID")
    sop = _uid(params, "objectUID")
    stored = await _instance(request.app.state.index, study, series, sop)
    if _content_type(params.get("contentType"), stored) == DICOM:
        return await _dicom(request, params, stored)
    return await _rendered(request, params, stored)


def _uid(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise BadRequest(f"the {name} parameter is required")
    return validate_uid(value, name)


async def _instance(index: Index, study: str, series: str, sop: str) -> StoredInstance:
    found = await index.get_instances([sop])
    if not found or found[0].study_instance_uid != study or found[0].series_instance_uid != series:
        raise NotFound(f"there is no instance {sop} in series {series} of study {study}")
    return found[0]


def _content_type(value: str | None, stored: StoredInstance) -> str:
    """The media type to send: the first of the contentType list this server produces.
    Without one, images are rendered as JPEG and other instances sent as DICOM."""
    has_pixels = pixel_data_tag(stored) is not None
    if not value:
        return JPEG if has_pixels else DICOM
    for entry in value.split(","):
        media_type = entry.split(";", 1)[0].strip().lower()
        if media_type == DICOM:
            return DICOM
        if media_type in (JPEG, "image/*", "*/*") and has_pixels:
            return JPEG
        if media_type == "*/*":
            return DICOM
    if has_pixels:
        raise NotAcceptable(f"contentType {value[:80]!r}: this server sends {DICOM} or {JPEG}")
    raise NotAcceptable(f"contentType {value[:80]!r}: the instance has no pixel data; use {DICOM}")


async def _dicom(request: Request, params: Mapping[str, str], stored: StoredInstance) -> Response:
    given = [p for p in _RENDERING_PARAMETERS if p in params]
    if given:
        raise BadRequest(f"{given[0]} applies to rendered images, not to {DICOM}")
    source = Stored.from_metadata(
        stored.sop_instance_uid, stored.transfer_syntax_uid, stored.metadata
    )
    target = _dicom_syntax(params.get("transferSyntax"), source)
    why = refusal(source, target, values_only=False)
    if why is not None:
        raise NotAcceptable(
            f"the instance is stored as {syntax_name(stored.transfer_syntax_uid)} and cannot "
            f"be sent as {syntax_name(target)} ({target}): {why}"
        )
    blobs: BlobStore = request.app.state.blobs
    if target == stored.transfer_syntax_uid:
        headers = {"Content-Length": str(stored.size)}
        return _response(request, blobs.iter_bytes(stored.blob_key), headers)
    transcoder: Transcoder = request.app.state.transcoder
    data = await blobs.read_range(stored.blob_key, 0, stored.size)
    try:
        encoded = await transcoder.instance(data, target)
    except TranscodeError as exc:
        raise NotAcceptable(f"the instance cannot be sent as {syntax_name(target)}: {exc}") from exc
    return Response(encoded, media_type=DICOM)


def _dicom_syntax(value: str | None, source: Stored) -> str:
    """The transfer syntax the file goes out in for the transferSyntax parameter."""
    stored = source.transfer_syntax_uid
    if value is None:
        default = instance_syntax(Wanted(DICOM, DICOM, None), stored, source.lossy)
        assert default is not None
        return default
    if value == ANY_TRANSFER_SYNTAX:
        # Not in PS3.18 9.4.2.4, but clients send it as WADO-RS's "*": as stored.
        return as_sent(stored)
    return validate_uid(value, "transferSyntax")


async def _rendered(
    request: Request, params: Mapping[str, str], stored: StoredInstance
) -> Response:
    if "transferSyntax" in params:
        raise BadRequest(f"transferSyntax applies to {DICOM} only (PS3.18 9.4.2.4)")
    number = _integer(params, "frameNumber", 1) or 1
    check_frame_numbers([number], stored.number_of_frames)
    options: dict[str, Any] = {
        "window": _window(params),
        "rows": _integer(params, "rows"),
        "columns": _integer(params, "columns"),
        "frame_number": number,
    }
    quality = _integer(params, "imageQuality", maximum=100)
    metadata: dict[str, Any] = orjson.loads(stored.metadata)
    try:
        info = FrameInfo.from_json(metadata)
    except TranscodeError as exc:
        raise NotAcceptable(f"the instance cannot be rendered: {exc}") from exc
    blobs: BlobStore = request.app.state.blobs
    [source] = await frame_sources(blobs, stored, [number])
    data = await source.read(blobs)
    options["bulk"] = {
        path: await (await bulk_value(blobs, stored, path)).read(blobs)
        for path in bulk_paths(metadata)
    }
    options["byteorder"] = ">" if stored.transfer_syntax_uid == _BIG_ENDIAN else "<"
    transcoder: Transcoder = request.app.state.transcoder
    try:
        image = await transcoder.run(
            _render_jpeg, data, stored.transfer_syntax_uid, info, metadata, quality, options
        )
    except RenderError as exc:
        raise BadRequest(f"the frame cannot be rendered so: {exc}") from exc
    except TranscodeError as exc:
        raise NotAcceptable(f"the frame cannot be rendered: {exc}") from exc
    return Response(image, media_type=JPEG)


def _render_jpeg(
    data: bytes,
    transfer_syntax: str,
    info: FrameInfo,
    metadata: dict[str, Any],
    quality: int | None,
    options: dict[str, Any],
) -> bytes:
    """Decode, render and encode one frame: CPU work for a worker thread."""
    image = render_stored_frame(data, transfer_syntax, info, metadata, **options)
    return encode_image(image, JPEG, quality)


def _integer(
    params: Mapping[str, str], name: str, default: int | None = None, maximum: int | None = None
) -> int | None:
    """A positive integer parameter (at most `maximum`), or `default` if absent."""
    value = params.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1 or (maximum is not None and int(value) > maximum):
        limit = f"1 to {maximum}" if maximum is not None else "a positive integer"
        raise BadRequest(f"{name} must be {limit}, not {value[:40]!r}")
    return int(value)


def _window(params: Mapping[str, str]) -> tuple[float, float] | None:
    """(windowCenter, windowWidth): both or neither (PS3.18 9.5.2.4)."""
    center, width = params.get("windowCenter"), params.get("windowWidth")
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise BadRequest("windowCenter and windowWidth must be given together")
    try:
        window = float(center), float(width)
    except ValueError:
        raise BadRequest(
            f"windowCenter {center[:40]!r} and windowWidth {width[:40]!r} must be numbers"
        ) from None
    if not (abs(window[0]) < float("inf") and 0 < window[1] < float("inf")):
        raise BadRequest("windowWidth must be a positive number and windowCenter finite")
    return window


def _response(request: Request, body: AsyncIterator[bytes], headers: Mapping[str, str]) -> Response:
    """A streamed application/dicom response; HEAD reads nothing."""
    if request.method == "HEAD":
        return Response(headers=dict(headers), media_type=DICOM)
    return StreamingResponse(body, headers=dict(headers), media_type=DICOM)
