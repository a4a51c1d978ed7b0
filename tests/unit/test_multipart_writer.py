"""The streaming multipart/related writer: exact bytes, lengths, and a round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dicomweb.multipart import (
    OutgoingPart,
    PartHeaders,
    new_boundary,
    read_related,
    related_content_type,
    related_length,
    write_related,
)


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def body_of(parts: list[OutgoingPart], boundary: str) -> bytes:
    return b"".join([chunk async for chunk in write_related(parts, boundary)])


async def test_exact_bytes() -> None:
    parts = [
        OutgoingPart("application/dicom", pieces(b"ab", b"c"), length=3),
        OutgoingPart("image/jp2", b"xyz", location="http://h/frames/1"),
    ]
    body = await body_of(parts, "B")
    assert body == (
        b"--B\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\nabc\r\n"
        b"--B\r\nContent-Type: image/jp2\r\nContent-Location: http://h/frames/1\r\n\r\nxyz\r\n"
        b"--B--\r\n"
    )
    assert related_length("B", parts) == len(body)


async def test_no_parts() -> None:
    assert await body_of([], "B") == b"--B--\r\n"


def test_length_unknown_when_a_part_length_is() -> None:
    assert related_length("B", [OutgoingPart("a/b", pieces(b"x"))]) is None


async def test_large_chunks_pass_through_and_small_ones_are_joined() -> None:
    big = bytes(200_000)
    small = [bytes([n]) * 10 for n in range(100)]
    parts = [OutgoingPart("a/b", pieces(*small)), OutgoingPart("a/b", pieces(big))]
    chunks = [chunk async for chunk in write_related(parts, "B")]
    assert big in chunks
    assert len(chunks) == 3


async def test_round_trip_through_the_reader() -> None:
    boundary = new_boundary()
    assert len(boundary) == 32
    bodies = [b"\r\n--x\r\n" * 1000, b"", bytes(range(256)) * 300]
    parts = [OutgoingPart(f"t/{n}", pieces(b)) for n, b in enumerate(bodies)]
    found: list[tuple[str | None, bytes]] = []
    chunks: list[bytes] = []
    content_type: str | None = None
    async for event in read_related(write_related(parts, boundary), boundary):
        if isinstance(event, PartHeaders):
            content_type, chunks = event.content_type, []
        elif event is None:
            found.append((content_type, b"".join(chunks)))
        else:
            chunks.append(event)
    assert found == [(f"t/{n}", b) for n, b in enumerate(bodies)]


def test_content_type() -> None:
    assert related_content_type("B", "application/dicom", transfer_syntax="1.2") == (
        'multipart/related; type="application/dicom"; boundary=B; transfer-syntax=1.2'
    )
