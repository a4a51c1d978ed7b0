"""What each fuzz target checks on one input.

The rule: any input gives a `DicomwebError` (a 4xx) or a DICOM failure status, never
another exception (a 500), a hang or an allocation that grows past the input. Every
`check_*` function runs one input through a parser and the code that consumes its
result, and lets anything but the parser's documented errors through (or fails an
assertion). The property tests, the regression replay and the coverage-guided
harnesses in fuzz/ share them; `*_from_bytes` decode a byte string (a corpus file, an
atheris input) into the arguments of the check.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from functools import cache
from typing import Any, TypeVar
from xml.etree import ElementTree

import orjson
from sqlalchemy import Engine, create_engine
from starlette.datastructures import QueryParams

from dicomweb import negotiation
from dicomweb.dicomxml import json_to_xml
from dicomweb.errors import BadRequest, DicomwebError, InstanceRejected, NotAcceptable
from dicomweb.fastheader import read_fast_header
from dicomweb.index import InstanceRecord, schema
from dicomweb.index.search import build_locate, build_select, to_datasets
from dicomweb.ingest import Incoming
from dicomweb.jsonbody import json_object
from dicomweb.multipart import (
    MalformedMultipart,
    PartHeaders,
    parse_content_type,
    read_related,
)
from dicomweb.parsing import extract
from dicomweb.qido import parse_query, warning_header
from dicomweb.query import Level, Query
from dicomweb.stow import _boundary

T = TypeVar("T")

# What uvicorn refuses to send in a header value (the response would become a 500).
BAD_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits on I/O, without an event loop.

    The parsers under test are async only because their input streams are: stepping
    the coroutine by hand costs far less than asyncio.run per input.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the coroutine waited on something")


# --------------------------------------------------------------------------------------
# 1. multipart/related (STOW-RS request bodies)
# --------------------------------------------------------------------------------------

Part = tuple[PartHeaders, bytes]


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _parts(chunks: Iterable[bytes], boundary: str) -> list[Part]:
    """Parse, checking the event grammar: (PartHeaders, non-empty bytes*, None)*."""
    parts: list[Part] = []
    current: PartHeaders | None = None
    body = bytearray()
    async for event in read_related(_stream(chunks), boundary):
        if isinstance(event, PartHeaders):
            assert current is None, "PartHeaders inside a part"
            current, body = event, bytearray()
        elif isinstance(event, bytes):
            assert current is not None and event, "bytes outside a part, or empty"
            body += event
        else:
            assert event is None and current is not None, "a part ended that did not start"
            parts.append((current, bytes(body)))
            current = None
    assert current is None, "the last part did not end"
    return parts


def chunked(data: bytes, size: int) -> list[bytes]:
    """`data` in pieces of `size` bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def parse_multipart(chunks: Sequence[bytes], boundary: str) -> list[Part] | None:
    """The parts of a body that arrives as `chunks`; None when it is refused."""
    try:
        return run(_parts(chunks, boundary))
    except MalformedMultipart:  # TruncatedMultipart too
        return None


def check_multipart(
    content_type: str, body: bytes, chunk_size: int | None = None
) -> list[Part] | None:
    """A STOW-RS request's Content-Type and body, as stow.py reads them.

    The body is parsed whole and in pieces of 7 bytes and of `chunk_size` (by default
    one that follows the body's length, so that a fuzzer varies it); all must agree,
    since where the network splits a body must not change its meaning.
    """
    try:
        boundary = _boundary(content_type)
    except DicomwebError as exc:
        assert exc.http_status < 500
        return None
    whole = parse_multipart([body], boundary)
    for size in (7, chunk_size or 1 + len(body) % 61):
        pieces = parse_multipart(chunked(body, size), boundary)
        assert whole == pieces, f"the parse depends on how the body is split ({size} bytes)"
    return whole


def multipart_from_bytes(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """A corpus file: request headers ("name: value" lines), an empty line, the body."""
    head, _, body = data.partition(b"\n\n")
    headers = []
    for line in head.split(b"\n"):
        name, _, value = line.rstrip(b"\r").partition(b":")
        # Latin-1, as Starlette decodes header values.
        headers.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
    return headers, body


# --------------------------------------------------------------------------------------
# 2. QIDO-RS query parameters
# --------------------------------------------------------------------------------------

LEVELS = {"studies": Level.STUDY, "series": Level.SERIES, "instances": Level.INSTANCE}


@cache
def _database() -> Engine:
    """An empty index in memory: executing a query finds what only binding finds."""
    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    return engine


def check_qido(params: Sequence[tuple[str, str]], level: Level) -> Query | None:
    """Parse QIDO-RS parameters, then build and run the SQL that the index would run.

    Returns the Query, or None when the parameters were refused with BadRequest.
    """
    try:
        query, warnings = parse_query(params, level)
    except BadRequest:
        return None
    for text in warnings:
        name, value = warning_header(text)
        assert not BAD_HEADER_VALUE.search(value), f"header {name!r} carries {value!r}"
    assert query.limit >= 1 and query.offset >= 0
    with _database().connect() as conn:
        rows = conn.execute(build_select(query)).all()
        to_datasets(query, rows)
        conn.execute(build_locate(query)).all()
    return query


def qido_from_bytes(data: bytes) -> tuple[list[tuple[str, str]], Level]:
    """A corpus file: `studies?`, `series?` or `instances?` and a raw query string."""
    path, _, query = data.partition(b"?")
    level = LEVELS.get(path.decode("latin-1").strip("/"), Level.STUDY)
    # As Starlette reads request.query_params from the raw query string.
    return QueryParams(query).multi_items(), level


# --------------------------------------------------------------------------------------
# 3. Accept headers
# --------------------------------------------------------------------------------------

_STORED_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.100",
    "1.2.3.4",
)
# (default part type, single-part types) as the retrieve resources ask.
_RETRIEVE_SHAPES: tuple[tuple[str, dict[str, str]], ...] = (
    (negotiation.DICOM, {negotiation.ZIP: negotiation.DICOM, negotiation.DICOM: "dicom"}),
    (negotiation.OCTET_STREAM, {negotiation.OCTET_STREAM: negotiation.OCTET_STREAM}),
    (negotiation.DICOM_XML, {}),
)


def check_accept(value: str | None) -> str | None:
    """Negotiate a data set response and every kind of retrieve response for `value`.

    Returns the data set media type, or None when the answer is 406.
    """
    items = negotiation.parse_accept(value)
    qualities = [item.quality for item in items]
    assert all(0.0 <= q <= 1.0 for q in qualities)
    assert qualities == sorted(qualities, reverse=True)
    candidates = [negotiation.DICOM_JSON, negotiation.DICOM_XML]
    assert negotiation.choose(value, candidates) in (*candidates, None)
    for default_part, single_part in _RETRIEVE_SHAPES:
        for choice in negotiation.wanted(value, default_part, single_part):
            assert choice.quality > 0
            negotiation.value_syntax(choice)
            for stored in _STORED_SYNTAXES:
                for lossy in (False, True):
                    negotiation.instance_syntax(choice, stored, lossy)
                    negotiation.pixel_syntax(choice, stored, lossy)
    try:
        return negotiation.response_media_type(value)
    except NotAcceptable:
        return None


def accept_from_bytes(data: bytes) -> str:
    """A corpus file: the header value, as Starlette decodes it."""
    return data.decode("latin-1")


# --------------------------------------------------------------------------------------
# 4. DICOM Part 10 headers at ingest
# --------------------------------------------------------------------------------------


class _MemoryBlob:
    """Just enough of a StagedBlob for `Incoming`: keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def abort(self) -> None:
        self.data.clear()


async def _received(data: bytes, chunk_size: int) -> bytes:
    blob = _MemoryBlob()
    incoming = Incoming(blob)  # type: ignore[arg-type]
    for chunk in chunked(data, chunk_size):
        if chunk:
            await incoming.write(chunk)
    await incoming.close()
    return bytes(blob.data)


def received(data: bytes, chunk_size: int = 1 << 20) -> bytes:
    """The bytes ingest stores for a part: a preamble is added when it lacks one."""
    return run(_received(data, chunk_size))


def check_dicom(data: bytes, bulk_data_threshold: int = 1024) -> InstanceRecord | None:
    """Ingest's header parse of a part's bytes, and what is made of its result.

    Returns the index record, or None when the instance was refused with a failure
    status (InstanceRejected), as STOW-RS and C-STORE report it.
    """
    stored = received(data)
    # The fast reader declines what it does not handle (None); it never raises.
    read_fast_header(stored, bulk_data_threshold, "", record_positions=True)
    try:
        record = extract(stored, bulk_data_threshold)
    except InstanceRejected as exc:
        assert exc.dicom_status.is_failure
        return None
    # Stored metadata is served as DICOM JSON and XML (WADO-RS, QIDO-RS includefield).
    metadata = orjson.loads(record.metadata)
    check_dicom_json(metadata, produced=True)
    orjson.loads(record.bulkdata)
    orjson.loads(record.study.attributes)
    orjson.loads(record.series.attributes)
    if record.frames is not None:
        for frame in orjson.loads(record.frames):
            for offset, length in zip(frame[::2], frame[1::2], strict=True):
                assert offset >= 0 and offset + length <= len(stored), "a frame past the end"
    return record


# --------------------------------------------------------------------------------------
# 5. JSON request bodies and the DICOM JSON model
# --------------------------------------------------------------------------------------


class _Body:
    """Just enough of a Request for `json_object`."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def body(self) -> bytes:
        return self._body


def check_json_body(body: bytes) -> dict[str, Any] | None:
    """A JSON request body: an object, or None when refused with BadRequest."""
    try:
        value = run(json_object(_Body(body)))  # type: ignore[arg-type]
    except BadRequest:
        return None
    assert isinstance(value, dict)
    return value


def check_dicom_json(model: dict[str, Any], *, produced: bool = False) -> bytes | None:
    """The Native DICOM Model XML of a DICOM JSON object; it must be well-formed.

    A malformed model may be refused with ValueError, unless the server `produced` it.
    Returns the XML, or None when refused.
    """
    try:
        xml = json_to_xml(model)
    except ValueError:
        if produced:
            raise
        return None
    ElementTree.fromstring(xml)
    return xml


def check_json_bytes(data: bytes) -> None:
    """A corpus file: a JSON body; an object is also read as a DICOM JSON model."""
    value = check_json_body(data)
    if value is not None:
        check_dicom_json(value)


# --------------------------------------------------------------------------------------
# Byte-level entry points, by target (corpus directories are named after the keys)
# --------------------------------------------------------------------------------------


def _multipart_bytes(data: bytes) -> None:
    headers, body = multipart_from_bytes(data)
    content_type = dict(headers).get("content-type", "")
    check_multipart(content_type, body)
    # read_related takes any str: the boundary read as UTF-8 this time, so that bytes
    # that are not UTF-8 become lone surrogates.
    text = content_type.encode("latin-1").decode("utf-8", "surrogateescape")
    boundary = parse_content_type(text)[1].get("boundary")
    if boundary:
        parse_multipart([body], boundary)


def _qido_bytes(data: bytes) -> None:
    check_qido(*qido_from_bytes(data))


def _accept_bytes(data: bytes) -> None:
    check_accept(accept_from_bytes(data))


def _dicom_bytes(data: bytes) -> None:
    check_dicom(data)
    check_dicom(data, bulk_data_threshold=0)


BYTE_CHECKS = {
    "multipart": _multipart_bytes,
    "qido": _qido_bytes,
    "accept": _accept_bytes,
    "dicom": _dicom_bytes,
    "dicomjson": check_json_bytes,
}
