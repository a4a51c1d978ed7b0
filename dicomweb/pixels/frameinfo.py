"""FrameInfo: the Image Pixel attributes that describe an instance's frames.

Shared by the codec table (`codecs`) and the transcoding API (`transcode`), which
re-exports it with TranscodeError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from pydicom import Dataset

__all__ = [
    "MONOCHROME1",
    "MONOCHROME2",
    "PALETTE",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "FrameInfo",
    "TranscodeError",
]


class TranscodeError(ValueError):
    """No codec can turn these pixels into, or out of, the requested transfer syntax.

    Raised for unknown transfer syntaxes, pixel formats a syntax cannot carry (JPEG
    baseline of 16-bit data, any compressed syntax of float pixel data) and data that
    fails to decode. The HTTP layer answers it with 406 (or 400 for a bad frame).
    """


_PIXEL_KEYWORDS: Final = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FLOAT_BITS: Final = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}
_JSON_PIXEL_TAGS: Final = {"7FE00008": "FloatPixelData", "7FE00009": "DoubleFloatPixelData"}

MONOCHROME1: Final = "MONOCHROME1"
MONOCHROME2: Final = "MONOCHROME2"
PALETTE: Final = "PALETTE COLOR"
RGB: Final = "RGB"
YBR_FULL: Final = "YBR_FULL"
YBR_FULL_422: Final = "YBR_FULL_422"
YBR_RCT: Final = "YBR_RCT"
YBR_ICT: Final = "YBR_ICT"


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """The Image Pixel attributes (PS3.3 C.7.6.3) that describe one instance's frames.

    ``pixel_keyword`` tells integer Pixel Data from Float and Double Float Pixel Data,
    which only native transfer syntaxes can carry.
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int
    pixel_keyword: str = "PixelData"

    def __post_init__(self) -> None:
        problem = _info_problem(self)
        if problem:
            raise TranscodeError(problem)

    @classmethod
    def from_json(cls, metadata: dict[str, Any]) -> FrameInfo:
        """The frame description in an instance's DICOM JSON model (PS3.18 F.2)."""
        keyword = next((k for t, k in _JSON_PIXEL_TAGS.items() if t in metadata), "PixelData")
        bits_allocated = _json_int(metadata, "00280100", _FLOAT_BITS.get(keyword))
        return cls(
            rows=_json_int(metadata, "00280010"),
            columns=_json_int(metadata, "00280011"),
            samples_per_pixel=_json_int(metadata, "00280002", 1),
            bits_allocated=bits_allocated,
            bits_stored=_json_int(metadata, "00280101", bits_allocated),
            pixel_representation=_json_int(metadata, "00280103", 0),
            photometric_interpretation=_json_text(metadata, "00280004"),
            planar_configuration=_json_int(metadata, "00280006", 0),
            number_of_frames=_json_int(metadata, "00280008", 1) or 1,
            pixel_keyword=keyword,
        )

    @classmethod
    def from_dataset(cls, ds: Dataset) -> FrameInfo:
        """The frame description in a pydicom data set (its top-level attributes)."""
        keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), "PixelData")
        bits_allocated = _ds_int(ds, "BitsAllocated", _FLOAT_BITS.get(keyword))
        photometric = ds.get("PhotometricInterpretation")
        if not photometric:
            raise TranscodeError("the data set has no Photometric Interpretation")
        return cls(
            rows=_ds_int(ds, "Rows"),
            columns=_ds_int(ds, "Columns"),
            samples_per_pixel=_ds_int(ds, "SamplesPerPixel", 1),
            bits_allocated=bits_allocated,
            bits_stored=_ds_int(ds, "BitsStored", bits_allocated),
            pixel_representation=_ds_int(ds, "PixelRepresentation", 0),
            photometric_interpretation=str(photometric).strip(),
            planar_configuration=_ds_int(ds, "PlanarConfiguration", 0),
            number_of_frames=_ds_int(ds, "NumberOfFrames", 1) or 1,
            pixel_keyword=keyword,
        )

    @property
    def is_float(self) -> bool:
        """Float or Double Float Pixel Data."""
        return self.pixel_keyword != "PixelData"

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy type of one sample, as pydicom gives it (1-bit data: uint8)."""
        if self.is_float:
            return np.dtype(f"f{self.bits_allocated // 8}")
        if self.bits_allocated == 1:
            return np.dtype("u1")
        return np.dtype(f"{'ui'[self.pixel_representation]}{self.bits_allocated // 8}")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one decoded frame."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def native_frame_length(self) -> int:
        """Bytes of one frame in a native transfer syntax (1-bit frames rounded up)."""
        pixels = self.rows * self.columns
        if self.bits_allocated == 1:
            return math.ceil(pixels * self.samples_per_pixel / 8)
        # YBR_FULL_422 native data holds two luminance samples per chrominance pair.
        samples = 2 if self.photometric_interpretation == YBR_FULL_422 else self.samples_per_pixel
        return pixels * samples * self.bits_allocated // 8

    def decode_options(self) -> dict[str, Any]:
        """The keyword options pydicom's decoders need for a buffer of this data."""
        options: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "photometric_interpretation": self.photometric_interpretation,
            "number_of_frames": 1,
            "pixel_keyword": self.pixel_keyword,
        }
        if self.samples_per_pixel > 1:
            options["planar_configuration"] = self.planar_configuration
        if not self.is_float:
            options["bits_stored"] = self.bits_stored
            options["pixel_representation"] = self.pixel_representation
        return options


def _info_problem(info: FrameInfo) -> str | None:
    """Why `info` describes no valid image, or None."""
    if info.pixel_keyword not in _PIXEL_KEYWORDS:
        return f"unknown pixel data keyword {info.pixel_keyword!r}"
    if info.rows < 1 or info.columns < 1:
        return f"an image of {info.rows} x {info.columns} pixels has no pixels"
    if info.samples_per_pixel not in (1, 3):
        return f"Samples per Pixel {info.samples_per_pixel} is not supported (1 or 3)"
    allowed_bits = (32, 64) if info.is_float else (1, 8, 16, 32, 64)
    if info.bits_allocated not in allowed_bits:
        return f"Bits Allocated {info.bits_allocated} is not supported for {info.pixel_keyword}"
    if not 1 <= info.bits_stored <= info.bits_allocated:
        return f"Bits Stored {info.bits_stored} does not fit Bits Allocated {info.bits_allocated}"
    if info.pixel_representation not in (0, 1):
        return f"Pixel Representation {info.pixel_representation} is neither 0 nor 1"
    if info.planar_configuration not in (0, 1):
        return f"Planar Configuration {info.planar_configuration} is neither 0 nor 1"
    if info.number_of_frames < 1:
        return f"Number of Frames {info.number_of_frames} is not positive"
    return None


def _json_value(metadata: dict[str, Any], tag: str) -> object:
    attribute = metadata.get(tag)
    if not isinstance(attribute, dict):
        return None
    values = attribute.get("Value")
    return values[0] if isinstance(values, list) and values else None


def _json_int(metadata: dict[str, Any], tag: str, default: int | None = None) -> int:
    value = _json_value(metadata, tag)
    if value is None:
        if default is None:
            raise TranscodeError(f"the metadata has no ({tag[:4]},{tag[4:]}) value")
        return default
    # IS values arrive as JSON numbers or, from some servers, as strings.
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    raise TranscodeError(f"({tag[:4]},{tag[4:]}) {value!r} is not an integer")


def _json_text(metadata: dict[str, Any], tag: str) -> str:
    value = _json_value(metadata, tag)
    if not isinstance(value, str) or not value.strip():
        raise TranscodeError(f"the metadata has no ({tag[:4]},{tag[4:]}) value")
    return value.strip()


def _ds_int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise TranscodeError(f"the data set has no {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TranscodeError(f"{keyword} {value!r} is not an integer") from None
