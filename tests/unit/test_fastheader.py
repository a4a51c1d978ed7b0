"""fastheader: the fast header path must produce exactly what the pydicom path produces.

Every check compares `read_fast_header` with what `dicomweb.parsing` does with pydicom
(`_read_header`, then `instance_json`, `_text` and `_integer`): the fast path may decline
(None), but what it returns must be identical, down to the JSON bytes.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pydicom import Dataset, config
from pydicom._dicom_dict import DicomDictionary
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from dicomweb import parsing
from dicomweb.dicomjson import instance_json
from dicomweb.errors import InstanceRejected
from dicomweb.fastheader import (
    RECORD_INTEGER_KEYWORDS,
    RECORD_TEXT_KEYWORDS,
    FastHeader,
    read_fast_header,
)
from dicomweb.pixels.frames import FrameLayoutError, locate_frames
from tests.dicomfactory import ct_dataset, to_bytes

RESOURCE = "studies/1.2.3/series/4.5.6/instances/7.8.9"
PIXEL_ELEMENT = ("7FE00010", "OW")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom's complaints about deliberately odd data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------


@dataclass
class Reference:
    """What the pydicom path makes of a file."""

    ds: Dataset
    positions: dict[int, list[int]]
    metadata: bytes
    bulkdata: bytes
    pixel_data_offset: int | None


def reference(data: bytes, threshold: int) -> Reference | None:
    """The pydicom path: None when it rejects the file or instance_json fails."""
    with quiet():
        fp = io.BytesIO(data)
        try:
            ds, positions = parsing._read_header(fp)
        except InstanceRejected:
            return None
        # dcmread rewinds to the pixel data element it stopped before.
        offset = fp.tell() if fp.tell() < len(data) else None
        try:
            metadata, bulkdata = instance_json(ds, RESOURCE, threshold, None, positions)
        except Exception:
            return None  # e.g. an invalid DS value: instance_json raises ValueError
    return Reference(ds, positions, metadata, bulkdata, offset)


def positions_reference(data: bytes, threshold: int) -> tuple[bytes, bytes]:
    """instance_json on an undecoded data set, which records bulk value positions."""
    with quiet():
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        return instance_json(ds, RESOURCE, threshold, None)


def frames(data: bytes, header: Dataset) -> object:
    """locate_frames' table, or its error."""
    with quiet():
        try:
            return locate_frames(io.BytesIO(data), header)
        except FrameLayoutError as exc:
            return str(exc)


class _Values:
    """Something parsing._text and parsing._integer can read any element from."""

    def __init__(self, value: object) -> None:
        self.value = value

    def get(self, keyword: str) -> object:
        return self.value


def outcome(function: Callable[[], object]) -> object:
    """The result, or the type of the exception raised."""
    try:
        return function()
    except Exception as exc:
        return type(exc)


def check(data: bytes, threshold: int = 64, *, handled: bool = False) -> FastHeader | None:
    """Compare both paths on `data`; with `handled`, the fast path must not decline."""
    fast = read_fast_header(data, threshold, RESOURCE, record_positions=True)
    if fast is None:
        assert not handled, "the fast path declined"
        return None
    ref = reference(data, threshold)
    assert ref is not None, "the fast path accepted what the pydicom path refuses"
    ds = ref.ds

    assert orjson.dumps(fast.model, option=orjson.OPT_SORT_KEYS) == ref.metadata
    assert orjson.dumps(fast.bulk_locations) == ref.bulkdata
    assert fast.instance_json(None) == (ref.metadata, ref.bulkdata)
    with quiet():
        expected = instance_json(ds, RESOURCE, threshold, PIXEL_ELEMENT, ref.positions)
    assert fast.instance_json(PIXEL_ELEMENT) == expected
    assert fast.pixel_data_offset == ref.pixel_data_offset
    for other in ("studies/9/series/8/instances/7", "a/bulkdata/b"):
        with quiet():
            expected = instance_json(ds, other, threshold, PIXEL_ELEMENT, ref.positions)
        assert fast.instance_json(PIXEL_ELEMENT, other) == expected
    assert frames(data, fast.frame_header()) == frames(data, ds)
    assert fast.transfer_syntax_uid == parsing._text(ds.file_meta, "TransferSyntaxUID")

    for keyword in RECORD_TEXT_KEYWORDS:
        assert fast.text(keyword) == parsing._text(ds, keyword), keyword
        assert (keyword in fast) == (keyword in ds), keyword
    for keyword in RECORD_INTEGER_KEYWORDS:
        assert fast.integer(keyword) == parsing._integer(ds, keyword), keyword
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset yields elements
        elem = ds[tag]
        assert tag in fast
        if elem.VR == "SQ" or f"{tag:08X}" in orjson.loads(ref.bulkdata):
            continue  # text() does not handle sequences or values it did not keep
        values: Any = _Values(elem.value)
        assert outcome(partial(fast.text, tag)) == outcome(partial(parsing._text, values, "")), (
            f"{tag:08X}"
        )
        assert outcome(partial(fast.integer, tag)) == outcome(
            partial(parsing._integer, values, "")
        ), f"{tag:08X}"
    assert "NoSuchKeyword" not in fast
    assert fast.text(0x7FE10010) is None

    positioned = read_fast_header(data, threshold, RESOURCE, record_positions=True)
    assert positioned is not None
    assert positioned.instance_json(None) == positions_reference(data, threshold)
    return fast


# --------------------------------------------------------------------------------------
# pydicom's test files
# --------------------------------------------------------------------------------------


def _testdata() -> list[Path]:
    return sorted({Path(p) for p in get_testdata_files() if Path(p).is_file()})


TESTDATA = _testdata()
# pydicom's character set test files, ISO 2022 ones included (declined)
CHARSET_FILES = sorted(Path(p) for p in get_charset_files() if Path(p).is_file())

# Files the fast path must handle: every encoding it claims.
MUST_HANDLE = [
    "CT_small.dcm",  # explicit VR, private tags
    "MR_small.dcm",
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",  # nested sequences
    "rtdose.dcm",
    "emri_small.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "nested_priv_SQ.dcm",
    "DICOMDIR-implicit",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",  # pydicom-data: overlays, CSA headers
    "chrFren.dcm",  # ISO_IR 100
    "chrFrenMulti.dcm",
    "chrGerm.dcm",
    "chrX1.dcm",  # ISO_IR 192
]


@pytest.mark.parametrize("threshold", [0, 64, 1 << 30])
@pytest.mark.parametrize(
    "path", TESTDATA + CHARSET_FILES, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_testdata_matches_pydicom(path: Path, threshold: int) -> None:
    check(path.read_bytes(), threshold, handled=path.name in MUST_HANDLE)


@pytest.mark.parametrize("name", MUST_HANDLE)
def test_named_files_are_handled(name: str) -> None:
    path: str | None
    if name.startswith("chr"):
        paths = get_charset_files(name)
        path = paths[0] if paths else None
    else:
        found = get_testdata_file(name, download=False)
        path = found if isinstance(found, str) else None
    assert path is not None, f"{name} is missing from the test data"
    assert check(Path(path).read_bytes(), handled=True) is not None


def test_most_of_the_testdata_is_handled() -> None:
    readable = handled = 0
    for path in TESTDATA:
        data = path.read_bytes()
        if reference(data, 64) is None:
            continue
        readable += 1
        handled += read_fast_header(data, 64, RESOURCE) is not None
    # 204 of the 228 files the pydicom path reads, when this test was written; the
    # others are Big Endian (19), Deflated, truncated (2), ISO 2022, or encoded
    # otherwise than their transfer syntax says.
    assert readable > 150
    assert handled / readable > 0.85


# --------------------------------------------------------------------------------------
# Data sets written by pydicom
# --------------------------------------------------------------------------------------


def write(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    buffer = io.BytesIO()
    with quiet():
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def item(**attributes: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def every_vr(charset: str | None = None) -> Dataset:
    """A data set with an element of every VR, multi-values, empties and sequences."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.add_new(0x00080054, "AE", ["STORESCP", " PACS "])
    ds.PatientAge = "042Y"
    ds.add_new(0x00209165, "AT", [0x00100010, 0x7FE00010])
    ds.add_new(0x00209167, "AT", 0x00280010)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "AXIAL"]
    ds.StudyDate = "20240101"
    ds.PatientBirthDate = ""
    ds.SliceThickness = "1.25"
    ds.PixelSpacing = ["0.5", " 0.25"]
    ds.ImagePositionPatient = ["-1e2", "+3.5", "0"]
    ds.AcquisitionDateTime = "20240101101500.123456+0100"
    ds.add_new(0x00189087, "FD", 1000.5)  # Diffusion b-value
    ds.add_new(0x00189089, "FD", [0.5, -0.25, 1e300])
    ds.add_new(0x00181320, "FL", [0.1, float("nan")])  # B1rms
    ds.InstanceNumber = "12"
    ds.SeriesNumber = " 7 "
    ds.AcquisitionNumber = ""
    ds.add_new(0x00200019, "IS", ["1", "-2", "3.0"])  # Item Number
    ds.PatientID = "ID-1 "
    ds.OtherPatientIDs = ["A", "B ", ""]
    ds.InstitutionAddress = "Street 1\\2\r\nTown"
    ds.ImageComments = "Text with trailing NUL\x00"
    ds.add_new(0x00420011, "OB", b"\x00\x01\x02")  # Encapsulated Document
    ds.add_new(0x00660040, "OL", struct.pack("<4L", 1, 2, 3, 4))
    ds.add_new(0x00701A07, "OD", struct.pack("<2d", 1.5, -2.5))
    ds.add_new(0x00640009, "OF", struct.pack("<3f", 1.5, -2.5, 3.0))
    ds.add_new(0x7FE00001, "OV", struct.pack("<Q", 12345))
    ds.add_new(0x00281201, "OW", bytes(range(200)))
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう" if charset == "ISO_IR 192" else "Doe^J"
    ds.ReferringPhysicianName = ["Smith^A", "Jones^B^^Dr"]
    ds.PerformingPhysicianName = ""
    ds.StudyID = "S1"
    ds.add_new(0x00186020, "SL", [-1, 2, -(2**31)])  # Reference Pixel X0
    ds.add_new(0x00189219, "SS", -5)  # Tag Angle Second Axis
    ds.StudyComments = "A\\B is one value"
    ds.add_new(0x00720082, "SV", [-(2**63), 2**62])
    ds.StudyTime = "101500.5 "
    ds.add_new(0x00080301, "US", [1, 65535])  # Private Group Reference
    ds.add_new(0x00100212, "UC", ["unlimited", "characters"])
    ds.add_new(0x00041200, "UL", 4294967295)
    ds.add_new(0x00081190, "UR", "http://example.com/a b  ")
    ds.add_new(0x00081195, "UI", "1.2.840.10008.1.2\x00")
    ds.add_new(0x0008040C, "UV", [0, 2**64 - 1])
    ds.add_new(0x00100218, "UT", "unlimited\\text  ")
    ds.add_new(0x00081030, "LO", "Ärger mit Öl" if charset else "plain")
    ds.add_new(0x00081150, "UI", "")
    ds.ReferencedImageSequence = [
        item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID="1.2.3.9"),
        item(),
        item(ReferencedSOPClassUID=CTImageStorage, ReferencedFrameNumber=["1", "2"]),
    ]
    ds.ReferencedStudySequence = []
    ds.SourceImageSequence = [
        item(
            PatientName="Nested^Name",
            DerivationCodeSequence=[item(CodeValue="113072", CodeMeaning="x" * 100)],
        )
    ]
    block = ds.private_block(0x0009, "DICOMWEB TEST", create=True)
    block.add_new(0x01, "SH", "private")
    block.add_new(0x02, "OB", bytes(100))
    block.add_new(0x03, "SQ", [item(PatientID="P")])
    # A private creator pydicom's private dictionary knows: implicit VR finds the VRs.
    ge = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    ge.add_new(0x0F, "DS", "1.5")  # (0019,xx0F) Horizontal Frame Of Reference
    ge.add_new(0x11, "SS", -3)  # (0019,xx11) Series contrast
    ge.add_new(0x18, "LO", "first scan")
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5  # 'US or SS': SS here
    ds.PixelData = bytes(32)
    return ds


@pytest.mark.parametrize("charset", [None, "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize(
    "transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit]
)
def test_every_vr(transfer_syntax: str, charset: str | None) -> None:
    ds = every_vr(charset)
    if charset == "ISO_IR 6":
        ds.add_new(0x00081030, "LO", "plain")
    if transfer_syntax == JPEGBaseline8Bit:
        del ds.PixelData
    fast = check(write(ds, transfer_syntax), handled=True)
    assert fast is not None
    assert fast.pixel_data_offset is not None or transfer_syntax == JPEGBaseline8Bit
    for threshold in (0, 10, 1 << 20):
        check(write(ds, transfer_syntax), threshold, handled=True)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_undefined_lengths(transfer_syntax: str) -> None:
    ds = every_vr("ISO_IR 100")
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for child in elem.value:
                child.is_undefined_length_sequence_item = True
    check(write(ds, transfer_syntax), handled=True)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_ct_instance(transfer_syntax: str) -> None:
    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    fast = check(buffer.getvalue(), handled=True)
    assert fast is not None
    assert fast.text("PatientName") == "Doe^Jane"
    assert fast.integer("Rows") == 16
    assert "Rows" in fast
    assert fast.pixel_data_offset is not None
    assert buffer.getvalue()[fast.pixel_data_offset : fast.pixel_data_offset + 4] == (
        b"\xe0\x7f\x10\x00"
    )
    assert check(to_bytes(ct_dataset()), handled=True) is not None


def test_pixel_representation_inherited_by_items() -> None:
    """'US or SS' in implicit VR items: pydicom may take Pixel Representation from above."""
    for pixel_representation in (0, 1):
        for undefined in (False, True):
            us = struct.Struct("<H").pack
            data = part10(
                sequence(
                    0x00081140,
                    None,
                    items(element(0x00280106, None, b"\xff\xff"), undefined=undefined),
                    undefined=undefined,
                )
                + element(0x00280103, None, us(pixel_representation))
                + sequence(
                    0x00880200,
                    None,
                    items(
                        element(0x00280103, None, us(1 - pixel_representation))
                        + element(0x00280107, None, us(7))
                    )
                    + items(element(0x00280107, None, us(8)))
                    + items(element(0x00280103, None, b"") + element(0x00280107, None, us(9))),
                    undefined=undefined,
                ),
                ImplicitVRLittleEndian,
            )
            fast = check(data, handled=True)
            assert fast is not None
            vr = fast.model["00081140"]["Value"][0]["00280106"]["vr"]
            assert vr == ("US" if undefined or pixel_representation == 0 else "SS")


def test_options_other_than_the_servers_decline() -> None:
    data = write(every_vr())
    assert read_fast_header(data, 64, RESOURCE) is not None
    saved = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.WARN
    try:
        assert read_fast_header(data, 64, RESOURCE) is None
    finally:
        config.settings.reading_validation_mode = saved
    config.use_DS_decimal = True
    try:
        with quiet():
            pydicom.valuerep.DSclass = pydicom.valuerep.DSdecimal
        assert read_fast_header(data, 64, RESOURCE) is None
    finally:
        config.use_DS_decimal = False
        pydicom.valuerep.DSclass = pydicom.valuerep.DSfloat


def test_buffer_types() -> None:
    data = write(every_vr("ISO_IR 192"))
    expected = read_fast_header(data, 64, RESOURCE)
    assert expected is not None
    for view in (memoryview(data), bytearray(data), memoryview(bytearray(data))):
        fast = read_fast_header(view, 64, RESOURCE)
        assert fast is not None
        assert fast.instance_json(PIXEL_ELEMENT) == expected.instance_json(PIXEL_ELEMENT)
        assert fast.text("PatientName") == expected.text("PatientName")


# --------------------------------------------------------------------------------------
# Hand-made files: what pydicom will not write
# --------------------------------------------------------------------------------------

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def element(tag: int, vr: str | None, value: bytes = b"", *, length: int | None = None) -> bytes:
    """An element; `vr` None encodes it as implicit VR."""
    n = len(value) if length is None else length
    if vr is None:
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, n) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), n) + value


def items(*contents: bytes, undefined: bool = False) -> bytes:
    out = b""
    for content in contents:
        if undefined:
            out += struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED) + content
            out += struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        else:
            out += struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
    return out


def sequence(tag: int, vr: str | None, content: bytes, *, undefined: bool = False) -> bytes:
    if undefined:
        end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        return element(tag, vr, content + end, length=UNDEFINED)
    return element(tag, vr, content)


def part10(dataset: bytes, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    def ui(tag: int, uid: str) -> bytes:
        raw = uid.encode() + b"\x00" * (len(uid) % 2)
        return element(tag, "UI", raw)

    meta = (
        element(0x00020001, "OB", b"\x00\x01")
        + ui(0x00020002, SecondaryCaptureImageStorage)
        + ui(0x00020003, "1.2.3.4.5")
        + ui(0x00020010, transfer_syntax)
        + ui(0x00020012, "1.2.3.4")
    )
    meta = element(0x00020000, "UL", struct.pack("<L", len(meta))) + meta
    return b"\x00" * 128 + b"DICM" + meta + dataset


PN = 0x00100010
PATIENT_ID = 0x00100020


IMPLICIT = ImplicitVRLittleEndian
HANDLED_CASES = {
    # An explicit UN for a known tag is decoded with the tag's own VR.
    "explicit-un": part10(element(PN, "UN", b"Doe^John") + element(0x00280010, "UN", b"\x00\x02")),
    # UN of undefined length is a sequence; its items are implicit VR.
    "un-undefined-length": part10(
        sequence(
            0x00081140,
            "UN",
            items(element(0x00081150, None, b"1.2.3\x00"), undefined=True),
            undefined=True,
        )
    ),
    # An explicit VR sequence whose items are implicit VR.
    "implicit-items": part10(
        sequence(0x00081140, "SQ", items(element(0x00081155, None, b"1.2\x00")))
    ),
    # Implicit VR: group lengths, private creators and elements, unknown creators.
    "implicit-private": part10(
        element(0x00080000, None, b"\x04\x00\x00\x00")
        + element(0x00090010, None, b"GEMS_IDEN_01")
        + element(0x00091001, None, b"CT01")
        + element(0x00091002, None, b"\x01\x02\x03")
        + element(0x0009FF01, None, b"x")
        + element(0x00130010, None, b"")
        + element(0x00131001, None, b"xy")
        + element(0x00150010, None, b"ACME")
        + element(0x00151001, None, b"xy"),
        IMPLICIT,
    ),
    # An implicit VR private sequence of undefined length.
    "implicit-private-sequence": part10(
        element(0x00090010, None, b"ACME 1.0")
        + sequence(
            0x00091001,
            None,
            items(element(PATIENT_ID, None, b"ID"), undefined=True),
            undefined=True,
        ),
        IMPLICIT,
    ),
    # 'OB or OW' pixel data in an implicit VR item, 'US or SS' next to an empty
    # Pixel Representation, overlay data.
    "implicit-ambiguous": part10(
        sequence(
            0x00880200,
            None,
            items(
                element(0x00280100, None, b"\x08\x00")
                + element(0x00280103, None, b"")
                + element(0x00280106, None, b"\xff\xff")
                + element(0x7FE00010, None, bytes(100))
            ),
        )
        + element(0x60003000, None, bytes(8)),
        IMPLICIT,
    ),
    # LUT Descriptor: an explicit SS one gets its first value made unsigned.
    "lut-descriptor": part10(
        sequence(
            0x00283010,
            "SQ",
            items(
                element(0x00283002, "SS", struct.pack("<3h", -4096, 0, 12))
                + element(0x00283006, "OW", bytes(16))
            ),
        )
    ),
    "lut-descriptor-top-level": part10(
        element(0x00283002, "SS", struct.pack("<3h", -4096, 0, 12))
        + element(0x00283003, "LO", b"LUT")
    ),
    "implicit-unknown-public-tag": part10(
        element(0x00180001, None, b"abc") + element(0x00200001, None, b""), IMPLICIT
    ),
    "lut-descriptor-implicit": part10(
        element(0x00280103, None, b"\x01\x00")
        + element(0x00283002, None, struct.pack("<3h", -4096, 0, 12)),
        IMPLICIT,
    ),
    # Odd lengths where pydicom accepts them; AT values of odd sizes.
    "odd-lengths": part10(
        element(0x00080020, "DA", b"2024010")
        + element(PN, "PN", b"=X\\B")
        + element(0x00209165, "AT", b"\x10\x00\x10")
        + element(0x00209167, "AT", b"\x10\x00\x10\x00\x20\x00\x20\x00\x30")
    ),
    # Numbers that are hard to tell apart.
    "numbers": part10(
        element(0x00180050, "DS", b" 1_0 ")
        + element(0x00180088, "DS", b"nan\\inf ")
        + element(0x00200011, "IS", b"1.5")
        + element(0x00200012, "IS", b"12345678901234567")
        + element(0x00200013, "IS", b"+7\x00")
    ),
    # Items with a character set of their own.
    "item-charset": part10(
        element(0x00080005, "CS", b"ISO_IR 192")
        + sequence(
            0x00081140,
            "SQ",
            items(element(0x00080005, "CS", b"ISO_IR 100") + element(PN, "PN", b"\xc4b")),
        )
        + element(PN, "PN", "Jürgen".encode())
    ),
    # Elements after pixel data are not read.
    "after-pixel-data": part10(
        element(0x00280010, "US", b"\x01\x00")
        + element(0x7FE00010, "OB", b"\x00\x00")
        + element(0xFFFCFFFC, "OB", bytes(4))
    ),
    "encapsulated-pixel-data": part10(
        element(0x00280010, "US", b"\x01\x00") + element(0x7FE00010, "OB", b"", length=UNDEFINED)
    ),
    "trailing-padding": part10(element(0xFFFCFFFC, "OB", bytes(4))),
    "empty": part10(b""),
}

DECLINED_CASES = {
    "big-endian": part10(element(PN, "PN", b"x"), "1.2.840.10008.1.2.2"),
    "deflated": part10(element(PN, "PN", b"x"), "1.2.840.10008.1.2.1.99"),
    "private-syntax": part10(element(PN, "PN", b"x"), "1.2.3.4.5.6"),
    "charset": part10(element(0x00080005, "CS", b"ISO_IR 144") + element(PN, "PN", b"x")),
    "iso-2022": part10(element(0x00080005, "CS", b"\\ISO 2022 IR 87") + element(PN, "PN", b"x")),
    "escape": part10(element(0x00080005, "CS", b"") + element(PN, "PN", b"\x1b$B")),
    "bad-utf-8": part10(element(0x00080005, "CS", b"ISO_IR 192") + element(PN, "PN", b"\xff")),
    "out-of-order": part10(element(PATIENT_ID, "LO", b"x") + element(PN, "PN", b"x")),
    "duplicate": part10(element(PN, "PN", b"x") + element(PN, "PN", b"y")),
    "unknown-vr": part10(element(PN, "XX", b"x")),
    "odd-us": part10(element(0x00280010, "US", b"\x01")),
    "bad-is": part10(element(0x00200013, "IS", b"1A")),  # instance_json fails
    "empty-ds-value": part10(element(0x00180050, "DS", b"1\\\\2")),  # instance_json fails
    "at-of-6-bytes": part10(element(0x00209165, "AT", b"\x10\x00\x10\x00\x20\x00")),
    "empty-name": part10(element(PN, "PN", b"A\\")),  # instance_json fails
    "not-implicit": part10(element(PN, "PN", b"x"), IMPLICIT),
    "command-group": part10(element(0x00000000, None, b"\x00" * 4) + element(PN, "PN", b"x")),
    "trailing-bytes": part10(element(PN, "PN", b"x") + b"\x00\x00"),
    "past-the-end": part10(element(PN, "PN", b"xy", length=4)),
    "us-or-ss-beside-pixel-data": part10(
        sequence(
            0x00880200,
            None,
            items(element(0x00280106, None, b"\x01\x00") + element(0x7FE00010, None, b"")),
        ),
        IMPLICIT,
    ),
    "lut-data": part10(element(0x00283006, None, b"\x01\x00"), IMPLICIT),
    "sequence-garbage": part10(
        sequence(0x00081140, "SQ", items(element(PN, "PN", b"x")) + b"\x00")
    ),
    "multi-valued-creator": part10(
        element(0x00110010, None, b"A\\B") + element(0x00111001, None, b"x"), IMPLICIT
    ),
    "sequence-after-charset-content": part10(
        element(0x00070010, "LO", b"X") + element(0x00080005, "CS", b"ISO_IR 100")
    ),
}


@pytest.mark.parametrize("data", HANDLED_CASES.values(), ids=HANDLED_CASES.keys())
def test_hand_made_cases(data: bytes) -> None:
    check(data, handled=True)
    check(data, 0, handled=True)


@pytest.mark.parametrize("data", DECLINED_CASES.values(), ids=DECLINED_CASES.keys())
def test_declined_cases(data: bytes) -> None:
    assert read_fast_header(data, 64, RESOURCE) is None
    check(data)


# --------------------------------------------------------------------------------------
# Generated values: every VR, random bytes
# --------------------------------------------------------------------------------------

VRS = [
    *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD"),
    *("OF", "OL", "OV", "OW", "PN", "SH", "SL", "SS", "ST", "SV", "TM", "UC", "UI", "UL"),
    *("UN", "UR", "US", "UT", "UV"),
]
ALPHABET = [
    *(b"0", b"1", b"5", b"9", b".", b"-", b"+", b"e", b"E", b"_", b" ", b"  ", b"\x00"),
    *(b"\\", b"=", b"^", b"\t", b"\r\n", b"\x1c", b"A", b"z", b"nan", b"inf", b"\xe9"),
    *(b"\xc3\xa9", b"\xe5\xb1\xb1", b"\xff", b"\xa0", b"\x85"),
]


NUMBER_ALPHABET = [b"0", b"1", b"7", b"9", b".", b"-", b"e", b" ", b"\\"]


def dictionary_tag(vr: str) -> int:
    """A public tag with the VR `vr`, none of the special ones."""
    special = {0x00080005, 0x00280103} | {t for t in DicomDictionary if t >> 16 == 0x7FE0}
    for tag, entry in sorted(DicomDictionary.items()):
        if entry[0] == vr and tag not in special and tag > 0x00080005:
            return tag
    raise AssertionError(vr)


def random_value(rng: random.Random, vr: str) -> bytes:
    if vr in ("AT", "FD", "FL", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV"):
        return rng.randbytes(rng.choice([1, 2, 3, 4, 5, 6, 8, 12, 16]))
    if vr in ("UL", "US", "UN", "UV"):
        return rng.randbytes(rng.choice([1, 2, 4, 6, 8, 16]))
    if vr in ("DS", "IS") and rng.random() < 0.7:
        return b"".join(rng.choice(NUMBER_ALPHABET) for _ in range(rng.randrange(1, 9)))
    return b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 9)))


@pytest.mark.parametrize("charset", [b"", b"ISO_IR 100", b"ISO_IR 192"])
@pytest.mark.parametrize("vr", VRS)
def test_random_values(vr: str, charset: bytes) -> None:
    rng = random.Random(f"{vr}{charset!r}")
    tag = dictionary_tag(vr)
    handled = 0
    for _ in range(60):
        value = random_value(rng, vr)
        head = element(0x00080005, "CS", charset) if charset else b""
        for data in (
            part10(head + element(tag, vr, value)),
            part10(head + element(tag, "UN", value)),  # decoded with the tag's VR
            part10(
                (element(0x00080005, None, charset) if charset else b"")
                + element(tag, None, value),
                ImplicitVRLittleEndian,
            ),
            part10(head + sequence(0x00081140, "SQ", items(element(tag, vr, value)))),
        ):
            handled += check(data, 4) is not None
    assert handled >= 20  # the checks compare something


@pytest.mark.parametrize("seed", range(4))
def test_random_private_and_unknown_elements(seed: int) -> None:
    rng = random.Random(seed)
    creators = [b"GEMS_IDEN_01", b"SIEMENS CSA HEADER", b"ACME", b"Philips Imaging DD 001"]
    for _ in range(100):
        group = rng.choice([0x0009, 0x0019, 0x0029, 0x2001, 0x0051])
        creator = rng.choice(creators)
        block = rng.choice([0x10, 0x11])
        element_number = rng.randrange(0, 0x100)
        value = random_value(rng, rng.choice(VRS))
        implicit = (
            element(group << 16 | block, None, creator + b" " * (len(creator) % 2))
            + element(group << 16 | block << 8 | element_number, None, value)
            + element(0x00991000 | rng.randrange(0x10, 0x100), None, value)
        )
        check(part10(implicit, ImplicitVRLittleEndian), 4)
        explicit = element(group << 16 | block, "UN", creator) + element(
            group << 16 | block << 8 | element_number, "UN", value
        )
        check(part10(explicit), 4)


# --------------------------------------------------------------------------------------
# Bad input: truncated and corrupted files
# --------------------------------------------------------------------------------------


def small_file(transfer_syntax: str) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "Müller^Hans"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.ReferencedImageSequence = [item(ReferencedSOPInstanceUID="1.2"), item()]
    ds.ReferencedImageSequence[1].is_undefined_length_sequence_item = True
    ds.SourceImageSequence = [item(PatientID="X", ImageType=["A"])]
    ds.SourceImageSequence.is_undefined_length = True
    ds.add_new(0x00091010, "OB", bytes(range(10)))
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8
    ds.PixelRepresentation = 0
    ds.SmallestImagePixelValue = 3
    ds.PixelData = bytes(4)
    return write(ds, transfer_syntax)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_truncated_at_every_offset(transfer_syntax: str) -> None:
    data = small_file(transfer_syntax)
    assert check(data, 4, handled=True) is not None
    for size in range(len(data)):
        check(data[:size], 4)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_corrupted_bytes(transfer_syntax: str) -> None:
    data = small_file(transfer_syntax)
    rng = random.Random(transfer_syntax)
    for _ in range(1500):
        corrupt = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 3])):
            position = rng.randrange(128, len(data))
            corrupt[position] = rng.choice([0x00, 0xFF, 0x20, 0x5C, rng.randrange(256)])
        check(bytes(corrupt), 4)


def test_garbage_never_raises() -> None:
    rng = random.Random(0)
    prefix = b"\x00" * 128 + b"DICM"
    for size in range(0, 400, 3):
        assert read_fast_header(rng.randbytes(size), 64, RESOURCE) is None
        read_fast_header(prefix + rng.randbytes(size), 64, RESOURCE)
    assert read_fast_header(b"", 64, RESOURCE) is None


def test_sequences_nested_too_deep_decline() -> None:
    content = element(PATIENT_ID, "LO", b"ID")
    for _ in range(40):
        content = sequence(0x00081140, "SQ", items(content))
    assert read_fast_header(part10(content), 64, RESOURCE) is None
    content = element(PATIENT_ID, "LO", b"ID")
    for _ in range(10):
        content = sequence(0x00081140, "SQ", items(content), undefined=True)
    check(part10(content), handled=True)


def test_every_element_of_a_sequence_value_keeps_its_uri() -> None:
    ds = Dataset()
    ds.ReferencedImageSequence = [item(), item()]
    ds.ReferencedImageSequence[1].add_new(0x00091010, "OB", bytes(200))
    fast = check(write(ds), 64, handled=True)
    assert fast is not None
    assert fast.bulk_locations == {"00081140/2/00091010": None}
    uri = fast.model["00081140"]["Value"][1]["00091010"]["BulkDataURI"]
    assert uri == f"{RESOURCE}/bulkdata/00081140/2/00091010"


def test_keywords() -> None:
    fast = check(write(every_vr("ISO_IR 100")), handled=True)
    assert fast is not None
    assert fast.text("ImageType") == "ORIGINAL\\PRIMARY\\\\AXIAL"
    assert fast.text("PatientBirthDate") is None
    assert fast.integer("SeriesNumber") == 7
    assert fast.text(0x00209167) == "(0028,0010)"
    assert keyword_for_tag(0x00100010) == "PatientName"
    with pytest.raises(TypeError):
        fast.text("ReferencedImageSequence")
    with pytest.raises(ValueError, match="BulkDataURI"):
        fast.text(0x00281201)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_prefix_holding_the_pixel_data_tag_is_enough(transfer_syntax: str) -> None:
    data = small_file(transfer_syntax)
    whole = read_fast_header(data, 4, RESOURCE)
    assert whole is not None and whole.pixel_data_offset is not None
    for size in range(len(data)):
        fast = read_fast_header(data[:size], 4, RESOURCE)
        if fast is not None and fast.pixel_data_offset is not None:
            assert fast.instance_json(None) == whole.instance_json(None)
            assert fast.pixel_data_offset == whole.pixel_data_offset
    header = 12 if transfer_syntax == ExplicitVRLittleEndian else 8
    prefix = data[: whole.pixel_data_offset + header]
    fast = read_fast_header(prefix, 4, RESOURCE)
    assert fast is not None and fast.instance_json(None) == whole.instance_json(None)
