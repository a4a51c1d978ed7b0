"""Content negotiation: Accept headers to the representation a response uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from pydicom import uid

from dicomweb.errors import NotAcceptable
from dicomweb.multipart import parse_content_type, split_unquoted

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"


@dataclass(frozen=True, slots=True)
class AcceptItem:
    media_type: str
    parameters: dict[str, str]
    quality: float
    position: int


def parse_accept(value: str | None) -> list[AcceptItem]:
    """The media ranges of an Accept header, best first (header order among equal q)."""
    if not value or not value.strip():
        return [AcceptItem("*/*", {}, 1.0, 0)]
    items = []
    for position, raw in enumerate(split_unquoted(value, ",")):
        if not raw.strip():
            continue
        media_type, params = parse_content_type(raw)
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if not 0.0 <= quality <= 1.0:
            quality = 0.0
        items.append(AcceptItem(media_type, params, quality, position))
    return sorted(items, key=lambda item: -item.quality)


def _specificity(item: AcceptItem, candidate: str) -> int:
    """How specifically `item` names `candidate` (0: not at all)."""
    if item.media_type == candidate or (
        candidate == DICOM_JSON and item.media_type == "application/json"
    ):
        return 3
    if item.media_type == "multipart/related":
        part_type = item.parameters.get("type", "").strip().lower()
        return 3 if part_type == candidate == DICOM_XML else 0
    if item.media_type == "application/*":
        return 2
    if item.media_type == "*/*":
        return 1
    return 0


def choose(accept: str | None, candidates: list[str]) -> str | None:
    """The candidate the Accept header prefers, or None if it accepts none of them.

    Each candidate takes the quality of the most specific range that names it (RFC 9110
    12.5.1); the highest quality wins, then the earliest range in the header, then the
    order of `candidates`.
    """
    items = parse_accept(accept)
    best: tuple[float, int, int] | None = None
    chosen = None
    for preference, candidate in enumerate(candidates):
        matches = [(_specificity(i, candidate), i) for i in items]
        matches = [(s, i) for s, i in matches if s > 0]
        if not matches:
            continue
        top = max(s for s, _ in matches)
        item = min((i for s, i in matches if s == top), key=lambda i: i.position)
        if item.quality <= 0:
            continue
        score = (item.quality, -item.position, -preference)
        if best is None or score > best:
            best, chosen = score, candidate
    return chosen


def response_media_type(accept: str | None) -> str:
    """Choose application/dicom+json or application/dicom+xml for a data set response.

    multipart/related; type="application/dicom+xml" selects XML too (PS3.18 8.7.3).
    """
    chosen = choose(accept, [DICOM_JSON, DICOM_XML])
    if chosen is None:
        raise NotAcceptable(
            f"none of the accepted media types can be produced; use {DICOM_JSON} or {DICOM_XML}"
        )
    return chosen


# Retrieve (WADO-RS): media types, transfer syntaxes, and the one table between them.

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
ZIP = "application/zip"
MULTIPART_RELATED = "multipart/related"
ANY_TRANSFER_SYNTAX = "*"

# JPEG XL (PS3.5 A.4.12) came after pydicom 3.0, which has no names for it.
JPEG_XL_LOSSLESS: Final = "1.2.840.10008.1.2.4.110"
JPEG_XL_JPEG_RECOMPRESSION: Final = "1.2.840.10008.1.2.4.111"
JPEG_XL: Final = "1.2.840.10008.1.2.4.112"

# Syntaxes whose pixel and other binary values are little-endian bytes as they are, so
# frames and bulk data read from any of them are the same octets.
NATIVE_LITTLE_ENDIAN: Final = frozenset(
    {uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian}
)

# PS3.18 8.7.3: "shall not be used with Web Services". Data stored so goes out in
# Explicit VR Little Endian, and a request naming one of them is refused.
NOT_ON_THE_WEB: Final = frozenset({uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian})

# Pixel data in these syntaxes is lossy whatever the encoder did: DCT quantisation,
# near-lossless JPEG-LS, JPEG recompressed into JPEG XL, and video.
LOSSY_SYNTAXES: Final = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLSNearLossless,
        JPEG_XL_JPEG_RECOMPRESSION,
        uid.MPEG2MPML,
        uid.MPEG2MPMLF,
        uid.MPEG2MPHL,
        uid.MPEG2MPHLF,
        uid.MPEG4HP41,
        uid.MPEG4HP41F,
        uid.MPEG4HP41BD,
        uid.MPEG4HP41BDF,
        uid.MPEG4HP422D,
        uid.MPEG4HP422DF,
        uid.MPEG4HP423D,
        uid.MPEG4HP423DF,
        uid.MPEG4HP42STEREO,
        uid.MPEG4HP42STEREOF,
        uid.HEVCMP51,
        uid.HEVCM10P51,
    }
)
# These hold either reversible or irreversible codestreams; Lossy Image Compression
# (0028,2110) says which.
LOSSY_CAPABLE: Final = frozenset({uid.JPEG2000, uid.JPEG2000MC, uid.HTJ2K, JPEG_XL})

# PS3.18 Tables 8.7.3-2 and 8.7.3-5: the media type of frames and pixel bulk data held
# in each transfer syntax. Native syntaxes are application/octet-stream.
FRAME_MEDIA_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        uid.ExplicitVRLittleEndian: OCTET_STREAM,
        uid.ImplicitVRLittleEndian: OCTET_STREAM,
        uid.DeflatedExplicitVRLittleEndian: OCTET_STREAM,
        uid.ExplicitVRBigEndian: OCTET_STREAM,
        uid.JPEGBaseline8Bit: "image/jpeg",
        uid.JPEGExtended12Bit: "image/jpeg",
        uid.JPEGLossless: "image/jpeg",
        uid.JPEGLosslessSV1: "image/jpeg",
        uid.JPEGLSLossless: "image/jls",
        uid.JPEGLSNearLossless: "image/jls",
        uid.JPEG2000Lossless: "image/jp2",
        uid.JPEG2000: "image/jp2",
        uid.JPEG2000MCLossless: "image/jpx",
        uid.JPEG2000MC: "image/jpx",
        uid.HTJ2KLossless: "image/jphc",
        uid.HTJ2KLosslessRPCL: "image/jphc",
        uid.HTJ2K: "image/jphc",
        JPEG_XL_LOSSLESS: "image/jxl",
        JPEG_XL_JPEG_RECOMPRESSION: "image/jxl",
        JPEG_XL: "image/jxl",
        uid.RLELossless: "image/dicom-rle",
        uid.MPEG2MPML: "video/mpeg2",
        uid.MPEG2MPMLF: "video/mpeg2",
        uid.MPEG2MPHL: "video/mpeg2",
        uid.MPEG2MPHLF: "video/mpeg2",
        uid.MPEG4HP41: "video/mp4",
        uid.MPEG4HP41F: "video/mp4",
        uid.MPEG4HP41BD: "video/mp4",
        uid.MPEG4HP41BDF: "video/mp4",
        uid.MPEG4HP422D: "video/mp4",
        uid.MPEG4HP422DF: "video/mp4",
        uid.MPEG4HP423D: "video/mp4",
        uid.MPEG4HP423DF: "video/mp4",
        uid.MPEG4HP42STEREO: "video/mp4",
        uid.MPEG4HP42STEREOF: "video/mp4",
        uid.HEVCMP51: "video/h265",
        uid.HEVCM10P51: "video/h265",
    }
)

# The transfer syntax a media type stands for when a request names none (the "D" rows of
# the same tables).
DEFAULT_TRANSFER_SYNTAXES: Final[Mapping[str, str]] = MappingProxyType(
    {
        DICOM: uid.ExplicitVRLittleEndian,
        OCTET_STREAM: uid.ExplicitVRLittleEndian,
        "image/jpeg": uid.JPEGLosslessSV1,
        "image/jls": uid.JPEGLSLossless,
        "image/jp2": uid.JPEG2000Lossless,
        "image/jpx": uid.JPEG2000MCLossless,
        "image/jphc": uid.HTJ2KLossless,
        "image/jxl": JPEG_XL_LOSSLESS,
        "image/dicom-rle": uid.RLELossless,
        "video/mpeg2": uid.MPEG2MPML,
        "video/mp4": uid.MPEG4HP41,
        "video/h265": uid.HEVCMP51,
    }
)

# Names some clients still send for the registered media types.
_ALIASES: Final = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of frames held in `transfer_syntax` (octet-stream when unknown)."""
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


@dataclass(frozen=True, slots=True)
class Wanted:
    """One representation that an Accept header admits for a retrieve response.

    `media_type` is the message's (multipart/related, or a single-part type such as
    application/zip); `part_type` what each part, or the single body, holds.
    `transfer_syntax` is None when the request names none and ANY_TRANSFER_SYNTAX
    for "*".
    """

    media_type: str
    part_type: str
    transfer_syntax: str | None
    # The Accept header's q-value: choices of higher quality win over cheaper ones.
    quality: float = field(default=1.0, compare=False)


def wanted(
    accept: str | None, default_part: str, single_part: Mapping[str, str] | None = None
) -> list[Wanted]:
    """The representations `accept` admits, best first.

    A multipart/related range without a type parameter means parts of `default_part`;
    */* (and an absent header) admits multipart/related with parts of any type.
    `single_part` maps the single-part media types the resource can also send to what
    their body holds (application/zip -> application/dicom).
    """
    single_part = single_part or {}
    found: list[Wanted] = []
    for item in parse_accept(accept):
        if item.quality <= 0:
            continue
        syntax = item.parameters.get("transfer-syntax") or None
        if item.media_type == MULTIPART_RELATED:
            part = item.parameters.get("type", "").strip().lower() or default_part
            part = _ALIASES.get(part, part)
            found.append(Wanted(MULTIPART_RELATED, part, syntax, item.quality))
        elif item.media_type in ("*/*", "multipart/*"):
            # Any part type: frames go out in their stored media type.
            found.append(Wanted(MULTIPART_RELATED, "*/*", syntax, item.quality))
        elif item.media_type in single_part:
            part = single_part[item.media_type]
            found.append(Wanted(item.media_type, part, syntax, item.quality))
    return found


def covers(media_range: str, media_type: str) -> bool:
    """Whether `media_range` (a type, type/* or */*) includes `media_type`."""
    if media_range in ("*/*", "*", media_type):
        return True
    return media_range.endswith("/*") and media_type.startswith(media_range[:-1])


def as_sent(stored: str) -> str:
    """The syntax data stored in `stored` goes out in when sent "as stored": itself,
    except Implicit VR Little Endian and Explicit VR Big Endian, which are not used on
    the web (PS3.18 8.7.3) and become Explicit VR Little Endian."""
    return uid.ExplicitVRLittleEndian if stored in NOT_ON_THE_WEB else stored


def instance_syntax(choice: Wanted, stored: str, lossy: bool = False) -> str | None:
    """The transfer syntax a whole instance stored in `stored` is sent in for `choice`,
    or None if `choice` does not hold application/dicom.

    With no transfer-syntax named, that is the default, Explicit VR Little Endian, unless
    the stored pixel data is `lossy` compressed, which is then sent as stored (PS3.18
    8.7.3 and 8.7.3.4 note 2: decompressing it would not restore what was lost).
    """
    if not covers(choice.part_type, DICOM):
        return None
    if choice.transfer_syntax is None:
        return as_sent(stored) if lossy else DEFAULT_TRANSFER_SYNTAXES[DICOM]
    if choice.transfer_syntax == ANY_TRANSFER_SYNTAX:
        return as_sent(stored)
    return choice.transfer_syntax


def pixel_syntax(choice: Wanted, stored: str, lossy: bool = False) -> str | None:
    """The transfer syntax frames stored in `stored` are sent in for `choice`, or None if
    `choice` cannot hold frames.

    A media type that is the stored frames' own, named without a transfer syntax, takes
    them as they are; application/octet-stream with transfer-syntax=* takes any frames as
    they are (what viewers ask for); application/octet-stream alone means native frames,
    except for `lossy` compressed frames, which go out as stored (PS3.18 8.7.3). Another
    media type without a transfer syntax means its default syntax (PS3.18 Table 8.7.3-5).
    """
    stored_type = frame_media_type(stored)
    part, syntax = choice.part_type, choice.transfer_syntax
    if syntax == ANY_TRANSFER_SYNTAX:
        if covers(part, stored_type) or part == OCTET_STREAM:
            return as_sent(stored)
        return DEFAULT_TRANSFER_SYNTAXES.get(part)
    if syntax is None:
        compressed = stored_type != OCTET_STREAM
        if compressed and covers(part, stored_type):
            return stored
        if covers(part, OCTET_STREAM):
            return stored if compressed and lossy else DEFAULT_TRANSFER_SYNTAXES[OCTET_STREAM]
        return DEFAULT_TRANSFER_SYNTAXES.get(part)
    # Compressed frames are octet streams too; some clients name them so.
    if part == OCTET_STREAM or covers(part, frame_media_type(syntax)):
        return syntax
    return None


def value_syntax(choice: Wanted) -> str | None:
    """The transfer syntax binary values other than pixel data are sent in for `choice`,
    or None if `choice` cannot hold them (they are application/octet-stream)."""
    if not covers(choice.part_type, OCTET_STREAM):
        return None
    if choice.transfer_syntax in (None, ANY_TRANSFER_SYNTAX):
        return DEFAULT_TRANSFER_SYNTAXES[OCTET_STREAM]
    return choice.transfer_syntax
