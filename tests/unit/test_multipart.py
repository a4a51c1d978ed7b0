"""read_related: the streaming multipart/related parser behind STOW-RS."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Iterable

import pytest

from dicomweb.multipart import (
    MAX_PART_HEADER_BYTES,
    MAX_PART_HEADERS,
    MalformedMultipart,
    PartHeaders,
    TruncatedMultipart,
    parse_content_type,
    read_related,
)

BOUNDARY = "BOUNDARY-7f3a"

Part = tuple[PartHeaders, bytes]


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def events(chunks: Iterable[bytes], boundary: str = BOUNDARY) -> list[object]:
    return [event async for event in read_related(_stream(chunks), boundary)]


async def parts(chunks: Iterable[bytes], boundary: str = BOUNDARY) -> list[Part]:
    """Parse and check the event grammar: (PartHeaders, bytes*, None)*."""
    result: list[Part] = []
    current: PartHeaders | None = None
    body = bytearray()
    async for event in read_related(_stream(chunks), boundary):
        if isinstance(event, PartHeaders):
            assert current is None, "PartHeaders before the previous part ended"
            current, body = event, bytearray()
        elif isinstance(event, bytes):
            assert current is not None, "bytes outside a part"
            assert event, "empty bytes event"
            body += event
        else:
            assert event is None
            assert current is not None, "part end without a part"
            result.append((current, bytes(body)))
            current = None
    assert current is None, "the last part was not ended"
    return result


def build(
    bodies: list[bytes],
    headers: list[list[str]] | None = None,
    *,
    boundary: str = BOUNDARY,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    close: bool = True,
) -> bytes:
    headers = (
        headers if headers is not None else [["Content-Type: application/dicom"]] * len(bodies)
    )
    out = bytearray(preamble)
    for index, (body, part_headers) in enumerate(zip(bodies, headers, strict=True)):
        out += b"\r\n" if index or preamble else b""
        out += f"--{boundary}\r\n".encode()
        for line in part_headers:
            out += line.encode() + b"\r\n"
        out += b"\r\n" + body
    if close:
        out += f"\r\n--{boundary}--".encode() + epilogue
    return bytes(out)


TRICKY_BODIES = [
    b"plain body",
    b"line one\r\nline two\r\n\r\nline four\r\n",
    b"--\r\n--\r\n----",
    # Near misses of the delimiter "\r\n--BOUNDARY-7f3a".
    b"\r\n--BOUNDARY-7f3\r\n--BOUNDARY-7f3b\r\n--BOUNDARY-7f",
    b"--BOUNDARY-7f3a at the start, not after CRLF",
    b"x--BOUNDARY-7f3a\r\n\n--BOUNDARY-7f3a\r\n\r--BOUNDARY-7f3a",
    b"ends with CR\r",
    b"ends with CRLF\r\n",
    b"ends with CRLF--\r\n--",
    bytes(range(256)) * 3,
    b"",
]


def _body_bytes(result: list[Part]) -> list[bytes]:
    return [body for _, body in result]


async def test_single_part() -> None:
    result = await parts([build([b"hello DICOM"])])
    assert len(result) == 1
    headers, body = result[0]
    assert body == b"hello DICOM"
    assert headers.content_type == "application/dicom"
    assert headers.parameters == {}


async def test_several_parts_keep_order_and_headers() -> None:
    bodies = [b"first", b"second part", b"third"]
    headers = [
        ["Content-Type: application/dicom", "Content-Location: a"],
        ["Content-Type: application/octet-stream"],
        ["Content-Type: image/jpeg", "Content-ID: <x@y>"],
    ]
    result = await parts([build(bodies, headers)])
    assert _body_bytes(result) == bodies
    assert [h.content_type for h, _ in result] == [
        "application/dicom",
        "application/octet-stream",
        "image/jpeg",
    ]
    assert dict(result[0][0].headers)["Content-Location"] == "a"
    assert dict(result[2][0].headers)["Content-Id"] == "<x@y>"


async def test_tricky_bodies_survive_intact() -> None:
    result = await parts([build(TRICKY_BODIES)])
    assert _body_bytes(result) == TRICKY_BODIES


async def test_empty_part_body_has_no_bytes_events() -> None:
    got = await events([build([b"", b"x"])])
    assert isinstance(got[0], PartHeaders)
    assert got[1] is None
    assert isinstance(got[2], PartHeaders)
    assert got[3:] == [b"x", None]


async def test_split_at_every_byte_position_gives_identical_parts() -> None:
    body = build(
        TRICKY_BODIES[:7],
        preamble=b"preamble\r\n",
        epilogue=b"\r\nepilogue",
    )
    expected = await parts([body])
    assert _body_bytes(expected) == TRICKY_BODIES[:7]
    for position in range(len(body) + 1):
        got = await parts([body[:position], body[position:]])
        assert got == expected, f"split at {position}"


async def test_three_way_splits_around_the_delimiter() -> None:
    body = build([b"a\r\n--BOUNDARY-7f3", b"\r\n--BOUNDARY-7f3b"])
    expected = await parts([body])
    assert _body_bytes(expected) == [b"a\r\n--BOUNDARY-7f3", b"\r\n--BOUNDARY-7f3b"]
    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1):
            chunks = [body[:first], body[first:second], body[second:]]
            assert await parts(chunks) == expected, f"split at {first}, {second}"


async def test_one_byte_chunks_give_identical_parts() -> None:
    body = build(TRICKY_BODIES, preamble=b"pre\r\n", epilogue=b"\r\npost")
    one_byte = [body[i : i + 1] for i in range(len(body))]
    assert await parts(one_byte) == await parts([body])
    assert _body_bytes(await parts(one_byte)) == TRICKY_BODIES


async def test_empty_chunks_are_ignored() -> None:
    body = build([b"abc", b"def"])
    chunks = [b""] + [c for i in range(len(body)) for c in (body[i : i + 1], b"")]
    assert _body_bytes(await parts(chunks)) == [b"abc", b"def"]


async def test_preamble_and_epilogue_are_ignored() -> None:
    body = build(
        [b"payload"],
        preamble=b"This is a preamble, -- with dashes --\r\nand two lines",
        epilogue=b"\r\nepilogue --BOUNDARY-7f3a\r\n\r\nnot a part\r\n--BOUNDARY-7f3a--",
    )
    result = await parts([body])
    assert _body_bytes(result) == [b"payload"]


async def test_final_delimiter_with_trailing_crlf() -> None:
    body = build([b"payload"]) + b"\r\n"
    assert _body_bytes(await parts([body])) == [b"payload"]


async def test_part_without_headers() -> None:
    body = f"--{BOUNDARY}\r\n\r\nno headers here\r\n--{BOUNDARY}--".encode()
    result = await parts([body])
    assert len(result) == 1
    headers, payload = result[0]
    assert payload == b"no headers here"
    assert headers.headers == ()
    assert headers.content_type is None
    assert headers.parameters == {}


async def test_content_type_header_is_case_insensitive_with_parameters() -> None:
    body = build(
        [b"x"],
        [['CONTENT-TYPE:  Application/DICOM; Transfer-Syntax="1.2.840.10008.1.2.1"; x=Y']],
    )
    ((headers, _),) = await parts([body])
    assert headers.content_type == "application/dicom"
    assert headers.parameters == {"transfer-syntax": "1.2.840.10008.1.2.1", "x": "Y"}


async def test_lower_case_content_type_header() -> None:
    body = build([b"x"], [["content-type: application/dicom+xml; charset=utf-8"]])
    ((headers, _),) = await parts([body])
    assert headers.content_type == "application/dicom+xml"
    assert headers.parameters == {"charset": "utf-8"}


def test_parse_content_type_quoted_boundary() -> None:
    media_type, params = parse_content_type(
        'Multipart/Related; TYPE="application/dicom"; boundary="a b:c"'
    )
    assert media_type == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a b:c"}


def test_parse_content_type_unquoted_type() -> None:
    _, params = parse_content_type("multipart/related; type=application/dicom; boundary=abc")
    assert params == {"type": "application/dicom", "boundary": "abc"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(build([b"abc"], close=False), id="ends-inside-a-part"),
        pytest.param(
            build([b"abc"], close=False) + f"\r\n--{BOUNDARY}\r\n".encode(),
            id="ends-after-a-delimiter",
        ),
        pytest.param(
            build([b"abc"], close=False) + f"\r\n--{BOUNDARY}".encode(),
            id="ends-inside-final-delimiter",
        ),
        pytest.param(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom".encode(), id="ends-inside-headers"
        ),
        pytest.param(b"", id="empty-body"),
    ],
)
async def test_missing_closing_delimiter_is_truncated(body: bytes) -> None:
    with pytest.raises(TruncatedMultipart) as info:
        await events([body])
    assert info.value.http_status == 400


async def test_truncated_body_still_streams_the_complete_parts_first() -> None:
    body = build([b"first", b"second"], close=False)
    seen: list[object] = []
    with pytest.raises(TruncatedMultipart):
        async for event in read_related(_stream([body]), BOUNDARY):
            seen.append(event)
    assert b"first" in seen
    assert seen.count(None) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"this is not multipart at all, there is no boundary anywhere" * 100,
        b'{"00100010": {"vr": "PN"}}',
        build([b"abc"], boundary="some-other-boundary"),
    ],
)
async def test_garbage_without_boundary_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMultipart) as info:
        await events([body])
    assert info.value.http_status == 400


async def test_bytes_after_a_delimiter_are_malformed() -> None:
    body = f"--{BOUNDARY}\r\n\r\nabc\r\n--{BOUNDARY}XYZ\r\n\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MalformedMultipart):
        await events([body])


@pytest.mark.parametrize("boundary", ["", "b" * 71, "b" * 200])
async def test_bad_boundary_is_malformed(boundary: str) -> None:
    with pytest.raises(MalformedMultipart):
        await events([build([b"x"], boundary=boundary or "x")], boundary=boundary)


async def test_seventy_character_boundary_is_accepted() -> None:
    boundary = "b" * 70
    assert _body_bytes(await parts([build([b"x"], boundary=boundary)], boundary)) == [b"x"]


async def test_header_count_limit() -> None:
    allowed = [f"X-Header-{i}: {i}" for i in range(MAX_PART_HEADERS)]
    result = await parts([build([b"x"], [allowed])])
    assert len(result[0][0].headers) == MAX_PART_HEADERS

    too_many = [f"X-Header-{i}: {i}" for i in range(MAX_PART_HEADERS + 1)]
    with pytest.raises(MalformedMultipart) as info:
        await events([build([b"x"], [too_many])])
    assert not isinstance(info.value, TruncatedMultipart)


async def test_header_size_limit() -> None:
    fits = "X-Long: " + "v" * (MAX_PART_HEADER_BYTES - 100)
    result = await parts([build([b"x"], [[fits]])])
    assert dict(result[0][0].headers)["X-Long"] == "v" * (MAX_PART_HEADER_BYTES - 100)

    too_long = "X-Long: " + "v" * (MAX_PART_HEADER_BYTES + 1)
    with pytest.raises(MalformedMultipart) as info:
        await events([build([b"x"], [[too_long]])])
    assert not isinstance(info.value, TruncatedMultipart)


async def test_unterminated_header_line_fails_without_reading_everything() -> None:
    """A header line that never ends must be refused once it passes the limit."""
    consumed = 0
    total_chunks = 1000

    async def body() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed += 1
        yield f"--{BOUNDARY}\r\nX-Endless: ".encode()
        for _ in range(total_chunks):
            consumed += 1
            yield b"a" * 1024

    with pytest.raises(MalformedMultipart) as info:
        async for _ in read_related(body(), BOUNDARY):
            pass
    assert not isinstance(info.value, TruncatedMultipart)
    assert consumed < 2 * MAX_PART_HEADER_BYTES // 1024 + 2


async def test_large_body_is_streamed_in_bounded_events() -> None:
    chunk_size = 64 * 1024
    total = 50 * 1024 * 1024
    # A block with CRs and near-boundary text so the parser has to hold back tails.
    unit = b"\r\n--BOUNDARY-7f3" + bytes(range(256)) + b"\r"
    block = (unit * (chunk_size // len(unit) + 1))[:chunk_size]
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    expected_hash = hashlib.sha256()
    produced = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        yield head
        for _ in range(total // chunk_size):
            produced += 1
            expected_hash.update(block)
            yield block
        yield tail

    digest = hashlib.sha256()
    received = 0
    largest = 0
    produced_at_first_bytes: int | None = None
    ends = 0
    tracemalloc.start()
    try:
        async for event in read_related(body(), BOUNDARY):
            if isinstance(event, bytes):
                if produced_at_first_bytes is None:
                    produced_at_first_bytes = produced
                largest = max(largest, len(event))
                received += len(event)
                digest.update(event)
            elif event is None:
                ends += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert ends == 1
    assert received == total
    assert digest.hexdigest() == expected_hash.hexdigest()
    assert largest <= 2 * chunk_size
    assert produced_at_first_bytes is not None and produced_at_first_bytes <= 2
    assert peak < 16 * chunk_size
