"""Transcoding pixel data between transfer syntaxes (PS3.5 section 8 and Annex A).

Frames and whole PS3.10 files can be re-encoded between the native syntaxes (Implicit
and Explicit VR Little Endian, Deflated; Explicit VR Big Endian is read only), RLE, JPEG
(baseline, extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K. `codecs` holds the table
of codecs; this module is what callers use. Everything here is CPU work for a thread.

Colour follows PS3.5 8.2 and pydicom: YBR JPEG baseline and extended data becomes RGB
in native output, as pydicom's decompress makes it; lossless targets keep YBR_FULL
samples as they are, so no sample changes (lossless JPEG, which cannot, gets RGB);
lossy targets take RGB and return what their codestream holds (JPEG: YBR_FULL_422, JPEG
2000 and HTJ2K: YBR_ICT); lossless JPEG 2000 and HTJ2K of RGB use the reversible colour
transform and say YBR_RCT. JPEG 2000 decoders undo either transform, giving RGB.

SOP Instance UIDs never change, lossy targets included. A transfer syntax is an encoding
of an instance, not a new instance: a WADO-RS retrieve that returns an instance in the
transfer syntax the client accepts (PS3.18 content negotiation) still returns the
instance the client named, and a client that was sent a lossy encoding learns it from
Lossy Image Compression (0028,2110), which is set to "01".
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, Final, cast

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels.decoders.base import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dicomweb.pixels.codecs import (
    ALWAYS_LOSSY,
    SYNTAXES,
    Kind,
    Syntax,
    decode,
    decoded_info,
    encode,
    native_bytes,
    native_order,
    refusal,
)
from dicomweb.pixels.frameinfo import (
    RGB,
    YBR_FULL,
    YBR_FULL_422,
    YBR_ICT,
    YBR_RCT,
    FrameInfo,
    TranscodeError,
)

__all__ = [
    "FrameInfo",
    "TranscodeError",
    "can_decode",
    "can_encode",
    "decode_frame",
    "encode_frame",
    "transcode_frame",
    "transcode_instance",
    "transcode_refusal",
]

_PIXEL_TAGS: Final = {
    "PixelData": 0x7FE00010,
    "FloatPixelData": 0x7FE00008,
    "DoubleFloatPixelData": 0x7FE00009,
}
_EXTENDED_OFFSET_TABLE: Final = (0x7FE00001, 0x7FE00002)
_NATIVE_VR: Final = {"FloatPixelData": "OF", "DoubleFloatPixelData": "OD"}
# Values of these VRs are sequences of words in the data set's byte order (PS3.5 7.3).
_WORD_SIZES: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# Basic Offset Table entries are 32-bit; beyond that the Extended Offset Table is needed.
_MAX_BASIC_OFFSET: Final = 2**32 - 1


def _syntax(transfer_syntax: str) -> Syntax:
    syntax = SYNTAXES.get(str(transfer_syntax).strip("\0 "))
    if syntax is None:
        raise TranscodeError(f"transfer syntax {transfer_syntax!r} is not supported")
    return syntax


def can_decode(transfer_syntax: str) -> bool:
    """Whether frames stored in `transfer_syntax` can be decoded here."""
    syntax = SYNTAXES.get(transfer_syntax)
    if syntax is None:
        return False
    try:
        return bool(get_decoder(syntax.uid).is_available)
    except NotImplementedError:
        return False


def can_encode(transfer_syntax: str, info: FrameInfo) -> bool:
    """Whether frames described by `info` can be encoded in `transfer_syntax`.

    `info` describes the pixels to encode: when transcoding from a compressed syntax,
    decoding may change their colour space first (see `transcode_frame`).
    """
    syntax = SYNTAXES.get(transfer_syntax)
    return syntax is not None and refusal(syntax, info) is None


def decode_frame(data: bytes, transfer_syntax: str, info: FrameInfo) -> NDArray[Any]:
    """One frame's stored bytes as a pixel array, as pydicom decodes them.

    `data` is the frame's slice of native pixel data (for Deflated Explicit VR Little
    Endian: of the inflated data set; for 8-bit Explicit VR Big Endian: as OB, whose
    bytes are not swapped) or, encapsulated, its fragments concatenated. The array is
    (rows, columns) or (rows, columns, samples), in the machine's byte order, with YBR
    colour converted to RGB.

    Raises TranscodeError for an unknown syntax or data that cannot be decoded.
    """
    pixels, _ = decode(data, _syntax(transfer_syntax), info, as_rgb=True)
    return pixels


def encode_frame(
    pixels: NDArray[Any], transfer_syntax: str, info: FrameInfo
) -> tuple[bytes, FrameInfo]:
    """One frame of pixels, described by `info`, encoded in `transfer_syntax`.

    Returns the frame's bytes (native: little endian, not padded to even length) and
    the FrameInfo of the encoded frame, whose Photometric Interpretation and Bits
    Stored may differ from `info` (see the module docstring). Raises TranscodeError
    when the syntax cannot carry these pixels (`can_encode` says so beforehand).
    """
    return encode(pixels, _syntax(transfer_syntax), info)


def _as_rgb(source: Syntax, target: Syntax, info: FrameInfo) -> bool:
    """Whether decoding for `target` converts YBR colour to RGB.

    Lossy encoders take RGB; native output of lossy JPEG is RGB, as pydicom's
    decompress makes it; so is input to lossless encoders that cannot keep YBR_FULL.
    Otherwise the colour space stays, so that lossless stays exact.
    """
    if target.is_lossy or (target.kind is Kind.NATIVE and source.uid in ALWAYS_LOSSY):
        return True
    if target.kind is Kind.NATIVE or info.samples_per_pixel != 3:
        return False
    as_ybr = replace(info, photometric_interpretation=YBR_FULL, planar_configuration=0)
    return refusal(target, as_ybr) is not None


def _unchanged(source: Syntax, target: Syntax) -> bool:
    """Whether a frame's bytes need no work: same syntax, or little endian to little endian."""
    return source.uid == target.uid or (source.kind is Kind.NATIVE and target.kind is Kind.NATIVE)


def transcode_frame(
    data: bytes, source: str, target: str, info: FrameInfo
) -> tuple[bytes, FrameInfo]:
    """One frame's stored bytes in `source` re-encoded in `target`.

    `data` is as for `decode_frame`; the result as for `encode_frame`. A frame already in
    the target syntax, or moving between little endian native syntaxes, is returned as is.
    """
    source_syntax, target_syntax = _syntax(source), _syntax(target)
    if _unchanged(source_syntax, target_syntax):
        return bytes(data), info
    as_rgb = _check_target(source_syntax, target_syntax, info)
    pixels, decoded = decode(data, source_syntax, info, as_rgb=as_rgb)
    return encode(pixels, target_syntax, decoded)


def _check_target(source: Syntax, target: Syntax, info: FrameInfo) -> bool:
    """Refuse a target that cannot carry the decoded pixels, before any decoding.

    Returns whether decoding converts YBR colour to RGB (`_as_rgb`).
    """
    as_rgb = _as_rgb(source, target, info)
    photometric = info.photometric_interpretation
    if photometric in (YBR_RCT, YBR_ICT):
        photometric = RGB  # JPEG 2000 decoders undo the colour transform
    elif photometric in (YBR_FULL, YBR_FULL_422):
        photometric = RGB if as_rgb else YBR_FULL
    decoded = replace(info, photometric_interpretation=photometric, planar_configuration=0)
    reason = refusal(target, decoded)
    if reason:
        raise TranscodeError(reason)
    return as_rgb


def transcode_refusal(source: str, target: str, info: FrameInfo) -> str | None:
    """Why frames stored in `source`, described by `info`, cannot be sent in `target`,
    or None if they can (also when no work is needed). Decides before any decoding,
    with the colour conversions `transcode_frame` and `transcode_instance` make."""
    try:
        source_syntax, target_syntax = _syntax(source), _syntax(target)
        if _unchanged(source_syntax, target_syntax):
            return None
        if not can_decode(source_syntax.uid):
            return f"no decoder for {source_syntax.name} is installed"
        _check_target(source_syntax, target_syntax, info)
    except TranscodeError as exc:
        return str(exc)
    return None


def transcode_instance(source: bytes | pathlib.Path, target: str) -> bytes:
    """A complete PS3.10 file re-encoded in the transfer syntax `target`.

    The file meta Transfer Syntax UID is updated; pixel data is re-encoded (encapsulated
    with a Basic Offset Table for compressed targets, or an Extended Offset Table past
    4 GiB); Image Pixel attributes follow the encoded data; a lossy target sets Lossy
    Image Compression "01" and appends its ratio and method (PS3.3 C.7.6.1.1.5); the data
    set is written with the target's VR encoding and deflated when it says so. Instances
    without pixel data only change encoding. The SOP Instance UID is kept (see the
    module docstring for why).

    Raises TranscodeError for an unknown or unreadable source syntax, a target that
    cannot carry the pixel data, or input that is not a DICOM file.
    """
    target_syntax = _syntax(target)
    if target_syntax.kind is Kind.BIG_ENDIAN:
        raise TranscodeError(f"{target_syntax.name} is retired and only read, never written")
    raw = source.read_bytes() if isinstance(source, pathlib.Path) else bytes(source)
    ds = _read(raw)
    source_syntax = _syntax(ds.file_meta.get("TransferSyntaxUID", ""))
    if source_syntax.uid == target_syntax.uid:
        return raw
    keyword = next((k for k in _PIXEL_TAGS if k in ds), None)
    if keyword is not None and not _unchanged(source_syntax, target_syntax):
        _reencode_pixels(ds, keyword, source_syntax, target_syntax)
        if source_syntax.uid in ALWAYS_LOSSY:
            # Decoded JPEG baseline or extended data is lossy wherever it goes next.
            ds.LossyImageCompression = "01"
    if source_syntax.kind is Kind.BIG_ENDIAN:
        _swap_words(ds, skip=_PIXEL_TAGS[keyword] if keyword else None)
    ds.file_meta.TransferSyntaxUID = UID(target_syntax.uid)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _read(raw: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:
        # pydicom reports malformed input with many exception types; all mean the same.
        raise TranscodeError(f"not a readable DICOM file: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise TranscodeError("the file meta has no Transfer Syntax UID")
    return ds


def _decoded_frames(
    ds: Dataset, source: Syntax, target: Syntax
) -> Iterator[tuple[NDArray[Any], FrameInfo]]:
    """Each frame of `ds`'s pixel data, decoded as `target` needs it."""
    info = FrameInfo.from_dataset(ds)
    as_rgb = _check_target(source, target, info)
    decoder = get_decoder(source.uid)
    if not decoder.is_available:
        raise TranscodeError(f"no decoder for {source.name} is installed")
    options: dict[str, Any] = {
        **source.decoding_options(),
        "as_rgb": as_rgb,
        "allow_excess_frames": False,
    }
    frames = decoder.iter_array(ds, validate=False, **options)
    while True:
        try:
            pixels, properties = next(frames)
        except StopIteration:
            return
        except Exception as exc:
            # Codec plugins report bad data with many exception types.
            raise TranscodeError(f"the {source.name} pixel data cannot be decoded: {exc}") from exc
        yield native_order(pixels), decoded_info(info, properties)


def _reencode_pixels(ds: Dataset, keyword: str, source: Syntax, target: Syntax) -> None:
    """Replace `ds`'s pixel data with its frames encoded in `target`."""
    frames = _decoded_frames(ds, source, target)
    if target.kind is Kind.NATIVE:
        _store_native(ds, keyword, frames)
        return
    encoded: list[bytes] = []
    decoded_size = 0
    info: FrameInfo | None = None
    for pixels, decoded in frames:
        frame, info = encode(pixels, target, decoded)
        encoded.append(frame)
        decoded_size += pixels.size * decoded.dtype.itemsize
    if info is None:
        raise TranscodeError("the pixel data holds no frames")
    _store_encapsulated(ds, encoded)
    _set_image_attributes(ds, info)
    if target.is_lossy:
        _mark_lossy(ds, target, decoded_size / sum(len(f) for f in encoded))


def _store_native(
    ds: Dataset, keyword: str, frames: Iterator[tuple[NDArray[Any], FrameInfo]]
) -> None:
    decoded = list(frames)
    if not decoded:
        raise TranscodeError("the pixel data holds no frames")
    info = replace(decoded[0][1], planar_configuration=0)
    # All frames at once: 1-bit frames need not end on a byte boundary.
    data = native_bytes(np.stack([pixels.astype(info.dtype) for pixels, _ in decoded]), info)
    vr = _NATIVE_VR.get(keyword, "OB" if info.bits_allocated <= 8 else "OW")
    _remove_extended_offsets(ds)
    ds[_PIXEL_TAGS[keyword]] = DataElement(_PIXEL_TAGS[keyword], vr, data + b"\0" * (len(data) % 2))
    _set_image_attributes(ds, info)


def _store_encapsulated(ds: Dataset, frames: list[bytes]) -> None:
    _remove_extended_offsets(ds)
    tag = _PIXEL_TAGS["PixelData"]
    if sum(len(f) + 8 for f in frames[:-1]) <= _MAX_BASIC_OFFSET:
        ds[tag] = DataElement(tag, "OB", encapsulate(frames, has_bot=True))
    else:
        data, offsets, lengths = encapsulate_extended(frames)
        ds[tag] = DataElement(tag, "OB", data)
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    ds[tag].is_undefined_length = True


def _remove_extended_offsets(ds: Dataset) -> None:
    # An Extended Offset Table describes the old encapsulation; keeping it would mislead.
    for tag in _EXTENDED_OFFSET_TABLE:
        if tag in ds:
            del ds[tag]


def _set_image_attributes(ds: Dataset, info: FrameInfo) -> None:
    """Make the Image Pixel attributes agree with the encoded data (PS3.5 8.2)."""
    ds.PhotometricInterpretation = info.photometric_interpretation
    ds.SamplesPerPixel = info.samples_per_pixel
    if info.samples_per_pixel > 1:
        ds.PlanarConfiguration = info.planar_configuration
    if not info.is_float:
        ds.BitsStored = info.bits_stored
        ds.HighBit = info.bits_stored - 1
        ds.PixelRepresentation = info.pixel_representation


def _mark_lossy(ds: Dataset, target: Syntax, ratio: float) -> None:
    """Record lossy compression (PS3.3 C.7.6.1.1.5): each compression appends a value."""
    assert target.lossy_method is not None
    ds.LossyImageCompression = "01"
    ratios = [str(r) for r in _values(ds.get("LossyImageCompressionRatio"))]
    methods = [str(m) for m in _values(ds.get("LossyImageCompressionMethod"))]
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*methods, target.lossy_method]


def _values(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, str | int | float):
        return [value]
    return list(cast(Iterable[object], value))


def _swap_words(ds: Dataset, skip: int | None) -> None:
    """Convert OW/OF/OL/OD/OV values read from a big endian data set to little endian.

    pydicom converts every other VR when writing, but leaves these as the bytes read
    (its dcmwrite documentation says so). `skip` is the top-level pixel data element,
    already re-encoded. UN values stay as they are: their structure is unknown.
    """
    for elem in ds:
        if elem.tag == skip:
            continue
        if elem.VR == "SQ":
            items: Sequence = elem.value
            for item in items:
                _swap_words(item, None)
            continue
        size = _WORD_SIZES.get(elem.VR)
        if size and isinstance(elem.value, bytes) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()
