"""The transfer syntaxes pixel data can be transcoded between, and the codec behind each.

Decoding always goes through pydicom's pixel decoders and their plugins (pylibjpeg-libjpeg,
pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls, Pillow), so a decoded frame is exactly what
pydicom gives. Encoding uses pydicom's encoders where it has one (RLE, JPEG-LS, JPEG 2000)
and imagecodecs where it has none (JPEG baseline, extended and lossless: libjpeg-turbo;
HTJ2K: OpenJPH).

What each encoder accepts is data (`Accepts`, one per row of the tables in PS3.5 8.2), so
`refusal` can say why a pair of syntax and pixel format is impossible before any pixel is
touched.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from functools import cache
from typing import Any, Final

import imagecodecs
import numpy as np
from numpy.typing import NDArray
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder

from dicomweb.pixels.frameinfo import (
    MONOCHROME1,
    MONOCHROME2,
    PALETTE,
    RGB,
    YBR_FULL,
    YBR_FULL_422,
    YBR_ICT,
    YBR_RCT,
    FrameInfo,
    TranscodeError,
)

__all__ = [
    "ALWAYS_LOSSY",
    "SYNTAXES",
    "Accepts",
    "Kind",
    "Syntax",
    "decode",
    "decoded_info",
    "encode",
    "native_bytes",
    "native_order",
    "refusal",
]

Pixels = NDArray[Any]


# --- What each encoder accepts ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepts:
    """One pixel format an encoder takes (a row of a PS3.5 8.2 table) and its result.

    ``bits`` pairs each allowed Bits Allocated with the largest Bits Stored for it.
    """

    photometric: frozenset[str]
    samples: int
    signed: bool
    bits: tuple[tuple[int, int], ...]
    output: str | None = None  # the Photometric Interpretation after encoding; None: same
    min_bits_stored: int = 1

    def matches(self, info: FrameInfo) -> bool:
        """Whether `info` is a format this row takes."""
        return (
            info.photometric_interpretation in self.photometric
            and info.samples_per_pixel == self.samples
            and (self.signed or info.pixel_representation == 0)
            and any(
                info.bits_allocated == allocated
                and self.min_bits_stored <= info.bits_stored <= most
                for allocated, most in self.bits
            )
        )

    def output_for(self, info: FrameInfo) -> str:
        """The Photometric Interpretation of `info`'s pixels once encoded."""
        return self.output or info.photometric_interpretation


_MONO: Final = frozenset({MONOCHROME1, MONOCHROME2})
_BYTE_OR_WORD: Final = ((8, 8), (16, 16))


def _rows(*accepts: Accepts) -> tuple[Accepts, ...]:
    return accepts


# PS3.5 Table 8.2.2-1 (RLE).
_RLE_ACCEPTS: Final = _rows(
    Accepts(_MONO, 1, True, _BYTE_OR_WORD),
    Accepts(frozenset({PALETTE}), 1, False, _BYTE_OR_WORD),
    Accepts(frozenset({RGB}), 3, False, _BYTE_OR_WORD),
    Accepts(frozenset({YBR_FULL}), 3, False, ((8, 8),)),
)
# PS3.5 Table 8.2.1-1 (lossy JPEG): colour is encoded as YCbCr with 4:2:2 subsampling.
_JPEG_BASELINE_ACCEPTS: Final = _rows(
    Accepts(_MONO, 1, False, ((8, 8),)),
    Accepts(frozenset({RGB, YBR_FULL}), 3, False, ((8, 8),), output=YBR_FULL_422),
)
_JPEG_EXTENDED_ACCEPTS: Final = _rows(Accepts(_MONO, 1, False, ((8, 8), (16, 12))))
# PS3.5 Table 8.2.1-2 (lossless JPEG). Not YBR_FULL: libjpeg-turbo's lossless mode does
# not return YCbCr samples unchanged, so such data is converted to RGB first.
_JPEG_LOSSLESS_ACCEPTS: Final = _rows(
    Accepts(_MONO, 1, True, _BYTE_OR_WORD),
    Accepts(frozenset({PALETTE}), 1, False, _BYTE_OR_WORD),
    Accepts(frozenset({RGB}), 3, False, _BYTE_OR_WORD),
)
# PS3.5 Table 8.2.3-1 (JPEG-LS): at least 2 bits per sample.
_JPEG_LS_ACCEPTS: Final = _rows(
    Accepts(_MONO, 1, True, _BYTE_OR_WORD, min_bits_stored=2),
    Accepts(frozenset({PALETTE}), 1, False, _BYTE_OR_WORD, min_bits_stored=2),
    Accepts(frozenset({RGB}), 3, False, _BYTE_OR_WORD, min_bits_stored=2),
    Accepts(frozenset({YBR_FULL}), 3, False, ((8, 8),), min_bits_stored=2),
)
# Near-lossless changes values, which makes no sense for palette indices.
_JPEG_LS_NEAR_ACCEPTS: Final = tuple(a for a in _JPEG_LS_ACCEPTS if PALETTE not in a.photometric)
# PS3.5 Table 8.2.4-1 (JPEG 2000; HTJ2K follows the same rules): RGB is encoded with the
# multi-component transform, reversible for lossless (YBR_RCT) or not (YBR_ICT). The
# table allows up to 38 bits, but the openjpeg encoder failed on every 32-bit container
# tried, and openjpeg cannot read OpenJPH's 32-bit codestreams.
_J2K_LOSSLESS_ACCEPTS: Final = _rows(
    Accepts(_MONO, 1, True, _BYTE_OR_WORD),
    Accepts(frozenset({PALETTE}), 1, False, _BYTE_OR_WORD),
    Accepts(frozenset({RGB}), 3, False, _BYTE_OR_WORD, output=YBR_RCT),
    Accepts(frozenset({YBR_FULL}), 3, False, _BYTE_OR_WORD),
)
_J2K_LOSSY_ACCEPTS: Final = _rows(
    Accepts(_MONO, 1, True, _BYTE_OR_WORD),
    Accepts(frozenset({RGB}), 3, False, _BYTE_OR_WORD, output=YBR_ICT),
    Accepts(frozenset({YBR_FULL}), 3, False, _BYTE_OR_WORD),
)


# --- Encoders ------------------------------------------------------------------------------

EncodeFunction = Callable[[Pixels, FrameInfo, str], tuple[bytes, FrameInfo]]
"""(pixels fitted to the FrameInfo, their FrameInfo, output Photometric Interpretation)
-> (codestream, FrameInfo of the encoded frame)."""

# Lossy settings. The transfer syntax is all a DICOMweb client can ask for, so these are
# fixed, and chosen to stay close to the source: errors of a few grey levels.
JPEG_QUALITY: Final = 90
JPEG_LS_NEAR: Final = 2  # JPEG-LS near-lossless: no sample moves by more than this
J2K_COMPRESSION_RATIO: Final = 10
# HTJ2K has no rate control: the quantisation step is set instead. It is half a grey
# level of the frame's value range mapped onto 8 bits (a range of 12 bits: a step of 8),
# which gave about 10:1 on MR and 4:1 on ultrasound with errors of a few grey levels.
# The range and not Bits Stored: CT often declares 16 bits and uses 12.
HTJ2K_STEP_IN_8BIT_LEVELS: Final = 0.5
# PS3.5 10.18: the RPCL form needs enough decompositions for the lowest resolution to be
# at most 64 pixels wide or high; OpenJPH's default is 5.
_HTJ2K_MIN_DECOMPOSITIONS: Final = 5
_HTJ2K_BASE_SIZE: Final = 64


def _encoded(info: FrameInfo, photometric: str, bits_stored: int | None = None) -> FrameInfo:
    """`info` once encoded: colour may change, samples are by pixel (PS3.5 G.2 note 2)."""
    return replace(
        info,
        photometric_interpretation=photometric,
        planar_configuration=0,
        bits_stored=info.bits_stored if bits_stored is None else bits_stored,
    )


# pylibjpeg-openjpeg 2.6's encoder crashes the process (SIGSEGV) when two threads
# encode at once: JPEG 2000 encoding is serialised, everything else stays parallel.
_OPENJPEG_ENCODER = threading.Lock()


def _pydicom_encoder(
    syntax_uid: str, plugin: str = "", *, whole_container: bool = False, **options: Any
) -> EncodeFunction:
    """An encoder that hands the frame to pydicom's encoder for `syntax_uid`.

    pydicom passes samples to its plugins in the smallest type that holds Bits Stored;
    RLE segments follow Bits Allocated, so for RLE (`whole_container`) pydicom is told
    that every allocated bit is stored. Values are unchanged and RLE does not record it.
    """

    def encode(pixels: Pixels, info: FrameInfo, photometric: str) -> tuple[bytes, FrameInfo]:
        encoder = get_encoder(syntax_uid)
        extra = dict(options)
        if syntax_uid in _J2K_UIDS:
            # openjpeg applies the colour transform to any 3 samples unless told not to;
            # PS3.5 8.2.4 ties it to YBR_RCT / YBR_ICT.
            extra["use_mct"] = photometric in (YBR_RCT, YBR_ICT)
        with _OPENJPEG_ENCODER if syntax_uid in _J2K_UIDS else contextlib.nullcontext():
            data = encoder.encode(
                pixels,
                encoding_plugin=plugin if plugin in encoder.available_plugins else "",
                rows=info.rows,
                columns=info.columns,
                samples_per_pixel=info.samples_per_pixel,
                bits_allocated=info.bits_allocated,
                bits_stored=info.bits_allocated if whole_container else info.bits_stored,
                pixel_representation=info.pixel_representation,
                photometric_interpretation=photometric,
                planar_configuration=0,
                number_of_frames=1,
                **extra,
            )
        return bytes(data), _encoded(info, photometric)

    return encode


def _jpeg_precision(info: FrameInfo) -> int:
    """The JPEG sample precision P for lossless JPEG of `info`'s samples.

    P follows Bits Stored, so that the codestream agrees with the data set (PS3.5 8.2.1),
    but pydicom's libjpeg plugin sizes its output by P, so 16-bit containers need P > 8.
    libjpeg-turbo takes 2 to 16 bits.
    """
    return max(info.bits_stored, 2 if info.bits_allocated == 8 else 9)


def _as_unsigned(pixels: Pixels, precision: int) -> Pixels:
    """Samples as the unsigned `precision`-bit codes JPEG stores (two's complement)."""
    unsigned = pixels.view(f"u{pixels.dtype.itemsize}")
    if precision < unsigned.dtype.itemsize * 8:
        unsigned = unsigned & unsigned.dtype.type((1 << precision) - 1)
    return unsigned


def _encode_jpeg_lossless(
    pixels: Pixels, info: FrameInfo, photometric: str
) -> tuple[bytes, FrameInfo]:
    precision = _jpeg_precision(info)
    # Selection value 1 for both lossless syntaxes: it is the one predictor every
    # lossless JPEG decoder must support (PS3.5 8.2.1), and .57 allows any. RGB is
    # stored as RGB (an Adobe marker and component IDs "R", "G", "B" say so).
    data = imagecodecs.jpeg8_encode(
        _as_unsigned(pixels, precision), lossless=True, predictor=1, bitspersample=precision
    )
    return bytes(data), _encoded(info, photometric, precision)


def _encode_jpeg_lossy(
    pixels: Pixels, info: FrameInfo, photometric: str
) -> tuple[bytes, FrameInfo]:
    precision = 8 if info.bits_allocated == 8 else 12
    if info.samples_per_pixel == 3:
        source = "YCbCr" if info.photometric_interpretation == YBR_FULL else "RGB"
        data = imagecodecs.jpeg8_encode(
            pixels,
            level=JPEG_QUALITY,
            colorspace=source,
            outcolorspace="YCbCr",
            subsampling="422",
        )
    else:
        data = imagecodecs.jpeg8_encode(pixels, level=JPEG_QUALITY, bitspersample=precision)
    return bytes(data), _encoded(info, photometric, precision)


def _htj2k_container(pixels: Pixels, info: FrameInfo) -> Pixels:
    """Samples in the smallest integer type that holds Bits Stored.

    OpenJPH writes the container size as the codestream precision, and pydicom sizes a
    decoded frame by that precision.
    """
    size = 1 if info.bits_stored <= 8 else 2
    return pixels.astype(f"{'ui'[info.pixel_representation]}{size}", copy=False)


def _htj2k_step(container: Pixels) -> float:
    """The quantisation step for lossy HTJ2K, relative to the container's range."""
    value_range = int(container.max()) - int(container.min())
    bits = max(8, value_range.bit_length())
    step = HTJ2K_STEP_IN_8BIT_LEVELS * 2.0 ** (bits - 8)
    return step / 2.0 ** (container.dtype.itemsize * 8)


def _htj2k_decompositions(info: FrameInfo) -> int:
    largest = max(info.rows, info.columns)
    return max(_HTJ2K_MIN_DECOMPOSITIONS, math.ceil(math.log2(largest / _HTJ2K_BASE_SIZE)))


def _htj2k_encoder(*, rpcl: bool = False, lossy: bool = False) -> EncodeFunction:
    def encode(pixels: Pixels, info: FrameInfo, photometric: str) -> tuple[bytes, FrameInfo]:
        container = _htj2k_container(pixels, info)
        options: dict[str, Any] = {
            "rgb": photometric in (YBR_RCT, YBR_ICT),
            "reversible": not lossy,
            "resolutions": _htj2k_decompositions(info),
        }
        if lossy:
            options["level"] = _htj2k_step(container)
        if rpcl:
            # OpenJPH's progression order is RPCL already; PS3.5 10.18 adds TLM markers,
            # and tile-parts per resolution make those markers point at each resolution.
            options["tlm"] = True
            options["tilepart"] = imagecodecs.HTJ2K.TILEPART.RESOLUTIONS
        data = imagecodecs.htj2k_encode(container, **options)
        return bytes(data), _encoded(info, photometric)

    return encode


# --- The table -----------------------------------------------------------------------------


class Kind(Enum):
    """How a transfer syntax stores pixel data."""

    NATIVE = "native"  # little endian samples; the data set may be deflated as a whole
    BIG_ENDIAN = "big endian"  # retired (PS3.5 A.3): decoded, never produced
    ENCAPSULATED = "encapsulated"  # one compressed codestream per frame


@dataclass(frozen=True, slots=True)
class Syntax:
    """One transfer syntax: its encoding, and the encoder that produces it (if any)."""

    uid: str
    name: str
    kind: Kind
    accepts: tuple[Accepts, ...] = ()
    encoder: EncodeFunction | None = None
    lossy_method: str | None = None  # PS3.3 C.7.6.1.1.5.1 value when encoding is lossy
    available: Callable[[], bool] = lambda: True
    # pydicom's decoding plugin to prefer, when a faster one gives the same samples.
    decoding_plugin: str = ""
    min_size: int = 1  # the smallest number of rows and of columns the encoder takes

    def decoding_options(self) -> dict[str, Any]:
        """Keyword options for pydicom's decoder: the preferred plugin, if installed."""
        decoder = get_decoder(self.uid)
        if self.decoding_plugin in decoder.available_plugins:
            return {"decoding_plugin": self.decoding_plugin}
        return {}

    @property
    def is_lossy(self) -> bool:
        """Whether encoding to this syntax loses information."""
        return self.lossy_method is not None


IMPLICIT_VR_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1"
DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE: Final = "1.2.840.10008.1.2.2"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED: Final = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS: Final = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1: Final = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
J2K: Final = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
HTJ2K: Final = "1.2.840.10008.1.2.4.203"
_J2K_UIDS: Final = frozenset({J2K_LOSSLESS, J2K})
# pylibjpeg-openjpeg always makes 5 wavelet decompositions, which need 2**5 pixels.
_OPENJPEG_MIN_SIZE: Final = 32
ALWAYS_LOSSY: Final = frozenset({JPEG_BASELINE, JPEG_EXTENDED})
"""Syntaxes whose data is lossy whatever the encoder did (DCT quantisation)."""


def _pydicom_can_encode(syntax_uid: str, plugin: str = "") -> Callable[[], bool]:
    @cache
    def available() -> bool:
        encoder = get_encoder(syntax_uid)
        return bool(encoder.is_available) and (not plugin or plugin in encoder.available_plugins)

    return available


def _jpeg8_available() -> bool:
    return bool(imagecodecs.JPEG8.available)


def _htj2k_available() -> bool:
    return bool(imagecodecs.HTJ2K.available)


_ALL_SYNTAXES: Final = (
    Syntax(IMPLICIT_VR_LE, "Implicit VR Little Endian", Kind.NATIVE),
    Syntax(EXPLICIT_VR_LE, "Explicit VR Little Endian", Kind.NATIVE),
    Syntax(DEFLATED_LE, "Deflated Explicit VR Little Endian", Kind.NATIVE),
    Syntax(EXPLICIT_VR_BE, "Explicit VR Big Endian (retired)", Kind.BIG_ENDIAN),
    Syntax(
        RLE_LOSSLESS,
        "RLE Lossless",
        Kind.ENCAPSULATED,
        _RLE_ACCEPTS,
        # pylibjpeg-rle: pydicom's pure Python RLE encoder is ten times slower.
        _pydicom_encoder(RLE_LOSSLESS, "pylibjpeg", whole_container=True),
        available=_pydicom_can_encode(RLE_LOSSLESS, "pylibjpeg"),
    ),
    Syntax(
        JPEG_BASELINE,
        "JPEG Baseline (Process 1)",
        Kind.ENCAPSULATED,
        _JPEG_BASELINE_ACCEPTS,
        _encode_jpeg_lossy,
        "ISO_10918_1",
        _jpeg8_available,
    ),
    Syntax(
        JPEG_EXTENDED,
        "JPEG Extended (Process 2 & 4)",
        Kind.ENCAPSULATED,
        _JPEG_EXTENDED_ACCEPTS,
        _encode_jpeg_lossy,
        "ISO_10918_1",
        _jpeg8_available,
    ),
    Syntax(
        JPEG_LOSSLESS,
        "JPEG Lossless (Process 14)",
        Kind.ENCAPSULATED,
        _JPEG_LOSSLESS_ACCEPTS,
        _encode_jpeg_lossless,
        available=_jpeg8_available,
    ),
    Syntax(
        JPEG_LOSSLESS_SV1,
        "JPEG Lossless (Process 14, Selection Value 1)",
        Kind.ENCAPSULATED,
        _JPEG_LOSSLESS_ACCEPTS,
        _encode_jpeg_lossless,
        available=_jpeg8_available,
    ),
    Syntax(
        JPEG_LS_LOSSLESS,
        "JPEG-LS Lossless",
        Kind.ENCAPSULATED,
        _JPEG_LS_ACCEPTS,
        _pydicom_encoder(JPEG_LS_LOSSLESS),
        available=_pydicom_can_encode(JPEG_LS_LOSSLESS),
        # JPEG-LS decoding is exact by definition, and CharLS (pyjpegls) decodes a
        # 512 x 512 16-bit frame in 4 ms where libjpeg takes 13 ms.
        decoding_plugin="pyjpegls",
    ),
    Syntax(
        JPEG_LS_NEAR_LOSSLESS,
        "JPEG-LS Near-Lossless",
        Kind.ENCAPSULATED,
        _JPEG_LS_NEAR_ACCEPTS,
        _pydicom_encoder(JPEG_LS_NEAR_LOSSLESS, jls_error=JPEG_LS_NEAR),
        "ISO_14495_1",
        _pydicom_can_encode(JPEG_LS_NEAR_LOSSLESS),
        decoding_plugin="pyjpegls",
    ),
    Syntax(
        J2K_LOSSLESS,
        "JPEG 2000 Lossless",
        Kind.ENCAPSULATED,
        _J2K_LOSSLESS_ACCEPTS,
        _pydicom_encoder(J2K_LOSSLESS),
        available=_pydicom_can_encode(J2K_LOSSLESS),
        min_size=_OPENJPEG_MIN_SIZE,
    ),
    Syntax(
        J2K,
        "JPEG 2000",
        Kind.ENCAPSULATED,
        _J2K_LOSSY_ACCEPTS,
        _pydicom_encoder(J2K, j2k_cr=[J2K_COMPRESSION_RATIO]),
        "ISO_15444_1",
        _pydicom_can_encode(J2K),
        min_size=_OPENJPEG_MIN_SIZE,
    ),
    Syntax(
        HTJ2K_LOSSLESS,
        "HTJ2K Lossless",
        Kind.ENCAPSULATED,
        _J2K_LOSSLESS_ACCEPTS,
        _htj2k_encoder(),
        available=_htj2k_available,
    ),
    Syntax(
        HTJ2K_LOSSLESS_RPCL,
        "HTJ2K Lossless RPCL",
        Kind.ENCAPSULATED,
        _J2K_LOSSLESS_ACCEPTS,
        _htj2k_encoder(rpcl=True),
        available=_htj2k_available,
    ),
    Syntax(
        HTJ2K,
        "HTJ2K",
        Kind.ENCAPSULATED,
        _J2K_LOSSY_ACCEPTS,
        _htj2k_encoder(lossy=True),
        "ISO_15444_15",
        _htj2k_available,
    ),
)

SYNTAXES: Final[dict[str, Syntax]] = {s.uid: s for s in _ALL_SYNTAXES}
"""Every transfer syntax this module knows, by UID."""


# --- Decoding and encoding -------------------------------------------------------------------


def refusal(syntax: Syntax, info: FrameInfo) -> str | None:
    """Why frames described by `info` cannot be encoded as `syntax`, or None if they can."""
    if syntax.kind is Kind.BIG_ENDIAN:
        return f"{syntax.name} is retired and only read, never written"
    if not syntax.available():
        return f"no encoder for {syntax.name} is installed"
    if syntax.kind is Kind.NATIVE:
        return None
    if info.is_float:
        return f"{info.pixel_keyword} can only be stored in a native transfer syntax"
    if min(info.rows, info.columns) < syntax.min_size:
        size = syntax.min_size
        return f"the {syntax.name} encoder needs at least {size} rows and {size} columns"
    if not any(row.matches(info) for row in syntax.accepts):
        return (
            f"{syntax.name} cannot encode {info.photometric_interpretation} pixels with "
            f"{info.samples_per_pixel} sample(s), {info.bits_allocated} bits allocated, "
            f"{info.bits_stored} bits stored and pixel representation "
            f"{info.pixel_representation} (PS3.5 8.2)"
        )
    return None


def decode(
    data: bytes, syntax: Syntax, info: FrameInfo, *, as_rgb: bool
) -> tuple[Pixels, FrameInfo]:
    """One frame's stored bytes as pixels, and the FrameInfo that describes them.

    With `as_rgb`, YBR_FULL and YBR_FULL_422 pixels are converted to RGB as pydicom does
    by default; without it they stay YBR_FULL (never subsampled: 4:2:2 is expanded).
    """
    try:
        decoder = get_decoder(syntax.uid)
    except NotImplementedError:
        raise TranscodeError(f"no decoder for {syntax.name}") from None
    if not decoder.is_available:
        raise TranscodeError(f"no decoder for {syntax.name} is installed")
    if syntax.kind is Kind.ENCAPSULATED:
        if info.is_float:
            raise TranscodeError(f"{info.pixel_keyword} cannot be encapsulated")
        source = encapsulate([bytes(data)], has_bot=False)
    else:
        # Trimmed to one frame: trailing padding would make pydicom warn about excess data.
        length = info.native_frame_length
        if len(data) < length:
            raise TranscodeError(f"a native frame needs {length} bytes, got {len(data)}")
        source = bytes(data[:length])
    try:
        # validate=False: `info` is already checked, and pydicom's buffer checks only warn.
        options = {**info.decode_options(), **syntax.decoding_options(), "as_rgb": as_rgb}
        pixels, properties = decoder.as_array(source, validate=False, **options)
    except Exception as exc:
        # Codec plugins report bad data with many exception types; all mean the same here.
        raise TranscodeError(f"the {syntax.name} frame cannot be decoded: {exc}") from exc
    return native_order(pixels), decoded_info(info, properties)


def decoded_info(info: FrameInfo, properties: dict[str, Any]) -> FrameInfo:
    """`info` after pydicom decoded its pixels and reported `properties` for them."""
    photometric = str(properties.get("photometric_interpretation", info.photometric_interpretation))
    if photometric == YBR_FULL_422:
        # pydicom reports 4:2:2 JPEG as YBR_FULL_422 even though it returns every sample.
        photometric = YBR_FULL
    return replace(info, photometric_interpretation=photometric, planar_configuration=0)


def native_order(pixels: Pixels) -> Pixels:
    """`pixels` in the machine's byte order (big endian data sets give '>' arrays)."""
    if pixels.dtype.isnative:
        return pixels
    return pixels.astype(pixels.dtype.newbyteorder("="))


def _fit(pixels: Pixels, info: FrameInfo) -> Pixels:
    """`pixels` checked against `info` and converted to its sample type.

    Decoders may return a smaller type than Bits Allocated asks for (pydicom sizes
    JPEG 2000 output by the codestream precision); values are kept.
    """
    array = np.asarray(pixels)
    if array.shape != info.frame_shape:
        raise TranscodeError(f"pixels of shape {array.shape} are not a {info.frame_shape} frame")
    if array.dtype.kind not in "uif" or (array.dtype.kind == "f") != info.is_float:
        raise TranscodeError(f"pixels of type {array.dtype} do not fit {info.pixel_keyword}")
    return array.astype(info.dtype, copy=False)


def _within_bits_stored(pixels: Pixels, info: FrameInfo) -> Pixels:
    """Samples with the bits above Bits Stored cleared, or sign-extended if signed.

    Those bits carry no pixel value (PS3.5 8.1.1), and the encoders refuse or mangle
    values that do not fit Bits Stored.
    """
    unused = info.bits_allocated - info.bits_stored
    if unused == 0:
        return pixels
    fitted: Pixels
    if info.pixel_representation:
        # An arithmetic right shift after the left shift copies the sign bit down.
        fitted = (pixels << unused) >> unused
    else:
        fitted = pixels & pixels.dtype.type((1 << info.bits_stored) - 1)
    return fitted


def native_bytes(pixels: Pixels, info: FrameInfo) -> bytes:
    """Pixels of one or more frames (frames first) as native little endian bytes."""
    if info.bits_allocated == 1:
        return np.packbits(pixels.astype(np.uint8, copy=False) & 1, bitorder="little").tobytes()
    return pixels.astype(info.dtype.newbyteorder("<"), copy=False).tobytes()


def encode(pixels: Pixels, syntax: Syntax, info: FrameInfo) -> tuple[bytes, FrameInfo]:
    """One frame of pixels described by `info`, encoded as `syntax`."""
    reason = refusal(syntax, info)
    if reason:
        raise TranscodeError(reason)
    frame = _fit(pixels, info)
    if syntax.kind is Kind.NATIVE:
        return native_bytes(frame, info), replace(info, planar_configuration=0)
    row = next(row for row in syntax.accepts if row.matches(info))
    assert syntax.encoder is not None
    try:
        return syntax.encoder(
            np.ascontiguousarray(_within_bits_stored(frame, info)), info, row.output_for(info)
        )
    except TranscodeError:
        raise
    except Exception as exc:
        # pydicom wraps plugin failures in RuntimeError, pydicom's checks raise ValueError,
        # imagecodecs raises its own errors: to the caller, all mean the frame cannot be
        # encoded so.
        raise TranscodeError(f"the frame cannot be encoded as {syntax.name}: {exc}") from exc
