"""DICOM Part 10 headers at ingest: any part is indexed or refused with a failure status.

Files are small valid instances (tests/fuzz/dicomseeds.py) with their structure
damaged where parsers are most likely to trip: element lengths set to 0, odd, past
the end, undefined or near 4 GiB; VRs and tags swapped; transfer syntaxes changed;
sequences nested deep or left open; files cut short or with bits flipped.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from functools import cache

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicomweb.errors import InstanceRejected
from dicomweb.parsing import extract
from tests.dicomfactory import ct_dataset
from tests.fuzz.dicomseeds import LengthField, length_fields, seeds
from tests.fuzz.targets import check_dicom, received

_UNDEFINED = 0xFFFFFFFF
_LENGTHS = [0, 1, 2, 3, 4, 7, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, _UNDEFINED]
_VRS = [b"SQ", b"UN", b"OB", b"OW", b"LO", b"US", b"DS", b"IS", b"AT", b"PN", b"XX", b"\0\0"]
_TAGS = [
    (0xFFFE, 0xE000),  # item
    (0xFFFE, 0xE00D),  # item delimiter
    (0xFFFE, 0xE0DD),  # sequence delimiter
    (0x7FE0, 0x0010),  # pixel data
    (0x0008, 0x0005),  # specific character set
    (0x0028, 0x0103),  # pixel representation
    (0x0028, 0x0008),  # number of frames
    (0x0000, 0x0000),  # command group length
    (0x0002, 0x0010),  # transfer syntax
    (0x0009, 0x0010),  # private creator
    (0xFFFF, 0xFFFF),
]
_SYNTAXES = [
    b"1.2.840.10008.1.2\0",
    b"1.2.840.10008.1.2.1\0",
    b"1.2.840.10008.1.2.2\0",
    b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.1.2.4.50",
    b"1.2.840.10008.1.2.5\0",
    b"1.2.840.10008.1.2.4.100",
    b"1.2.3\0",
    b"",
]


@cache
def _fields(name: str) -> list[LengthField]:
    return length_fields(seeds()[name])


def _nested(depth: int, closed: bool) -> bytes:
    """Sequences of undefined length, each in an item of the one before."""
    opening = struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, _UNDEFINED)
    opening += struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return opening * depth + (closing * depth if closed else b"")


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[name])
    fields = _fields(name)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(
            st.sampled_from(["length", "length", "vr", "tag", "syntax", "nest", "cut", "flip"])
        )
        field = draw(st.sampled_from(fields)) if fields else None
        if field is not None and field.offset + field.size > len(data):
            field = None  # cut off by an earlier operation
        if operation == "length" and field is not None:
            length = draw(st.sampled_from(_LENGTHS) | st.integers(0, 2 * len(data)))
            mask = 0xFFFF if field.size == 2 else 0xFFFFFFFF
            code = "<H" if field.size == 2 else "<L"
            struct.pack_into(code, data, field.offset, length & mask)
        elif operation == "vr" and field is not None:
            data[field.header + 4 : field.header + 6] = draw(st.sampled_from(_VRS))
        elif operation == "tag" and field is not None:
            struct.pack_into("<HH", data, field.header, *draw(st.sampled_from(_TAGS)))
        elif operation == "syntax":
            at = data.find(b"1.2.840.10008.1.2", 132)
            if at >= 0:
                old = bytes(data[at : at + 22]).split(b"\0")[0]
                new = draw(st.sampled_from(_SYNTAXES))[: len(old)].ljust(len(old), b"\0")
                data[at : at + len(old)] = new
        elif operation == "nest":
            at = field.header if field is not None else len(data)
            depth = draw(st.sampled_from([1, 2, 40, 300]))
            data[at:at] = _nested(depth, closed=draw(st.booleans()))
        elif operation == "cut":
            at = field.header if field is not None and draw(st.booleans()) else None
            data = data[: at if at is not None else draw(st.integers(0, len(data)))]
        elif data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


files = st.one_of(
    damaged_files(),
    damaged_files(),
    damaged_files(),
    st.binary(max_size=400).map(lambda b: bytes(128) + b"DICM" + b),
    st.binary(max_size=200),
)


@given(files, st.sampled_from([1024, 0, 8]))
@example(bytes(128) + b"DICM", 1024)
@example(b"\x02\x00", 1024)  # file meta without preamble: ingest adds one
def test_extract(data: bytes, threshold: int) -> None:
    check_dicom(data, threshold)


@given(st.sampled_from(sorted(seeds())), st.integers(1, 300))
def test_received_bytes_do_not_depend_on_chunks(name: str, chunk_size: int) -> None:
    data = seeds()[name]
    assert received(data, chunk_size) == received(data)


def test_seeds_are_indexed() -> None:
    """Every seed is valid as it is: the damage is what the fuzzers add."""
    for name, data in seeds().items():
        assert check_dicom(data) is not None, name


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("keyword", ["SeriesNumber", "InstanceNumber", "NumberOfFrames"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_infinite_integers(syntax: str, keyword: str, value: str) -> None:
    """An integer attribute sent as a DS of "inf": int() raised OverflowError (on the
    pydicom path, which big endian files take)."""
    ds = ct_dataset(rows=4, columns=4)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.add_new(tag_for_keyword(keyword), "DS", value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    record = check_dicom(buffer.getvalue())
    if keyword != "NumberOfFrames":
        assert record is not None
        assert record.series.series_number is None or keyword != "SeriesNumber"


# --------------------------------------------------------------------------------------
# Small files that claim to be large are refused without memory to match
# --------------------------------------------------------------------------------------

_BOUND = 16 << 20  # far below what the lengths claim, well above what a parse needs


def _before_pixels(element: bytes, name: str = "explicit") -> bytes:
    data = seeds()[name]
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return data[:at] + element


def _measured(data: bytes) -> tuple[bool, int, float]:
    """(refused, peak bytes allocated, seconds) for ingesting `data`."""
    started = time.monotonic()
    tracemalloc.start()
    try:
        extract(received(data), 1024)
        refused = False
    except InstanceRejected:
        refused = True
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return refused, peak, time.monotonic() - started


@pytest.mark.parametrize(
    "data",
    [
        _before_pixels(struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0) + bytes(64)),
        _before_pixels(struct.pack("<HH2sHL", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFF0) + bytes(64)),
        _before_pixels(struct.pack("<HH2sHL", 0x0009, 0x1010, b"UT", 0, 0xFFFFFFF0) + b"x" * 64),
        _before_pixels(struct.pack("<HHL", 0x0009, 0x1010, 0xFFFFFFF0) + bytes(64), "implicit"),
        _before_pixels(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFF0) + bytes(64)),
        _before_pixels(
            struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFF0)
            + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFF0)
        ),
        _before_pixels(
            struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, _UNDEFINED)
            + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFF0)
        ),
    ],
    ids=["OB", "UN", "UT", "implicit", "pixel-data", "sequence-item", "fragment"],
)
def test_huge_lengths(data: bytes) -> None:
    refused, peak, seconds = _measured(data)
    assert refused
    assert peak < _BOUND, f"{peak} bytes allocated for {len(data)} bytes of input"
    assert seconds < 5


def test_deep_nesting() -> None:
    """5000 nested sequences (80 KB): refused, not a RecursionError, memory bounded."""
    data = seeds()["explicit"]
    at = data.find(b"\x08\x00\x3e\x10")  # SeriesDescription comes after (0008,1140)
    for closed in (True, False):
        refused, peak, seconds = _measured(data[:at] + _nested(5000, closed) + data[at:])
        assert refused
        assert peak < _BOUND
        assert seconds < 10


@pytest.mark.parametrize("frames", [b"2147483647", b"99999999999999999999"])
def test_many_frames_claimed(frames: bytes) -> None:
    """A few bytes of pixel data said to hold billions of frames."""
    value = frames + b" " * (len(frames) % 2)
    element = struct.pack("<HH2sH", 0x0028, 0x0008, b"IS", len(value)) + value
    for name in ("explicit", "rle"):
        data = seeds()[name]
        at = data.find(b"\x28\x00\x10\x00")
        refused, peak, _ = _measured(data[:at] + element + data[at:])
        assert refused
        assert peak < _BOUND
