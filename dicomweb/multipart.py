"""Streaming multipart/related (RFC 2387) reading, on defnull's push parser, and writing.

The parser is fast and strict but written for multipart/form-data, whose parts must
carry Content-Disposition; multipart/related parts need not, so segment creation is
overridden to accept any part. The writer streams parts from async sources.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass

from multipart import MultipartError, MultipartSegment, ParserError, PushMultipartParser

from dicomweb.errors import BadRequest
from dicomweb.status import Status

MAX_PART_HEADER_BYTES = 8 * 1024
MAX_PART_HEADERS = 16
# Bytes before the first boundary (a preamble, which clients do not send).
MAX_PREAMBLE_BYTES = 8 * 1024


class MalformedMultipart(BadRequest):
    """The body is not a well-formed multipart message."""

    title = "Malformed multipart body"


class TruncatedMultipart(MalformedMultipart):
    """The body ended before the closing boundary."""

    title = "Truncated multipart body"
    dicom_status = Status.TRUNCATED_DATA_SET


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """The headers of one part; its body follows as bytes events."""

    headers: tuple[tuple[str, str], ...]
    content_type: str | None
    parameters: dict[str, str]


class _RelatedParser(PushMultipartParser):  # type: ignore[misc]
    def _create_segment(self, headerlist: list[tuple[str, str]]) -> MultipartSegment:
        return MultipartSegment(headerlist)

    def _on_segment_headerline(self, line: bytes) -> None:
        # The base parser refuses a bare LF in a header line only when no CRLF follows
        # it in the same chunk, so the outcome hung on how the body was split.
        if b"\n" in line:
            raise ParserError("Invalid line break in segment header")
        super()._on_segment_headerline(line)


def split_unquoted(value: str, separator: str) -> list[str]:
    """Split `value` on `separator` where it is not inside a quoted string."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type or media range into a lower-case media type and parameters.

    Unquoted parameter values may contain "/" (type=application/dicom): clients send
    them so, although RFC 9110 wants such values quoted.
    """
    media_type, *pieces = split_unquoted(value, ";")
    params: dict[str, str] = {}
    for piece in pieces:
        name, _, raw = piece.partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if name.strip():
            params[name.strip().lower()] = raw
    return media_type.strip().lower(), params


async def read_related(
    body: AsyncIterable[bytes], boundary: str
) -> AsyncIterator[PartHeaders | bytes | None]:
    """Parse a multipart body as it arrives.

    Yields, for each part, its PartHeaders, then zero or more chunks of its body, then
    None when the part is complete. Raises MalformedMultipart on a syntax error and
    TruncatedMultipart when the body ends before the closing delimiter.
    """
    if not boundary or len(boundary) > 70:
        raise MalformedMultipart("the multipart boundary is missing or longer than 70 characters")
    try:
        # Header values are decoded as Latin-1, so this gives the bytes the client sent.
        raw_boundary = boundary.encode("latin-1")
    except UnicodeEncodeError:
        raise MalformedMultipart("the multipart boundary is not Latin-1 text") from None
    try:
        parser = _RelatedParser(
            raw_boundary,
            max_header_size=MAX_PART_HEADER_BYTES,
            max_header_count=MAX_PART_HEADERS,
        )
    except MultipartError as exc:
        raise MalformedMultipart(f"invalid multipart boundary: {exc}") from None
    # The body is held until it shows the first boundary, which then reaches the parser
    # with all bytes before it: the parser drops preamble bytes between chunks, so it
    # would accept a boundary after garbage, or not, depending on where chunks split.
    opening = b"--" + raw_boundary
    head: bytearray | None = bytearray()
    try:
        async for chunk in body:
            if head is not None:
                searched = max(0, len(head) - len(opening) + 1)  # no rescans of the head
                head += chunk
                at = head.find(opening, searched)
                # Where the boundary is, not how much has arrived, decides.
                if at > MAX_PREAMBLE_BYTES or (
                    at < 0 and len(head) >= MAX_PREAMBLE_BYTES + len(opening)
                ):
                    raise MalformedMultipart(
                        f"no boundary in the first {MAX_PREAMBLE_BYTES} bytes of the body"
                    )
                if at < 0:
                    continue
                chunk, head = bytes(head), None
            if not chunk:
                continue
            for event in parser.parse(chunk):
                yield _event(event)
            if parser.closed:
                return
        if head:
            for event in parser.parse(bytes(head)):
                yield _event(event)
        for event in parser.parse(b""):
            yield _event(event)
    except MultipartError as exc:
        if "end of" in str(exc).lower() or "unexpected end" in str(exc).lower():
            raise TruncatedMultipart(f"the body ended early: {exc}") from None
        raise MalformedMultipart(f"malformed multipart body: {exc}") from None


def _event(event: MultipartSegment | bytes | None) -> PartHeaders | bytes | None:
    if isinstance(event, MultipartSegment):
        content_type = event.header("Content-Type")
        media_type, params = (
            (None, {}) if content_type is None else parse_content_type(content_type)
        )
        return PartHeaders(tuple(event.headerlist), media_type, params)
    return event


# Pieces smaller than this are joined before they are sent: a frame response of many
# small parts would otherwise cost one ASGI message (and socket write) per header line.
_COALESCE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class OutgoingPart:
    """One part of a multipart/related response.

    `body` is bytes, or an async iterable that is only iterated when the part is
    written, so a response can list thousands of parts without opening any of them.
    `length`, when known, lets the whole response carry a Content-Length.
    """

    content_type: str
    body: bytes | AsyncIterable[bytes]
    length: int | None = None
    location: str | None = None


def new_boundary() -> str:
    """A random boundary. 128 random bits are not expected in any part's bytes, so parts
    are not scanned for it (RFC 2046 5.1.1 asks only that it not occur)."""
    return secrets.token_hex(16)


def related_content_type(boundary: str, part_type: str, **parameters: str) -> str:
    """The Content-Type of a multipart/related message whose parts are `part_type`.

    Keyword parameters (underscores become hyphens) are appended, e.g. transfer_syntax.
    """
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    for name, parameter in parameters.items():
        value += f"; {name.replace('_', '-')}={parameter}"
    return value


def _part_head(boundary: str, part: OutgoingPart) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {part.content_type}"]
    if part.length is not None:
        lines.append(f"Content-Length: {part.length}")
    if part.location is not None:
        lines.append(f"Content-Location: {part.location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def related_length(boundary: str, parts: Iterable[OutgoingPart]) -> int | None:
    """The byte length of write_related(parts), or None if a part's length is unknown."""
    total = len(_closing(boundary))
    for part in parts:
        length = len(part.body) if isinstance(part.body, bytes) else part.length
        if length is None:
            return None
        total += len(_part_head(boundary, part)) + length + 2
    return total


async def write_related(
    parts: AsyncIterable[OutgoingPart] | Iterable[OutgoingPart], boundary: str
) -> AsyncIterator[bytes]:
    """Yield a multipart/related body (RFC 2387) part by part, never holding a whole part
    unless it was given as bytes. Small pieces are joined up to 64 KiB."""
    pending = bytearray()
    async for part in _aiter(parts):
        pending += _part_head(boundary, part)
        pieces = _single(part.body) if isinstance(part.body, bytes) else part.body
        async for piece in pieces:
            if len(piece) >= _COALESCE_BYTES:
                if pending:
                    yield bytes(pending)
                    pending.clear()
                yield piece
            else:
                pending += piece
                if len(pending) >= _COALESCE_BYTES:
                    yield bytes(pending)
                    pending.clear()
        pending += b"\r\n"
    pending += _closing(boundary)
    yield bytes(pending)


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _aiter(
    items: AsyncIterable[OutgoingPart] | Iterable[OutgoingPart],
) -> AsyncIterator[OutgoingPart]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
