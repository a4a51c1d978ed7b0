"""Streaming multipart/related (RFC 2387) reading, on defnull's push parser.

The parser is fast and strict but written for multipart/form-data, whose parts must
carry Content-Disposition; multipart/related parts need not, so segment creation is
overridden to accept any part.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from multipart import MultipartError, MultipartSegment, PushMultipartParser

from dicomweb.errors import BadRequest
from dicomweb.status import Status

MAX_PART_HEADER_BYTES = 8 * 1024
MAX_PART_HEADERS = 16


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
        parser = _RelatedParser(
            boundary,
            max_header_size=MAX_PART_HEADER_BYTES,
            max_header_count=MAX_PART_HEADERS,
        )
    except MultipartError as exc:
        raise MalformedMultipart(f"invalid multipart boundary: {exc}") from None
    try:
        async for chunk in body:
            if not chunk:
                continue
            for event in parser.parse(chunk):
                yield _event(event)
            if parser.closed:
                return
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
