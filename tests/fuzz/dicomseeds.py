"""Small, valid Part 10 files in the encodings ingest meets, and where their lengths are.

The seeds are what the header fuzzers mutate: each is a few hundred bytes, and between
them they hold file meta, explicit and implicit VR data sets, nested sequences of
defined and undefined length, private elements, multi-frame native and encapsulated
pixel data, big endian, deflate, and a data set without preamble.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import cache

from pydicom import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests.dicomfactory import ct_dataset

_UIDS = {
    "study": "1.2.826.0.1.3680043.8.498.1",
    "series": "1.2.826.0.1.3680043.8.498.2",
    "sop": "1.2.826.0.1.3680043.8.498.3",
}
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


def _base(**kwargs: object) -> Dataset:
    return ct_dataset(_UIDS["study"], _UIDS["series"], _UIDS["sop"], rows=4, columns=4, **kwargs)  # type: ignore[arg-type]


def _save(ds: Dataset, syntax: str, *, preamble: bool = True) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=None, little_endian=None)
    data = buffer.getvalue()
    # Without preamble and prefix, as pydicom writes a data set made in memory.
    return data if preamble else data[132:]


def _with_sequences(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    inner = Dataset()
    inner.CodeValue = "T-D4000"
    inner.CodingSchemeDesignator = "SRT"
    inner.CodeMeaning = "Abdomen"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    request = Dataset()
    request.ScheduledProcedureStepID = "SPS1"
    request.RequestedProcedureID = "RP1"
    ds.RequestAttributesSequence = Sequence([request])
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", "private text")
    ds.add_new(0x00091002, "OB", bytes(range(16)))
    ds.add_new(0x00091003, "UN", b"\x01\x02\x03\x04")
    return ds


@cache
def seeds() -> dict[str, bytes]:
    """The seed files by name (built once)."""
    out: dict[str, bytes] = {}
    out["explicit"] = _save(_base(), ExplicitVRLittleEndian)
    out["implicit"] = _save(_base(), ImplicitVRLittleEndian)
    out["sequences"] = _save(_with_sequences(_base()), ExplicitVRLittleEndian)
    out["sequences-implicit"] = _save(_with_sequences(_base()), ImplicitVRLittleEndian)
    out["big-endian"] = _save(_base(), ExplicitVRBigEndian)
    out["deflated"] = _save(_base(), DeflatedExplicitVRLittleEndian)
    out["no-preamble"] = _save(_base(), ExplicitVRLittleEndian, preamble=False)

    multi = _base()
    multi.NumberOfFrames = 3
    multi.PixelData = bytes(range(96))
    out["multiframe"] = _save(multi, ExplicitVRLittleEndian)

    for name, syntax, fragments in (
        (
            "jpeg",
            JPEGBaseline8Bit,
            [b"\xff\xd8\xff\xdb" + bytes(8), b"\xff\xd8\xff\xdb" + bytes(6)],
        ),
        ("rle", RLELossless, [struct.pack("<2L", 1, 64) + bytes(58) + b"\x00\x00"] * 2),
    ):
        ds = _base()
        ds.NumberOfFrames = 2
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = encapsulate(fragments, has_bot=True)
        ds["PixelData"].VR = "OB"
        out[name] = _save(ds, syntax)

    text = _base()
    text.SpecificCharacterSet = "ISO_IR 192"
    text.PatientName = "Müller^Jürgen=山田^太郎"
    text.StudyDescription = "Thorax\\Abdomen"
    text.SliceThickness = "1.25"
    text.WindowCenter = ["40", "400"]
    out["utf8"] = _save(text, ExplicitVRLittleEndian)
    return out


@dataclass(frozen=True, slots=True)
class LengthField:
    """Where an element header's length lies: its offset and size (2 or 4 bytes)."""

    header: int
    offset: int
    size: int


def length_fields(data: bytes) -> list[LengthField]:
    """The length fields of a little endian file's elements, items and delimiters.

    Walks file meta (explicit VR) and the data set (explicit or implicit, as its first
    element shows), into sequences and items; stops at the first thing it cannot read.
    """
    pos = 132 if data[128:132] == b"DICM" else 0
    found: list[LengthField] = []
    implicit = False
    stack: list[int] = []  # ends of defined-length sequences and items
    while pos + 8 <= len(data):
        while stack and pos >= stack[-1]:
            stack.pop()
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 2 and pos + 6 <= len(data) and not stack:
            vr = data[pos + 4 : pos + 6]
            implicit = not (vr.isalpha() and vr.isupper())
        vr = data[pos + 4 : pos + 6]
        if group == 0xFFFE or (implicit and group != 2):
            found.append(LengthField(pos, pos + 4, 4))
            (length,) = struct.unpack_from("<L", data, pos + 4)
            value = pos + 8
            is_container = group == 0xFFFE and element == 0xE000
        elif vr in _LONG_VRS:
            found.append(LengthField(pos, pos + 8, 4))
            (length,) = struct.unpack_from("<L", data, pos + 8)
            value = pos + 12
            is_container = vr in (b"SQ", b"UN") and length == _UNDEFINED
        else:
            found.append(LengthField(pos, pos + 6, 2))
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value = pos + 8
            is_container = False
        if group == 0xFFFE and element != 0xE000:
            pos = value  # a delimiter
        elif length == _UNDEFINED or is_container or vr == b"SQ":
            if length != _UNDEFINED:
                stack.append(value + length)
            pos = value  # step into the sequence or item
        else:
            pos = value + length
    return found
