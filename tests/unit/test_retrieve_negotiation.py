"""Which transfer syntax a retrieve sends for each Accept header, and byte sources."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from dicomweb.negotiation import (
    DEFAULT_TRANSFER_SYNTAXES,
    FRAME_MEDIA_TYPES,
    Wanted,
    frame_media_type,
    instance_syntax,
    pixel_syntax,
    value_syntax,
    wanted,
)
from dicomweb.retrieve import ByteSource

MULTIPART = "multipart/related"
OCTET = "application/octet-stream"


def test_every_frame_media_type_has_a_default_syntax() -> None:
    for syntax, media_type in FRAME_MEDIA_TYPES.items():
        assert media_type in DEFAULT_TRANSFER_SYNTAXES, syntax
        assert media_type == media_type.lower()
    assert frame_media_type(HTJ2KLossless) == "image/jphc"
    assert frame_media_type("1.2.3.4") == OCTET


def test_wanted_parses_accept() -> None:
    accept = (
        'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80;q=0.5, '
        "application/zip, multipart/related; type=image/x-dicom-rle, image/png, "
        "*/*;q=0.1, application/octet-stream;q=0"
    )
    assert wanted(accept, OCTET, {"application/zip": "application/dicom"}) == [
        Wanted("application/zip", "application/dicom", None),
        Wanted(MULTIPART, "image/dicom-rle", None),
        Wanted(MULTIPART, "image/jls", "1.2.840.10008.1.2.4.80"),
        Wanted(MULTIPART, "*/*", None),
    ]
    assert wanted(None, OCTET) == [Wanted(MULTIPART, "*/*", None)]
    assert wanted("multipart/related", OCTET) == [Wanted(MULTIPART, OCTET, None)]


@pytest.mark.parametrize(
    ("part", "syntax", "stored", "sent"),
    [
        ("application/dicom", None, JPEG2000Lossless, ExplicitVRLittleEndian),
        ("application/dicom", "*", JPEG2000Lossless, JPEG2000Lossless),
        ("application/dicom", JPEGBaseline8Bit, ExplicitVRLittleEndian, JPEGBaseline8Bit),
        ("*/*", None, RLELossless, ExplicitVRLittleEndian),
        ("image/jpeg", None, ExplicitVRLittleEndian, None),
    ],
)
def test_instance_syntax(part: str, syntax: str | None, stored: str, sent: str | None) -> None:
    assert instance_syntax(Wanted(MULTIPART, part, syntax), stored) == sent


@pytest.mark.parametrize(
    ("part", "syntax", "stored", "sent"),
    [
        # transfer-syntax=*: as stored, native little endian labelled Explicit VR LE.
        (OCTET, "*", JPEG2000Lossless, JPEG2000Lossless),
        (OCTET, "*", ImplicitVRLittleEndian, ExplicitVRLittleEndian),
        # Big endian is not used on the web (PS3.18 8.7.3): its frames are swapped.
        (OCTET, "*", ExplicitVRBigEndian, ExplicitVRLittleEndian),
        ("image/jp2", "*", JPEG2000Lossless, JPEG2000Lossless),
        ("image/jpeg", "*", JPEG2000Lossless, JPEGLosslessSV1),
        # No transfer syntax: the stored media type as stored; octet-stream is native.
        ("image/jp2", None, JPEG2000Lossless, JPEG2000Lossless),
        ("image/*", None, JPEG2000Lossless, JPEG2000Lossless),
        ("*/*", None, RLELossless, RLELossless),
        ("*/*", None, ImplicitVRLittleEndian, ExplicitVRLittleEndian),
        ("*/*", None, ExplicitVRBigEndian, ExplicitVRLittleEndian),
        (OCTET, None, JPEG2000Lossless, ExplicitVRLittleEndian),
        ("image/jls", None, JPEG2000Lossless, "1.2.840.10008.1.2.4.80"),
        ("image/*", None, ExplicitVRLittleEndian, None),
        ("text/plain", None, ExplicitVRLittleEndian, None),
        # A named transfer syntax must belong to the media type (octet-stream takes any).
        ("image/jpeg", JPEGBaseline8Bit, JPEGBaseline8Bit, JPEGBaseline8Bit),
        (OCTET, JPEGBaseline8Bit, JPEGBaseline8Bit, JPEGBaseline8Bit),
        ("image/jp2", JPEGBaseline8Bit, JPEGBaseline8Bit, None),
    ],
)
def test_pixel_syntax(part: str, syntax: str | None, stored: str, sent: str | None) -> None:
    assert pixel_syntax(Wanted(MULTIPART, part, syntax), stored) == sent


def test_lossy_data_keeps_its_syntax_when_none_is_named() -> None:
    # PS3.18 8.7.3: the default applies "unless the origin server has only access to the
    # pixel data in lossy compressed form".
    dicom, octet = Wanted(MULTIPART, "application/dicom", None), Wanted(MULTIPART, OCTET, None)
    assert instance_syntax(dicom, JPEGBaseline8Bit, lossy=True) == JPEGBaseline8Bit
    assert instance_syntax(dicom, JPEGBaseline8Bit, lossy=False) == ExplicitVRLittleEndian
    assert pixel_syntax(octet, JPEGBaseline8Bit, lossy=True) == JPEGBaseline8Bit
    # Named syntaxes, and other media types' defaults, are what they say.
    named = Wanted(MULTIPART, "application/dicom", ExplicitVRLittleEndian)
    assert instance_syntax(named, JPEGBaseline8Bit, lossy=True) == ExplicitVRLittleEndian
    jls = Wanted(MULTIPART, "image/jls", None)
    assert pixel_syntax(jls, JPEGBaseline8Bit, lossy=True) == "1.2.840.10008.1.2.4.80"
    # Implicit VR data goes out in Explicit VR, even "as stored".
    as_stored = Wanted(MULTIPART, "application/dicom", "*")
    assert instance_syntax(as_stored, ImplicitVRLittleEndian) == ExplicitVRLittleEndian


def test_wanted_keeps_q_values() -> None:
    found = wanted("multipart/related; type=application/dicom; q=0.4, */*;q=0.2", OCTET)
    assert [w.quality for w in found] == [0.4, 0.2]


def test_value_syntax() -> None:
    assert value_syntax(Wanted(OCTET, OCTET, None)) == ExplicitVRLittleEndian
    assert value_syntax(Wanted(MULTIPART, "*/*", "*")) == ExplicitVRLittleEndian
    assert value_syntax(Wanted(MULTIPART, "image/jpeg", None)) is None


def test_byte_source_slices_across_ranges() -> None:
    source = ByteSource("k", ((100, 10), (200, 5), (300, 10)))
    assert source.length == 25
    assert source.slice(0, 25) == source
    assert source.slice(8, 17) == ByteSource("k", ((108, 2), (200, 5), (300, 2)))
    assert source.slice(10, 15) == ByteSource("k", ((200, 5),))
    assert ByteSource("k", data=b"abcdef").slice(2, 4).data == b"cd"
