"""Grayscale transformations (PS3.3 C.11, PS3.4 N.2): modality LUT, VOI LUT, presentation.

Stored values pass through the Modality LUT (Rescale Slope and Intercept, or a Modality
LUT Sequence) into modality units (e.g. Hounsfield units), then through the VOI LUT (a
window, or a VOI LUT Sequence) into 0..255, then the presentation: MONOCHROME1 and a
Presentation LUT Shape of INVERSE invert. For data of up to 16 bits allocated the three
are composed into one table indexed by the stored value (65,536 entries at most), so a
frame costs one lookup per pixel; wider integer and float data are computed directly.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from dicomweb.pixels.frameinfo import MONOCHROME1, FrameInfo
from dicomweb.pixels.metadata import Attributes, RenderError

__all__ = [
    "FUNCTIONS",
    "LINEAR",
    "LINEAR_EXACT",
    "PRESETS",
    "SIGMOID",
    "ModalityLut",
    "VoiTable",
    "Window",
    "grey_image",
    "instance_voi",
    "inverted",
    "modality_lut",
    "stored_range",
    "window_for_range",
]

LINEAR: Final = "LINEAR"
LINEAR_EXACT: Final = "LINEAR_EXACT"
SIGMOID: Final = "SIGMOID"
FUNCTIONS: Final = (LINEAR, LINEAR_EXACT, SIGMOID)
_OUT_MAX: Final = 255.0

_RESCALE_SLOPE = "00281053"
_RESCALE_INTERCEPT = "00281052"
_WINDOW_CENTER = "00281050"
_WINDOW_WIDTH = "00281051"
_VOI_LUT_FUNCTION = "00281056"
_MODALITY_LUT_SEQUENCE = "00283000"
_VOI_LUT_SEQUENCE = "00283010"
_LUT_DESCRIPTOR = "00283002"
_LUT_DATA = "00283006"
_PRESENTATION_LUT_SHAPE = "20500020"
_PIXEL_VALUE_TRANSFORMATION = "00289145"
_FRAME_VOI_LUT = "00289132"


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2) in modality units."""

    center: float
    width: float
    function: str = LINEAR

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise RenderError(f"unknown VOI LUT function {self.function!r}: use {FUNCTIONS}")
        if not (np.isfinite(self.center) and np.isfinite(self.width)):
            raise RenderError("window center and width must be finite numbers")
        minimum = 1.0 if self.function == LINEAR else 0.0
        if self.width < minimum or (self.width == 0 and self.function != LINEAR):
            raise RenderError(
                f"window width {self.width:g} is too small for {self.function} "
                f"({'at least 1' if self.function == LINEAR else 'above 0'})"
            )

    def apply(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Modality values to 0..255 (unrounded), by the window's function."""
        c, w = self.center, self.width
        if self.function == SIGMOID:
            return _OUT_MAX / (1.0 + np.exp(-4.0 * (x - c) / w))
        if self.function == LINEAR_EXACT:
            ramp = ((x - c) / w + 0.5) * _OUT_MAX
            return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, _OUT_MAX, ramp))
        # LINEAR: a width of 1 is a threshold; (w - 1) never divides by zero then,
        # since no value lies strictly inside the ramp.
        low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        ramp = ((x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * _OUT_MAX
        return np.where(x <= low, 0.0, np.where(x > high, _OUT_MAX, ramp))


# Windows commonly used to read CT, in Hounsfield units (center, width). They apply to
# the modality values of any image, so on images not in HU they mean little.
PRESETS: Final[Mapping[str, Window]] = MappingProxyType(
    {
        "abdomen": Window(50, 400),
        "angio": Window(300, 600),
        "bone": Window(400, 1800),
        "brain": Window(40, 80),
        "liver": Window(30, 150),
        "lung": Window(-600, 1500),
        "mediastinum": Window(50, 350),
        "soft tissue": Window(40, 400),
        "stroke": Window(40, 40),
        "subdural": Window(75, 215),
        "temporal bone": Window(600, 2800),
    }
)


@dataclass(frozen=True, slots=True)
class LutTable:
    """A LUT of a LUT Descriptor and LUT Data (PS3.3 C.11.1.1): `first` is the stored
    or modality value mapped to the first entry; values beyond either end take the end
    entries."""

    data: bytes  # float64 entries, so that the table is hashable
    first: int
    bits: int

    @property
    def entries(self) -> NDArray[np.float64]:
        return np.frombuffer(self.data, np.float64)

    def lookup(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        entries = self.entries
        index = np.clip(np.floor(x) - self.first, 0, len(entries) - 1).astype(np.intp)
        found: NDArray[np.float64] = entries[index]
        return found


@dataclass(frozen=True, slots=True)
class ModalityLut:
    """Stored values to modality units: a rescale, or a table (PS3.3 C.11.1)."""

    slope: float = 1.0
    intercept: float = 0.0
    table: LutTable | None = None

    def apply(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.table is not None:
            return self.table.lookup(x)
        if self.slope == 1.0 and self.intercept == 0.0:
            return x
        return x * self.slope + self.intercept


@dataclass(frozen=True, slots=True)
class VoiTable:
    """A VOI LUT Sequence item: modality values to 0..2**bits - 1, scaled to 0..255."""

    table: LutTable

    def apply(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        top = float(2**self.table.bits - 1)
        return self.table.lookup(x) * (_OUT_MAX / top)


Voi = Window | VoiTable


def modality_lut(attributes: Attributes, info: FrameInfo) -> ModalityLut:
    """The instance's Modality LUT for the frame; identity when it has none."""
    items = attributes.metadata.get(_MODALITY_LUT_SEQUENCE, {}).get("Value")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return ModalityLut(table=_lut_table(attributes, items[0], info.pixel_representation))
    within = _PIXEL_VALUE_TRANSFORMATION
    return ModalityLut(
        slope=attributes.number(_RESCALE_SLOPE, 1.0, within=within),
        intercept=attributes.number(_RESCALE_INTERCEPT, 0.0, within=within),
    )


def instance_voi(attributes: Attributes) -> Voi | None:
    """The instance's first window (or the frame's, for enhanced images), else its
    first VOI LUT Sequence item, else None."""
    centers = attributes.numbers(_WINDOW_CENTER, within=_FRAME_VOI_LUT)
    widths = attributes.numbers(_WINDOW_WIDTH, within=_FRAME_VOI_LUT)
    if centers and widths:
        macro = attributes.macro(_FRAME_VOI_LUT)
        function = attributes.text(_VOI_LUT_FUNCTION, macro) if macro else ""
        function = function or attributes.text(_VOI_LUT_FUNCTION) or LINEAR
        try:
            return Window(centers[0], widths[0], function.split("\\")[0].upper())
        except RenderError:
            pass  # a window the instance gets wrong is ignored, as if it had none
    items = attributes.metadata.get(_VOI_LUT_SEQUENCE, {}).get("Value")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        # VOI LUT input is in modality units, which may be negative whatever the pixels.
        return VoiTable(_lut_table(attributes, items[0], pixel_representation=1))
    return None


def _lut_table(attributes: Attributes, item: dict[str, Any], pixel_representation: int) -> LutTable:
    entries, first, bits = _descriptor(item)
    if pixel_representation and first >= 2**15:
        first -= 2**16  # the first mapped value is SS when the values are signed
    data = attributes.words(_LUT_DATA, item).astype(np.float64)
    if len(data) < entries:
        raise RenderError(f"a LUT of {entries} entries has {len(data)} values")
    data = data[:entries]
    if bits < 1 or bits > 16 or data.max() >= 2**bits:
        # Some writers declare fewer bits than the entries use; the entries win.
        bits = max(1, int(data.max()).bit_length())
    return LutTable(data.tobytes(), int(first), bits)


def _descriptor(item: dict[str, Any]) -> tuple[int, int, int]:
    attribute = item.get(_LUT_DESCRIPTOR)
    values = attribute.get("Value") if isinstance(attribute, dict) else None
    if not isinstance(values, list) or len(values) != 3:
        raise RenderError("a LUT has no valid LUT Descriptor (0028,3002)")
    try:
        entries, first, bits = (int(v) for v in values)
    except (TypeError, ValueError):
        raise RenderError("a LUT Descriptor (0028,3002) is not three numbers") from None
    return entries or 65536, first, bits


def stored_range(pixels: NDArray[Any]) -> tuple[float, float]:
    """The smallest and largest stored value of a frame (NaN ignored)."""
    if pixels.dtype.kind == "f":
        return float(np.nanmin(pixels)), float(np.nanmax(pixels))
    return float(pixels.min()), float(pixels.max())


def window_for_range(modality: ModalityLut, low: float, high: float, info: FrameInfo) -> Window:
    """A LINEAR_EXACT window over the modality values of stored values low..high:
    for images that carry no window of their own."""
    if info.dtype.kind in "ui" and info.bits_allocated <= 16:
        stored = np.arange(np.floor(low), np.floor(high) + 1, dtype=np.float64)
    else:
        stored = np.array([low, high], dtype=np.float64)
    values = modality.apply(stored)
    lo, hi = float(values.min()), float(values.max())
    return Window((lo + hi) / 2, max(hi - lo, 1.0), LINEAR_EXACT)


def inverted(info: FrameInfo, attributes: Attributes) -> bool:
    """Whether the presentation inverts: MONOCHROME1, or a Presentation LUT Shape of
    INVERSE (PS3.3 C.11.6), which some IODs give for MONOCHROME1 too (no double
    inversion)."""
    shape = attributes.text(_PRESENTATION_LUT_SHAPE).upper()
    return info.photometric_interpretation == MONOCHROME1 or shape == "INVERSE"


def grey_image(
    pixels: NDArray[Any], info: FrameInfo, modality: ModalityLut, voi: Voi, invert: bool
) -> NDArray[np.uint8]:
    """A grayscale frame's stored values to display values 0..255.

    Integer values within Bits Stored (cleared above it, or sign-extended) go through
    a table of the 2**BitsStored values they can take."""
    if pixels.dtype.kind in "ui" and pixels.dtype.itemsize <= 2:
        bits = max(1, min(info.bits_stored, 8 * pixels.dtype.itemsize))
        signed = pixels.dtype.kind == "i"
        table = _table(signed, bits, modality, voi, invert)
        index = pixels.view(pixels.dtype.str.replace("i", "u"))
        if signed and bits < 8 * pixels.dtype.itemsize:
            # Two's complement in `bits` bits: the table's index of a negative value.
            index = index & index.dtype.type((1 << bits) - 1)
        image: NDArray[np.uint8] = table[index]
        return image
    values = pixels.astype(np.float64)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values)
    return _finish(voi.apply(modality.apply(values)), invert)


@functools.lru_cache(maxsize=64)
def _table(
    signed: bool, bits: int, modality: ModalityLut, voi: Voi, invert: bool
) -> NDArray[np.uint8]:
    """The composed LUT of every value `bits` bits hold, indexed by the value's bit
    pattern (so signed values index as two's complement). Built for each new window:
    a 12-bit image's table is a sixteenth of a 16-bit one's."""
    size = 2**bits
    stored = np.arange(size, dtype=np.float64)
    if signed:
        stored[size // 2 :] -= size
    table = _finish(voi.apply(modality.apply(stored)), invert)
    table.setflags(write=False)
    return table


def _finish(values: NDArray[np.float64], invert: bool) -> NDArray[np.uint8]:
    # Round half up: the window functions give exact halves at their centres.
    out = np.floor(np.clip(values, 0.0, _OUT_MAX) + 0.5).astype(np.uint8)
    return np.subtract(255, out, dtype=np.uint8) if invert else out
