"""locate_frames: frame byte ranges in stored files, checked against pydicom."""

from __future__ import annotations

import io
import json
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
import pytest
from _pytest.mark.structures import ParameterSet
from pydicom import Dataset
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels.utils import get_expected_length, get_nr_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG4HP41,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomweb.pixels.frames import FrameLayoutError, FrameTable, locate_frames

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NATIVE_SYNTAXES = [
    pytest.param(ImplicitVRLittleEndian, id="implicit-le"),
    pytest.param(ExplicitVRLittleEndian, id="explicit-le"),
    pytest.param(ExplicitVRBigEndian, id="explicit-be"),
]

# Test files that have pixel data but no frame table, and why.
EXPECTED_ERRORS = {
    "MR_truncated.dcm": "runs past the end of the file",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "no sequence delimiter",
    "badVR.dcm": "NumberOfFrames '1A' is not an integer",
    "meta_missing_tsyntax.dcm": "Rows, Columns or BitsAllocated",
    "nested_priv_SQ.dcm": "Rows, Columns or BitsAllocated",
}
EXPECTED_NONE = {"image_dfl.dcm"}  # Deflated Explicit VR Little Endian

# Files the suite must cover; the rest of the test data is found by listing it.
NAMED_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "rtdose.dcm",
    "rtdose_expb.dcm",
    "rtdose_rle.dcm",
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "examples_ybr_color.dcm",  # 30 frames with a Basic Offset Table
    "color3d_jpeg_baseline.dcm",  # 120 frames, no Basic Offset Table
    "liver.dcm",  # 1-bit, 3 frames
    "OT-PAL-8-face.dcm",  # no file meta
    "image_dfl.dcm",
]


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom's complaints about deliberately odd test files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _has_pixels(path: Path) -> bool:
    with quiet():
        try:
            ds = pydicom.dcmread(path, force=True, defer_size=1024)
        except Exception:
            return False
    return any(keyword in ds for keyword in PIXEL_KEYWORDS)


def _testdata_with_pixels() -> list[ParameterSet]:
    paths = sorted({Path(p) for p in get_testdata_files()})
    return [
        pytest.param(path, id=f"{path.parent.name}/{path.name}")
        for path in paths
        if path.is_file() and _has_pixels(path)
    ]


TESTDATA = _testdata_with_pixels()


def read_frame(fp: BinaryIO, frame: tuple[tuple[int, int], ...]) -> bytes:
    """A frame as a server would serve it: seek+read each range."""
    parts = []
    for offset, length in frame:
        fp.seek(offset)
        parts.append(fp.read(length))
    return b"".join(parts)


def read_frames(data: bytes, table: FrameTable) -> list[bytes]:
    fp = io.BytesIO(data)
    return [read_frame(fp, frame) for frame in table.frames]


def bare(header: Dataset) -> Dataset:
    """`header` without file positions, so locate_frames must scan the file."""
    copy = Dataset()
    meta = getattr(header, "file_meta", None)
    if meta is not None:
        copy.file_meta = FileMetaDataset()
        for elem in meta:
            copy.file_meta.add_new(elem.tag, elem.VR, elem.value)
    tags = header.keys()  # not iteration, which would decode every element
    for tag in tags:
        elem = header.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            # Copied undecoded: some test files hold values pydicom cannot decode.
            copy[tag] = elem._replace(value_tell=0)
        else:
            copy.add(DataElement(elem.tag, elem.VR, elem.value))
    return copy


HEADER_MODES = ["raw", "decoded", "bare"]


def header_for(fp: BinaryIO, mode: str) -> Dataset:
    """The header as ingest sees it: undecoded, decoded (as ingest does), or rebuilt."""
    header = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    if mode == "bare":
        return bare(header)
    if mode == "decoded":
        for elem in header.iterall():
            _ = elem.value
    return header


def assert_round_trips(table: FrameTable) -> None:
    data = json.loads(json.dumps(table.to_json()))
    assert len(data) == len(table.frames)
    assert (
        FrameTable.from_json(
            data, pixel_keyword=table.pixel_keyword, encapsulated=table.encapsulated
        )
        == table
    )


def expected_frames(ds: Dataset, keyword: str, encapsulated: bool) -> list[bytes]:
    """Each frame's bytes as pydicom produces them."""
    value = ds[keyword].value
    count = get_nr_frames(ds, warn=False)
    if encapsulated:
        extended = None
        if "ExtendedOffsetTable" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return list(generate_frames(value, number_of_frames=count, extended_offsets=extended))
    length = get_expected_length(ds, unit="bytes") // count
    return [value[i * length : (i + 1) * length] for i in range(count)]


# Test data.


@pytest.mark.parametrize("mode", HEADER_MODES)
@pytest.mark.parametrize("path", TESTDATA)
def test_testdata_frames_match_pydicom(path: Path, mode: str) -> None:
    with quiet(), path.open("rb") as fp:
        header = header_for(fp, mode)
        position = fp.tell()
        if path.name in EXPECTED_ERRORS:
            with pytest.raises(FrameLayoutError, match=EXPECTED_ERRORS[path.name]):
                locate_frames(fp, header)
            return
        table = locate_frames(fp, header)
        assert fp.tell() == position
        if path.name in EXPECTED_NONE:
            assert table is None
            return
        assert table is not None
        got = [read_frame(fp, frame) for frame in table.frames]
        ds = pydicom.dcmread(path, force=True)
        transfer_syntax = ds.file_meta.get("TransferSyntaxUID")
    assert table.pixel_keyword in ds
    assert table.encapsulated == bool(transfer_syntax and UID(transfer_syntax).is_encapsulated)
    assert got == expected_frames(ds, table.pixel_keyword, table.encapsulated)
    assert_round_trips(table)


@pytest.mark.parametrize("name", NAMED_FILES)
def test_named_testdata_is_covered(name: str) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is missing: pydicom-data is a test dependency"
    assert Path(path) in {p.values[0] for p in TESTDATA}


@pytest.mark.parametrize(
    "name",
    ["RG1_UNCI.dcm", "emri_small_RLE.dcm", "examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm"],
)
@pytest.mark.parametrize("mode", HEADER_MODES)
def test_reads_headers_not_pixels(name: str, mode: str) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is missing: pydicom-data is a test dependency"
    data = Path(path).read_bytes()
    with quiet():
        header = header_for(io.BytesIO(data), mode)
    fp = CountingIO(data)
    table = locate_frames(fp, header)
    assert table is not None
    pixel_bytes = sum(length for frame in table.frames for _, length in frame)
    ranges = sum(len(frame) for frame in table.frames)
    assert pixel_bytes > len(data) // 2
    # Element and item headers, the Basic Offset Table and a 12-byte peek per fragment.
    assert fp.bytes_read <= len(data) - pixel_bytes + 32 * ranges
    assert not fp.unbounded_reads


class CountingIO(io.BytesIO):
    """Counts the bytes handed out by read()."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0
        self.unbounded_reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            self.unbounded_reads += 1
        data = super().read(size)
        self.bytes_read += len(data)
        return data


# Synthetic files.


def image(transfer_syntax: str, **attributes: Any) -> Dataset:
    """A minimal image data set; `attributes` override the defaults."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows = 4
    ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    for keyword, value in attributes.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def locate(data: bytes, mode: str = "raw") -> FrameTable | None:
    fp = io.BytesIO(data)
    header = header_for(fp, mode)
    position = fp.tell()
    table = locate_frames(fp, header)
    assert fp.tell() == position
    if table is not None:
        assert_round_trips(table)
    return table


def codestream(marker: bytes, index: int, size: int = 101) -> bytes:
    """A fake compressed frame: a start marker, a body without 0xFF, an end marker."""
    return marker + bytes((index * 7 + k) % 250 for k in range(size)) + b"\xff\xd9"


J2K = b"\xff\x4f\xff\x51"
JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
JPEG = b"\xff\xd8\xff\xe0"


def padded(frame: bytes) -> bytes:
    return frame + b"\0" * (len(frame) % 2)


@pytest.mark.parametrize("mode", HEADER_MODES)
@pytest.mark.parametrize(
    ("transfer_syntax", "marker", "fragments_per_frame", "has_bot"),
    [
        pytest.param(JPEG2000Lossless, J2K, 1, True, id="bot"),
        pytest.param(JPEG2000Lossless, J2K, 1, False, id="one-fragment-per-frame"),
        pytest.param(JPEG2000Lossless, J2K, 3, True, id="bot-multi-fragment"),
        pytest.param(JPEG2000Lossless, J2K, 3, False, id="j2k-markers"),
        pytest.param(JPEG2000Lossless, JP2, 2, False, id="jp2-markers"),
        pytest.param(JPEGBaseline8Bit, JPEG, 4, False, id="jpeg-markers"),
    ],
)
def test_encapsulated(
    transfer_syntax: str, marker: bytes, fragments_per_frame: int, has_bot: bool, mode: str
) -> None:
    frames = [codestream(marker, i, size=101 + i) for i in range(3)]
    pixel_data = encapsulate(frames, fragments_per_frame=fragments_per_frame, has_bot=has_bot)
    data = encode(image(transfer_syntax, NumberOfFrames=3, PixelData=pixel_data))
    table = locate(data, mode)
    assert table is not None
    assert table.encapsulated
    assert table.pixel_keyword == "PixelData"
    assert [len(frame) for frame in table.frames] == [fragments_per_frame] * 3
    assert read_frames(data, table) == [padded(frame) for frame in frames]
    reference = pydicom.dcmread(io.BytesIO(data))
    assert read_frames(data, table) == expected_frames(reference, "PixelData", True)


@pytest.mark.parametrize("mode", HEADER_MODES)
def test_extended_offset_table(mode: str) -> None:
    frames = [codestream(J2K, i, size=100 + i) for i in range(4)]
    pixel_data, offsets, lengths = encapsulate_extended(frames)
    ds = image(
        JPEG2000Lossless,
        NumberOfFrames=4,
        PixelData=pixel_data,
        ExtendedOffsetTable=offsets,
        ExtendedOffsetTableLengths=lengths,
    )
    data = encode(ds)
    table = locate(data, mode)
    assert table is not None
    assert read_frames(data, table) == expected_frames(
        pydicom.dcmread(io.BytesIO(data)), "PixelData", True
    )
    assert [f.rstrip(b"\0") for f in read_frames(data, table)] == frames


def fragment_positions(pixel_data: bytes) -> list[int]:
    """Offsets of each fragment's item tag, from the first one after the BOT."""
    pos = 8 + struct.unpack_from("<L", pixel_data, 4)[0]
    first, positions = pos, []
    while pixel_data[pos : pos + 4] == b"\xfe\xff\x00\xe0":
        positions.append(pos - first)
        pos += 8 + struct.unpack_from("<L", pixel_data, pos + 4)[0]
    return positions


def test_extended_offset_table_with_fragmented_frames() -> None:
    # Not allowed by the standard, but the table still says where each frame starts.
    frames = [codestream(J2K, i) for i in range(3)]
    pixel_data = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    starts = fragment_positions(pixel_data)[::2]
    ds = image(
        JPEG2000Lossless,
        NumberOfFrames=3,
        PixelData=pixel_data,
        ExtendedOffsetTable=struct.pack("<3Q", *starts),
        ExtendedOffsetTableLengths=struct.pack("<3Q", *(len(padded(f)) for f in frames)),
    )
    data = encode(ds)
    table = locate(data)
    assert table is not None
    assert [len(frame) for frame in table.frames] == [2, 2, 2]
    assert read_frames(data, table) == [padded(frame) for frame in frames]


def replace_bot(pixel_data: bytes, offsets: list[int]) -> bytes:
    old = struct.unpack_from("<L", pixel_data, 4)[0]
    table = struct.pack(f"<{len(offsets)}L", *offsets)
    return b"\xfe\xff\x00\xe0" + struct.pack("<L", len(table)) + table + pixel_data[8 + old :]


@pytest.mark.parametrize(
    "offsets",
    [
        pytest.param([0, 7, 9], id="not-fragment-starts"),
        pytest.param([0, 0, 0], id="not-ascending"),
        pytest.param([0, 116], id="too-few"),
        pytest.param([4, 116, 232], id="not-from-zero"),
    ],
)
def test_wrong_basic_offset_table_is_ignored(offsets: list[int]) -> None:
    frames = [codestream(J2K, i) for i in range(3)]
    pixel_data = replace_bot(encapsulate(frames, has_bot=False), offsets)
    data = encode(image(JPEG2000Lossless, NumberOfFrames=3, PixelData=pixel_data))
    table = locate(data)
    assert table is not None
    assert read_frames(data, table) == [padded(frame) for frame in frames]


def test_wrong_extended_offset_table_is_ignored() -> None:
    frames = [codestream(J2K, i) for i in range(3)]
    pixel_data, _, lengths = encapsulate_extended(frames)
    ds = image(
        JPEG2000Lossless,
        NumberOfFrames=3,
        PixelData=pixel_data,
        ExtendedOffsetTable=struct.pack("<3Q", 0, 5, 6),
        ExtendedOffsetTableLengths=lengths,
    )
    data = encode(ds)
    table = locate(data)
    assert table is not None
    assert read_frames(data, table) == [padded(frame) for frame in frames]


@pytest.mark.parametrize(
    "number_of_frames", [pytest.param(1, id="one"), pytest.param(None, id="absent")]
)
def test_single_frame_of_many_fragments(number_of_frames: int | None) -> None:
    frame = codestream(J2K, 0, size=300)
    pixel_data = encapsulate([frame], fragments_per_frame=5, has_bot=False)
    data = encode(image(JPEG2000Lossless, NumberOfFrames=number_of_frames, PixelData=pixel_data))
    table = locate(data)
    assert table is not None
    assert len(table.frames) == 1
    assert len(table.frames[0]) == 5
    assert read_frames(data, table) == [padded(frame)]


def test_rle_fragments_one_per_frame() -> None:
    frames = [struct.pack("<16L", 1, 64, *[0] * 14) + bytes([i]) * 10 for i in range(2)]
    data = encode(image(RLELossless, NumberOfFrames=2, PixelData=encapsulate(frames)))
    table = locate(data)
    assert table is not None
    assert read_frames(data, table) == frames


def test_undeterminable_frames_raise() -> None:
    frames = [bytes((i + k) % 250 for k in range(100)) for i in range(3)]  # no markers
    pixel_data = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    data = encode(image(JPEG2000Lossless, NumberOfFrames=3, PixelData=pixel_data))
    with pytest.raises(FrameLayoutError, match="cannot tell which of the 6 fragments"):
        locate(data)


def test_fewer_fragments_than_frames_raise() -> None:
    frames = [codestream(J2K, i) for i in range(2)]
    data = encode(image(JPEG2000Lossless, NumberOfFrames=3, PixelData=encapsulate(frames)))
    with pytest.raises(FrameLayoutError, match="cannot tell"):
        locate(data)


def test_video_has_no_frame_table() -> None:
    fragments = [codestream(b"\x00\x00\x01\xb3", i) for i in range(3)]
    pixel_data = encapsulate(fragments, has_bot=False)
    data = encode(image(MPEG4HP41, NumberOfFrames=10, PixelData=pixel_data))
    assert locate(data) is None


# Native data.


@pytest.mark.parametrize("mode", HEADER_MODES)
@pytest.mark.parametrize("transfer_syntax", NATIVE_SYNTAXES)
@pytest.mark.parametrize(
    ("keyword", "bits"),
    [
        pytest.param("PixelData", 16, id="PixelData"),
        pytest.param("FloatPixelData", 32, id="FloatPixelData"),
        pytest.param("DoubleFloatPixelData", 64, id="DoubleFloatPixelData"),
    ],
)
def test_native_multi_frame(keyword: str, bits: int, transfer_syntax: str, mode: str) -> None:
    frame_length = 3 * 5 * bits // 8
    value = bytes(k % 251 for k in range(4 * frame_length))
    ds = image(transfer_syntax, Rows=3, Columns=5, BitsAllocated=bits, NumberOfFrames=4)
    if keyword != "PixelData":
        for name in ("BitsStored", "HighBit", "PixelRepresentation"):
            del ds[name]
    setattr(ds, keyword, value)
    data = encode(ds)
    table = locate(data, mode)
    assert table is not None
    assert table.pixel_keyword == keyword
    assert not table.encapsulated
    assert all(len(frame) == 1 for frame in table.frames)
    expected = [value[i * frame_length : (i + 1) * frame_length] for i in range(4)]
    assert read_frames(data, table) == expected
    assert expected == expected_frames(pydicom.dcmread(io.BytesIO(data)), keyword, False)


@pytest.mark.parametrize(
    ("rows", "columns", "frames", "expected"),
    [
        pytest.param(8, 4, 3, [4, 4, 4], id="byte-aligned-frames"),
        pytest.param(5, 5, 1, [4], id="unaligned-single-frame"),
        pytest.param(5, 5, 3, None, id="unaligned-frames"),
    ],
)
def test_bit_packed(rows: int, columns: int, frames: int, expected: list[int] | None) -> None:
    size = (rows * columns * frames + 7) // 8
    value = bytes(range(size)) + b"\0" * (size % 2)
    ds = image(ExplicitVRLittleEndian, Rows=rows, Columns=columns, NumberOfFrames=frames)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = value
    data = encode(ds)
    table = locate(data)
    if expected is None:
        assert table is None
        return
    assert table is not None
    got = read_frames(data, table)
    assert [len(frame) for frame in got] == expected
    assert b"".join(got) == value[: sum(expected)]


def test_native_pixel_data_shorter_than_its_frames_raises() -> None:
    data = encode(image(ExplicitVRLittleEndian, NumberOfFrames=5, PixelData=bytes(48)))
    with pytest.raises(FrameLayoutError, match="holds 48 bytes but 5 frame"):
        locate(data)


@pytest.mark.parametrize("mode", HEADER_MODES)
def test_no_pixel_data(mode: str) -> None:
    ds = image(ExplicitVRLittleEndian)
    ds.add_new(0xFFFCFFFC, "OB", bytes(64))  # Data Set Trailing Padding
    assert locate(encode(ds), mode) is None


def test_deflated() -> None:
    data = encode(image(DeflatedExplicitVRLittleEndian, PixelData=bytes(16)))
    assert locate(data) is None


# Where the pixel data element is.


def put_sequence(ds: Dataset, keyword: str, items: list[Dataset]) -> None:
    """Add a sequence written with undefined lengths, as many modalities do."""
    for item in items:
        item.is_undefined_length_sequence_item = True
    setattr(ds, keyword, Sequence(items))
    ds[keyword].is_undefined_length = True


@pytest.mark.parametrize("mode", HEADER_MODES)
@pytest.mark.parametrize("transfer_syntax", NATIVE_SYNTAXES)
def test_nested_pixel_data_is_not_the_image(transfer_syntax: str, mode: str) -> None:
    icon = image(transfer_syntax, Rows=2, Columns=2, PixelData=b"ICON")
    del icon.file_meta, icon.SOPClassUID, icon.SOPInstanceUID
    inner = Dataset()
    inner.CodeValue = "1"
    put_sequence(inner, "ConceptNameCodeSequence", [Dataset()])
    put_sequence(icon, "ConceptNameCodeSequence", [inner])
    ds = image(transfer_syntax, PixelData=bytes(range(16)))
    put_sequence(ds, "IconImageSequence", [icon])
    ds.ReferencedImageSequence = Sequence([Dataset(), Dataset()])  # defined lengths
    data = encode(ds)
    table = locate(data, mode)
    assert table is not None
    assert read_frames(data, table) == [bytes(range(16))]


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    """An Explicit VR Little Endian element."""
    group_element = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if vr in {b"OB", b"SQ", b"UN", b"UT"}:
        return group_element + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return group_element + vr + struct.pack("<H", len(value)) + value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF


def pixel_element(value: bytes) -> bytes:
    return element(0x7FE00010, b"OB", value)


@pytest.mark.parametrize("mode", HEADER_MODES)
def test_undefined_length_un_before_pixel_data(mode: str) -> None:
    # An undefined-length UN holds Implicit VR Little Endian, sequences included.
    un_value = (
        implicit(ITEM, b"", UNDEFINED)
        + implicit(0x00291011, b"abcd")
        + implicit(0x00291012, b"", UNDEFINED)  # a nested sequence
        + implicit(ITEM, implicit(0x00291013, b"xy"))
        + implicit(SEQUENCE_END, b"")
        + implicit(ITEM_END, b"")
        + implicit(SEQUENCE_END, b"")
    )
    un = struct.pack("<HH", 0x0029, 0x1010) + b"UN\0\0" + struct.pack("<L", UNDEFINED) + un_value
    creator = element(0x00290010, b"LO", b"TEST")
    data = encode(image(ExplicitVRLittleEndian)) + creator + un + pixel_element(bytes(16))
    with quiet():
        table = locate(data, mode)
    assert table is not None
    assert read_frames(data, table) == [bytes(16)]


def test_deep_nesting_raises() -> None:
    depth = 100
    nested = (implicit(0x00291010, b"", UNDEFINED) + implicit(ITEM, b"", UNDEFINED)) * depth
    closing = (implicit(ITEM_END, b"") + implicit(SEQUENCE_END, b"")) * depth
    data = encode(image(ImplicitVRLittleEndian)) + nested + closing
    fp = io.BytesIO(data)
    with pytest.raises(FrameLayoutError, match="nested deeper"):
        locate_frames(fp, bare(image(ImplicitVRLittleEndian)))


def test_stale_header_positions_are_checked() -> None:
    ds = image(ExplicitVRLittleEndian, PixelData=bytes(range(16)))
    header = pydicom.dcmread(io.BytesIO(encode(ds)), stop_before_pixels=True)
    ds.ImageComments = "x" * 51  # moves every later element
    data = encode(ds)
    table = locate_frames(io.BytesIO(data), header)
    assert table is not None
    assert read_frames(data, table) == [bytes(range(16))]


# Malformed and truncated files.


def j2k_file() -> tuple[bytes, int]:
    """A 3-frame JPEG 2000 file and the offset of its pixel data value."""
    frames = [codestream(J2K, i) for i in range(3)]
    data = encode(image(JPEG2000Lossless, NumberOfFrames=3, PixelData=encapsulate(frames)))
    return data, data.rindex(b"\xe0\x7f\x10\x00OB\0\0\xff\xff\xff\xff") + 12


def _truncate(at: Callable[[bytes, int], int]) -> Callable[[], bytes]:
    def make() -> bytes:
        data, value = j2k_file()
        return data[: at(data, value)]

    return make


def _patch(at: Callable[[bytes, int], int], new: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        data, value = j2k_file()
        pos = at(data, value)
        return data[:pos] + new + data[pos + len(new) :]

    return make


def _first_fragment(data: bytes, value: int) -> int:
    return value + 8 + 12  # the BOT holds 3 offsets


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_truncate(lambda d, v: v + 10), "Basic Offset Table", id="cut-in-bot"),
        pytest.param(
            _truncate(lambda d, v: _first_fragment(d, v) + 4), "inside a header", id="cut-in-item"
        ),
        pytest.param(
            _truncate(lambda d, v: _first_fragment(d, v) + 50), "runs past", id="cut-in-fragment"
        ),
        pytest.param(
            _truncate(lambda d, v: len(d) - 8), "no sequence delimiter", id="no-delimiter"
        ),
        pytest.param(
            _patch(_first_fragment, b"\xfe\xff\x00\xe1"), "expected a fragment item", id="bad-tag"
        ),
        pytest.param(
            _patch(lambda d, v: _first_fragment(d, v) + 4, b"\xff\xff\xff\xff"),
            "runs past",
            id="undefined-fragment-length",
        ),
        pytest.param(
            _patch(lambda d, v: _first_fragment(d, v) + 4, b"\xf0\xff\xff\x7f"),
            "runs past",
            id="huge-fragment-length",
        ),
        pytest.param(
            _patch(lambda d, v: v + 4, b"\xf0\xff\xff\x7f"), "Basic Offset Table", id="huge-bot"
        ),
        pytest.param(
            _patch(lambda d, v: v, b"\xfe\xff\xdd\xe0"), "not a Basic Offset Table", id="no-bot"
        ),
    ],
)
def test_malformed_encapsulated_raises(make: Callable[[], bytes], message: str) -> None:
    with pytest.raises(FrameLayoutError, match=message):
        locate(make())


@pytest.mark.parametrize("mode", HEADER_MODES)
@pytest.mark.parametrize("transfer_syntax", NATIVE_SYNTAXES)
def test_truncated_native_raises(transfer_syntax: str, mode: str) -> None:
    data = encode(image(transfer_syntax, NumberOfFrames=2, PixelData=bytes(32)))
    with pytest.raises(FrameLayoutError, match="runs past the end"):
        locate(data[:-5], mode)


def test_truncated_header_raises() -> None:
    ds = image(ExplicitVRLittleEndian)
    put_sequence(ds, "ReferencedImageSequence", [Dataset()])
    data = encode(ds)
    cut = data[: data.rindex(b"\xfe\xff\x0d\xe0")]  # inside the sequence item
    with pytest.raises(FrameLayoutError, match="ends inside a sequence item"):
        locate_frames(io.BytesIO(cut), bare(ds))


# FrameTable JSON.


def test_json_shape() -> None:
    table = FrameTable("PixelData", True, (((10, 4), (22, 6)), ((36, 8),)))
    assert table.to_json() == [[10, 4, 22, 6], [36, 8]]
    assert FrameTable.from_json(table.to_json(), pixel_keyword="PixelData", encapsulated=True) == (
        table
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("[[1, 2]]", id="not-a-list"),
        pytest.param([1, 2], id="flat"),
        pytest.param([[1]], id="odd"),
        pytest.param([[1, -2]], id="negative"),
        pytest.param([[True, 2]], id="bool"),
        pytest.param([["1", 2]], id="string"),
        pytest.param([[1.0, 2]], id="float"),
    ],
)
def test_from_json_rejects(data: object) -> None:
    with pytest.raises(ValueError):
        FrameTable.from_json(data, pixel_keyword="PixelData", encapsulated=False)


def test_from_json_rejects_unknown_keyword() -> None:
    with pytest.raises(ValueError, match="keyword"):
        FrameTable.from_json([], pixel_keyword="OverlayData", encapsulated=False)


def test_undefined_length_in_native_syntax_raises() -> None:
    items = implicit(ITEM, b"") + implicit(ITEM, b"abcd") + implicit(SEQUENCE_END, b"")
    pixels = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<L", UNDEFINED)
    data = encode(image(ExplicitVRLittleEndian)) + pixels + items
    with pytest.raises(FrameLayoutError, match="undefined length but the transfer syntax"):
        locate(data)


def test_defined_length_in_encapsulated_syntax_raises() -> None:
    data = encode(image(JPEG2000Lossless)) + pixel_element(bytes(16))
    with pytest.raises(FrameLayoutError, match="defined length but the transfer syntax"):
        locate(data)
