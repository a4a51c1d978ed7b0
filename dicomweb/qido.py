"""QIDO-RS (PS3.18 10.6): query parameters -> Query -> index -> DICOM JSON or XML."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

import orjson
from anyio import to_thread
from pydicom.datadict import tag_for_keyword
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.auth.grant import limit_query
from dicomweb.dicomxml import json_to_xml
from dicomweb.errors import BadRequest
from dicomweb.index import Index
from dicomweb.index.search import SearchResult
from dicomweb.negotiation import DICOM_XML, response_media_type
from dicomweb.query import (
    BY_TAG,
    SEQUENCES,
    Attribute,
    ItemMatch,
    Level,
    Match,
    Query,
    SequenceKey,
    parse_match,
    rank,
)
from dicomweb.resources import service_url, validate_uid

# The most results one response carries; more are reached with offset.
MAX_RESULTS = 1000
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# Larger limits and offsets mean the same as this one (no more results), and the
# databases' 64-bit integers hold it.
_LARGEST_NUMBER = 10**18
# Characters a header value must not carry (uvicorn refuses to send them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IGNORED_QUIETLY = frozenset({"charset", "accept"})


async def search_studies(request: Request) -> Response:
    """GET /studies."""
    return await _search(request, Level.STUDY)


async def search_series(request: Request) -> Response:
    """GET /series and /studies/{study}/series."""
    return await _search(request, Level.SERIES)


async def search_instances(request: Request) -> Response:
    """GET /instances, /studies/{study}/instances, /studies/{study}/series/{series}/instances."""
    return await _search(request, Level.INSTANCE)


async def _search(request: Request, level: Level) -> Response:
    accept = request.query_params.get("accept") or request.headers.get("accept")
    media_type = response_media_type(accept)
    query, warnings = parse_query(request.query_params.multi_items(), level)
    study = request.path_params.get("study")
    series = request.path_params.get("series")
    if study is not None:
        query.study_instance_uid = validate_uid(study, "StudyInstanceUID in the request URL")
    if series is not None:
        query.series_instance_uid = validate_uid(series, "SeriesInstanceUID in the request URL")
    # A token or signed link limited to some studies finds only those (auth/grant.py).
    limit_query(request.scope.get("auth"), query)
    index: Index = request.app.state.index
    result = await index.search(query)
    if result.more:
        warnings.append(
            "The number of results exceeded the maximum supported by the server or the "
            "limit of the request. Additional results can be requested."
        )
    service = service_url(str(request.base_url))
    _add_retrieve_urls(result, query, service)
    if not result.datasets:
        response = Response(status_code=204)
    elif media_type == DICOM_XML:
        boundary = secrets.token_hex(16)
        body = await to_thread.run_sync(_xml_body, result, boundary)
        response = Response(
            body,
            media_type=f'multipart/related; type="{DICOM_XML}"; boundary={boundary}',
        )
    else:
        body = orjson.dumps(result.datasets, option=orjson.OPT_SORT_KEYS)
        response = Response(body, media_type=media_type)
    response.raw_headers.extend(warning_header(text) for text in warnings)
    return response


def warning_header(text: str) -> tuple[bytes, bytes]:
    """A `Warning: 299` header (PS3.18 8.3.4, RFC 7234 5.5) carrying `text`."""
    quoted = _CONTROL.sub(" ", text.replace('"', "'"))[:400]
    return b"warning", f'299 dicomweb "{quoted}"'.encode("latin-1", "replace")


def parse_query(params: Iterable[tuple[str, str]], level: Level) -> tuple[Query, list[str]]:
    """The Query that QIDO-RS parameters ask for, and Warning texts for ignored ones.

    Malformed values of supported parameters raise BadRequest.
    """
    query = Query(level=level, limit=MAX_RESULTS)
    unsupported: list[str] = []
    warnings: list[str] = []
    values: dict[Attribute | SequenceKey, list[tuple[Attribute | None, str]]] = {}
    for name, value in params:
        lowered = name.lower()
        if lowered == "limit":
            query.limit = _positive(name, value, minimum=1)
            if query.limit > MAX_RESULTS:
                warnings.append(f"limit {query.limit} is over the maximum of {MAX_RESULTS}")
                query.limit = MAX_RESULTS
        elif lowered == "offset":
            query.offset = _positive(name, value, minimum=0)
        elif lowered == "fuzzymatching":
            query.fuzzy = _boolean(name, value)
        elif lowered == "includefield":
            _include(query, value)
        elif lowered in _IGNORED_QUIETLY:
            continue
        else:
            found = _key(name, level)
            if found is None:
                unsupported.append(name)
            else:
                values.setdefault(found[0], []).append((found[1], value))
    for key, given in values.items():
        match = _match(key, given)
        query.include.add(key.tag)
        if match is not None:
            query.matches.append((key, match))
    if unsupported:
        warnings.append(
            "These query keys are not supported and were ignored: " + ", ".join(unsupported)
        )
    return query, warnings


def _positive(name: str, value: str, minimum: int) -> int:
    # ASCII only: str.isdigit() admits digits that int() refuses, such as "²".
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"{name} must be an integer of at least {minimum}, not {value!r}")
    digits = value.lstrip("0")
    # Clamped before int(): int() refuses strings of over 4300 digits.
    number = int(digits or "0") if len(digits) <= 18 else _LARGEST_NUMBER
    if number < minimum:
        raise BadRequest(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return min(number, _LARGEST_NUMBER)


def _boolean(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, not {value!r}")
    return value.lower() == "true"


def _include(query: Query, value: str) -> None:
    for field in value.split(","):
        field = field.strip()
        if not field:
            continue
        if field.lower() == "all":
            query.include_all = True
            continue
        tag = _tag(field.split(".")[0])
        if tag is None:
            raise BadRequest(f"includefield: {field!r} is not an attribute keyword or tag")
        query.include.add(tag)


def _tag(name: str) -> int | None:
    """The tag an attribute keyword or 8-digit hexadecimal tag names."""
    if _TAG.fullmatch(name):
        return int(name, 16)
    found = tag_for_keyword(name)
    return None if found is None else int(found)


def _key(name: str, level: Level) -> tuple[Attribute | SequenceKey, Attribute | None] | None:
    """The matching key a parameter names at this level (with its item key), if supported."""
    path = name.split(".")
    tags = [_tag(part) for part in path]
    if any(t is None for t in tags) or len(path) > 2:
        return None
    if len(path) == 2:
        sequence = next((s for s in SEQUENCES if s.tag == tags[0]), None)
        if sequence is None or rank(sequence.level) > rank(level):
            return None
        item = next((a for a in sequence.items if a.tag == tags[1]), None)
        return None if item is None else (sequence, item)
    attribute = BY_TAG.get(tags[0] or 0)
    if attribute is None or not attribute.matching or rank(attribute.level) > rank(level):
        return None
    return attribute, None


def _match(key: Attribute | SequenceKey, given: list[tuple[Attribute | None, str]]) -> Match | None:
    if isinstance(key, SequenceKey):
        items: list[tuple[Attribute, Match]] = []
        for item, value in given:
            assert item is not None
            match = parse_match(item, value)
            if match is not None:
                items.append((item, match))
        return ItemMatch(tuple(items)) if items else None
    if len(given) > 1 and key.vr != "UI":
        raise BadRequest(f"{key.keyword} is given more than once")
    return parse_match(key, ",".join(value for _, value in given))


def _add_retrieve_urls(result: SearchResult, query: Query, service: str) -> None:
    """RetrieveURL (0008,1190) of each result, at the query's level."""
    for ds in result.datasets:
        url = f"{service}/studies/{_uid(ds, '0020000D', query.study_instance_uid)}"
        if query.level is not Level.STUDY:
            url += f"/series/{_uid(ds, '0020000E', query.series_instance_uid)}"
        if query.level is Level.INSTANCE:
            url += f"/instances/{_uid(ds, '00080018', None)}"
        ds["00081190"] = {"vr": "UR", "Value": [url]}


def _uid(ds: dict[str, object], tag: str, scope: str | None) -> str:
    element = ds.get(tag)
    if isinstance(element, dict) and element.get("Value"):
        return str(element["Value"][0])
    assert scope is not None
    return scope


def _xml_body(result: SearchResult, boundary: str) -> bytes:
    parts = [
        f"--{boundary}\r\nContent-Type: {DICOM_XML}\r\n\r\n".encode() + json_to_xml(ds) + b"\r\n"
        for ds in result.datasets
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()
