"""multipart/related (STOW-RS bodies): any body is parsed or refused with a 4xx.

Bodies are built well-formed from parts and then damaged: boundaries and headers
mutated, bytes inserted, deleted and flipped, the body cut short, and split into
chunks anywhere. End to end, the same bodies are POSTed to /studies.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dicomweb.multipart import MalformedMultipart, OutgoingPart, read_related, write_related
from tests.fuzz.dicomseeds import seeds
from tests.fuzz.served import Served, check_response, end_to_end_examples
from tests.fuzz.targets import check_multipart, chunked, parse_multipart, run

# RFC 2046 bchars; a boundary may not end in a space.
_BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "

good_boundaries = st.text(_BCHARS, min_size=1, max_size=70).map(lambda b: b.rstrip() or "b")
boundaries = st.one_of(
    good_boundaries,
    good_boundaries,
    st.text(max_size=80),
    st.text(st.characters(max_codepoint=0xFF), min_size=1, max_size=72),
)

_CONTENT_TYPES = [
    "application/dicom",
    "Application/DICOM",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
    'application/dicom; transfer-syntax="1.2.840.10008.1.2.4.50"',
    "application/dicom+json",
    "text/plain; charset=utf-8",
    "",
    ";;;",
    '"',
    'application/dicom; x="unterminated',
]
_HEADER_NAMES = ["Content-Type", "Content-Length", "Content-Location", "Content-ID", "X-Foo"]
header_lines = st.one_of(
    st.sampled_from(_CONTENT_TYPES).map(lambda v: f"Content-Type: {v}".encode("latin-1")),
    st.integers(-5, 5000).map(lambda n: f"Content-Length: {n}".encode()),
    st.builds(
        lambda name, value: f"{name}:{value}".encode(),
        st.sampled_from(_HEADER_NAMES) | st.text(min_size=0, max_size=12),
        st.text(max_size=30),
    ),
    st.binary(max_size=40),
    st.text(" \t", min_size=1, max_size=2).map(lambda s: s.encode() + b"folded"),
)


@st.composite
def part_bodies(draw: st.DrawFn) -> bytes:
    """A part body: binary, a real instance (maybe cut short), or boundary look-alikes."""
    kind = draw(st.sampled_from(["binary", "dicom", "lookalike", "empty"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "dicom":
        data = draw(st.sampled_from(sorted(seeds().values())))
        return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    if kind == "lookalike":
        pieces = st.sampled_from([b"\r\n", b"--", b"\r", b"\n", b"-", b"x", b"\r\n--"])
        return b"".join(draw(st.lists(pieces, max_size=12)))
    return b""


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """(boundary, body): a multipart message, well-formed or damaged."""
    boundary = draw(boundaries)
    delimiter = boundary.encode("utf-8", "replace")
    if draw(st.integers(0, 9)) == 0:
        # The body's boundary differs from the header's.
        delimiter = draw(st.binary(min_size=1, max_size=10))
    newline = b"\r\n" if draw(st.integers(0, 7)) else draw(st.sampled_from([b"\n", b"\r"]))
    out = bytearray(draw(st.sampled_from([b"", b"preamble\r\n", b"\r\n"])))
    for _ in range(draw(st.integers(0, 3))):
        out += b"--" + delimiter + draw(st.sampled_from([b"", b"", b" \t", b"x"])) + newline
        for line in draw(st.lists(header_lines, max_size=4)):
            out += line + newline
        out += newline + draw(part_bodies()) + newline
    if draw(st.integers(0, 5)):
        out += b"--" + delimiter + b"--"
        out += draw(st.sampled_from([b"\r\n", b"", b"epilogue", b"\r\n--" + delimiter]))
    for _ in range(draw(st.integers(0, 3))):
        out = _mutate(draw, out, delimiter)
    return boundary, bytes(out)


def _mutate(draw: st.DrawFn, data: bytearray, delimiter: bytes) -> bytearray:
    at = draw(st.integers(0, len(data)))
    operation = draw(st.sampled_from(["cut", "delete", "insert", "flip"]))
    if operation == "cut":
        return data[:at]
    if operation == "delete":
        return data[:at] + data[at + draw(st.integers(1, 16)) :]
    if operation == "insert":
        tokens = [b"\r\n", b"\r", b"\n", b"--", b"\r\n--" + delimiter, b"\x00", b":", b" "]
        return data[:at] + draw(st.sampled_from(tokens)) + data[at:]
    if at < len(data):
        data[at] ^= 1 << draw(st.integers(0, 7))
    return data


def content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary="{boundary}"'


@given(messages(), st.integers(1, 64))
@example(("\ud800", b"--x\r\n\r\n--x--"), 7)  # a boundary that is not Latin-1
@example(("b", b"--b\r\nContent-Type: ;;;\r\n\r\nx\r\n--b--"), 3)
def test_read_related(message: tuple[str, bytes], chunk_size: int) -> None:
    boundary, body = message
    check_multipart(content_type(boundary), body, chunk_size)
    parse_multipart(chunked(body, chunk_size), boundary)  # without the Content-Type check


@given(st.text(max_size=120))
def test_content_type_header(value: str) -> None:
    check_multipart(value, b"--b\r\n\r\nx\r\n--b--\r\n")


@given(
    good_boundaries,
    st.lists(st.tuples(st.sampled_from(_CONTENT_TYPES[:4]), part_bodies()), max_size=4),
    st.integers(1, 100),
)
def test_round_trip(boundary: str, parts: list[tuple[str, bytes]], chunk_size: int) -> None:
    """What write_related writes, read_related reads back, however it is split."""
    # A body that holds the delimiter cannot be sent with this boundary.
    delimiter = b"\r\n--" + boundary.encode()
    parts = [(t, b) for t, b in parts if delimiter not in b"\r\n" + b + b"\r\n"]

    async def body() -> bytes:
        outgoing = [OutgoingPart(t, b) for t, b in parts]
        return b"".join([piece async for piece in write_related(outgoing, boundary)])

    parsed = parse_multipart(chunked(run(body()), chunk_size), boundary)
    assert parsed is not None
    assert [(h.content_type, b) for h, b in parsed] == [
        (t.split(";")[0].strip().lower(), b) for t, b in parts
    ]


# --------------------------------------------------------------------------------------
# Small inputs that claim to be large are refused without memory to match
# --------------------------------------------------------------------------------------

_CHUNK = b"x" * 65536
_CHUNKS = 64  # 4 MiB in all


def _peak(chunks: Iterator[bytes], boundary: str = "b") -> tuple[bool, int]:
    """(refused, peak bytes allocated) for parsing a streamed body."""

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def drain() -> None:
        async for _ in read_related(stream(), boundary):
            pass

    tracemalloc.start()
    try:
        run(drain())
        refused = False
    except MalformedMultipart:
        refused = True
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return refused, peak


def _header_of_megabytes() -> Iterator[bytes]:
    yield b"--b\r\nContent-Type: "
    for _ in range(_CHUNKS):
        yield _CHUNK


def _many_headers() -> Iterator[bytes]:
    yield b"--b\r\n"
    for _ in range(100_000):
        yield b"X-A: 1\r\n"


def _preamble_of_megabytes() -> Iterator[bytes]:
    for _ in range(_CHUNKS):
        yield _CHUNK


def _part_of_megabytes() -> Iterator[bytes]:
    yield b"--b\r\n\r\n"
    for _ in range(_CHUNKS):
        yield _CHUNK
    yield b"\r\n--b--\r\n"


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (_header_of_megabytes, True),
        (_many_headers, True),
        (_preamble_of_megabytes, True),
        (_part_of_megabytes, False),  # streamed through, never held
    ],
)
def test_memory_stays_bounded(body: object, refused: bool) -> None:
    assert callable(body)
    was_refused, peak = _peak(body())
    assert was_refused is refused
    assert peak < 1 << 20, f"{peak} bytes held for a streamed body"


# --------------------------------------------------------------------------------------
# End to end: POST /dicomweb/studies
# --------------------------------------------------------------------------------------

_REQUEST_TYPES = [
    "multipart/related; type=application/dicom; boundary={b}",
    'multipart/related; type="application/dicom"; boundary="{b}"',
    "multipart/related; boundary={b}",
    "multipart/related; type=application/dicom+json; boundary={b}",
    "multipart/related; type=application/dicom",
    "multipart/form-data; boundary={b}",
    "application/dicom",
    "multipart/related; boundary={b}; boundary=other",
    "multipart/related;boundary=",
]


@settings(max_examples=end_to_end_examples())
@given(
    messages(),
    st.sampled_from(_REQUEST_TYPES),
    st.sampled_from(["", "/1.2.826.0.1.3680043.8.498.100", "/1.2.3", "/not-a-uid"]),
    st.sampled_from(["application/dicom+json", "application/dicom+xml", "text/html", None]),
)
def test_store_instances(
    served: Served, message: tuple[str, bytes], request_type: str, study: str, accept: str | None
) -> None:
    boundary, body = message
    headers = {"content-type": request_type.format(b=boundary).encode("utf-8", "replace")}
    if accept is not None:
        headers["accept"] = accept.encode()
    response = served.request("POST", f"/dicomweb/studies{study}", content=body, headers=headers)
    check_response(response)


@pytest.mark.parametrize("length", [b"\xb2", b"9" * 5000, b"00000000000000000000000001"])
def test_store_instances_content_length(served: Served, length: bytes) -> None:
    """A Content-Length that is digits to str.isdigit() only, or too long for int()."""
    response = served.request(
        "POST",
        "/dicomweb/studies",
        content=b"--b--\r\n",
        headers={"content-type": "multipart/related; boundary=b", "content-length": length},
    )
    check_response(response)
