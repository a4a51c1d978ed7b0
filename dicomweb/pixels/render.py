"""Rendering: decoded frames to 8-bit images, and their encoding as JPEG, PNG or GIF.

The order is that of PS3.4 N.2 and PS3.18 8.3.5: the pixel transformations (grayscale:
modality LUT, VOI LUT, presentation, see `lut`; colour: palette or RGB), overlays, then
the source region and the viewport (scaling and flips), then annotations.

Frames come from `transcode.decode_frame`, which (through pydicom) already converts
YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT and JPEG YBR data to RGB, interleaves planar
data, and sign-extends or masks samples to Bits Stored. Rendering masks again, so that
pixels from elsewhere cannot index past the lookup tables.

Everything here is CPU work for a worker thread; nothing imports Starlette.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from dicomweb.pixels.annotation import annotate, annotation_lines
from dicomweb.pixels.codestream import declared_size
from dicomweb.pixels.frameinfo import PALETTE, FrameInfo
from dicomweb.pixels.lut import (
    LINEAR,
    VoiTable,
    Window,
    grey_image,
    instance_voi,
    inverted,
    modality_lut,
    stored_range,
    window_for_range,
)
from dicomweb.pixels.metadata import Attributes, RenderError, is_overlay_data
from dicomweb.pixels.transcode import decode_frame

__all__ = [
    "DEFAULT_QUALITY",
    "GIF",
    "JPEG",
    "MEDIA_TYPES",
    "PNG",
    "RenderError",
    "Viewport",
    "decode_stored_frame",
    "encode_animation",
    "encode_image",
    "render_frame",
    "render_stored_frame",
    "resolve_voi",
]

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
GIF: Final = "image/gif"
MEDIA_TYPES: Final = (JPEG, PNG, GIF)
DEFAULT_QUALITY: Final = 90
# PNG level 1 is four times faster than the default 6 for a few percent more bytes.
PNG_COMPRESS_LEVEL: Final = 1
# No side of a rendered image may exceed this, whatever the parameters say.
MAX_OUTPUT_SIDE: Final = 16384

Voi = Window | VoiTable


@dataclass(frozen=True, slots=True)
class Viewport:
    """The `viewport` parameter (PS3.18 8.3.5.1.3): `width` x `height` pixels (vw, vh)
    showing the source region from (sx, sy), sw columns wide and sh rows high, in pixels
    of the frame. sw and sh default to the rest of the frame; a negative sw (sh) flips
    the region, |sw| columns (|sh| rows) from sx (sy), horizontally (vertically).
    The region is scaled to fit the viewport with its aspect ratio kept, so one side of
    the result may be shorter than the viewport's."""

    width: int
    height: int
    sx: float = 0.0
    sy: float = 0.0
    sw: float | None = None
    sh: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.width <= MAX_OUTPUT_SIDE and 0 < self.height <= MAX_OUTPUT_SIDE):
            raise RenderError(
                f"a viewport of {self.width} x {self.height} is outside 1..{MAX_OUTPUT_SIDE}"
            )
        if self.sx < 0 or self.sy < 0:
            raise RenderError("the viewport's sx and sy must not be negative")


def render_frame(
    pixels: NDArray[Any],
    info: FrameInfo,
    metadata: dict[str, Any],
    *,
    window: tuple[float, float] | Window | VoiTable | None = None,
    rows: int | None = None,
    columns: int | None = None,
    function: str | None = None,
    viewport: Viewport | None = None,
    region: tuple[float, float, float, float] | None = None,
    overlays: bool = False,
    annotation: Sequence[str] = (),
    frame_number: int = 1,
    bulk: Mapping[str, bytes] | None = None,
    byteorder: str = "<",
) -> NDArray[np.uint8]:
    """One decoded frame as an 8-bit image: (rows, columns) grey or (rows, columns, 3) RGB.

    `pixels` is a frame as `decode_frame` gives it; `info` and `metadata` (DICOM JSON)
    describe its instance. `window` is (center, width) in modality units, with
    `function` LINEAR (default), LINEAR_EXACT or SIGMOID; without it the instance's
    own window or VOI LUT applies, else one over the frame's range of values. Colour
    images ignore the window. `rows` and `columns` are maxima of the output size with
    the aspect ratio kept (PS3.18 8.2.2; one alone fixes that side); `region` is
    (x0, y0, x1, y1) of the frame in 0..1 (WADO-URI `region`); `viewport` is the
    WADO-RS parameter and wins over rows and columns. `overlays` burns in the overlay
    planes (60xx,3000) for `frame_number`; `annotation` holds "patient" and/or
    "technique". `bulk` gives the values of BulkDataURIs rendering needs (see
    `metadata.bulk_paths`), `byteorder` that of the stored data set's words.

    Raises RenderError for images or parameters that cannot be rendered.
    """
    attributes = Attributes(metadata, frame_number, bulk or {}, byteorder)
    pixels = _within_bits_stored(_checked(pixels, info), info)
    voi: Voi | None = None
    if info.samples_per_pixel == 1 and info.photometric_interpretation != PALETTE:
        voi = resolve_voi([pixels], info, attributes, window, function)
        modality = modality_lut(attributes, info)
        image = grey_image(pixels, info, modality, voi, inverted(info, attributes))
    elif info.photometric_interpretation == PALETTE:
        image = _palette_image(pixels, info, attributes)
    else:
        image = _colour_image(pixels, info)
    if overlays:
        image = _burn_overlays(image, attributes)
    image = _geometry(image, viewport, region, rows, columns)
    if annotation:
        shown = (voi.center, voi.width) if isinstance(voi, Window) else None
        image = annotate(image, *annotation_lines(attributes, annotation, shown))
    return image


def render_stored_frame(
    data: bytes, transfer_syntax: str, info: FrameInfo, metadata: dict[str, Any], **options: Any
) -> NDArray[np.uint8]:
    """A frame's stored bytes decoded (`decode_stored_frame`) and rendered (`render_frame`)."""
    return render_frame(decode_stored_frame(data, transfer_syntax, info), info, metadata, **options)


def decode_stored_frame(data: bytes, transfer_syntax: str, info: FrameInfo) -> NDArray[Any]:
    """`decode_frame`, after checking that a compressed frame declares the instance's
    size: a decoder allocates what the codestream says (see `codestream`)."""
    declared = declared_size(data)
    if declared is not None:
        rows, columns = declared
        if columns != info.columns or rows not in (0, info.rows):
            raise RenderError(
                f"the frame's codestream declares {rows} x {columns} pixels, "
                f"the instance {info.rows} x {info.columns}: not decoded"
            )
    return decode_frame(data, transfer_syntax, info)


def resolve_voi(
    frames: Sequence[NDArray[Any]],
    info: FrameInfo,
    attributes: Attributes,
    window: tuple[float, float] | Window | VoiTable | None,
    function: str | None = None,
) -> Voi:
    """The VOI transformation for grayscale `frames`: the requested window, else the
    instance's, else a LINEAR_EXACT window over the frames' range of modality values
    (several frames share one, so that an animation does not flicker)."""
    if isinstance(window, Window | VoiTable):
        return window
    if window is not None:
        center, width = window
        return Window(float(center), float(width), (function or LINEAR).upper())
    own = instance_voi(attributes)
    if own is not None:
        return own
    ranges = [stored_range(_within_bits_stored(f, info)) for f in frames]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return window_for_range(modality_lut(attributes, info), low, high, info)


def encode_image(image: NDArray[Any], media_type: str, quality: int | None = None) -> bytes:
    """An 8-bit image (grey or RGB) as JPEG (quality 1..100, default 90), PNG or GIF."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    buffer = io.BytesIO()
    if media_type == JPEG:
        picture.save(buffer, "JPEG", quality=quality or DEFAULT_QUALITY)
    elif media_type == PNG:
        picture.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif media_type == GIF:
        _gif_frame(picture).save(buffer, "GIF")
    else:
        raise RenderError(f"{media_type} is not a rendered media type: use {MEDIA_TYPES}")
    return buffer.getvalue()


def encode_animation(images: Sequence[NDArray[Any]], frame_time_ms: float) -> bytes:
    """Frames as an animated GIF that loops, each shown `frame_time_ms` (GIF keeps
    hundredths of a second, at least 20 ms)."""
    if not images:
        raise RenderError("an animation needs at least one frame")
    pictures = [_gif_frame(Image.fromarray(np.ascontiguousarray(i))) for i in images]
    buffer = io.BytesIO()
    duration = max(20, round(frame_time_ms / 10.0) * 10)
    pictures[0].save(
        buffer, "GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0
    )
    return buffer.getvalue()


def _gif_frame(picture: Image.Image) -> Image.Image:
    # GIF holds 256 colours: grey images map exactly; colour is quantised to an adaptive
    # palette rather than Pillow's fixed web palette.
    if picture.mode == "RGB":
        return picture.quantize(256, dither=Image.Dither.NONE)
    return picture


def _checked(pixels: NDArray[Any], info: FrameInfo) -> NDArray[Any]:
    array = np.asarray(pixels)
    if array.shape != info.frame_shape:
        raise RenderError(f"pixels of shape {array.shape} are not a {info.frame_shape} frame")
    if array.dtype.kind not in "uif":
        raise RenderError(f"pixels of type {array.dtype} cannot be rendered")
    return array


def _within_bits_stored(pixels: NDArray[Any], info: FrameInfo) -> NDArray[Any]:
    """Samples with the bits above Bits Stored cleared, or the sign extended."""
    unused = pixels.dtype.itemsize * 8 - info.bits_stored
    if pixels.dtype.kind not in "ui" or unused <= 0:
        return pixels
    fitted: NDArray[Any]
    if pixels.dtype.kind == "i":
        fitted = (pixels << unused) >> unused
    else:
        fitted = pixels & pixels.dtype.type((1 << info.bits_stored) - 1)
    return fitted


def _colour_image(pixels: NDArray[Any], info: FrameInfo) -> NDArray[np.uint8]:
    """RGB samples (decoding converted YBR) as 8 bits each; wider samples keep their
    top 8 bits of Bits Stored."""
    if pixels.ndim != 3:
        raise RenderError(f"{info.photometric_interpretation} pixels need 3 samples")
    rgb: NDArray[np.uint8]
    if pixels.dtype.kind == "f":
        rgb = np.clip(np.nan_to_num(pixels), 0, 255).astype(np.uint8)
    elif pixels.dtype == np.uint8:
        rgb = pixels.astype(np.uint8, copy=False)
    else:
        rgb = (np.clip(pixels, 0, None) >> max(0, info.bits_stored - 8)).astype(np.uint8)
    return rgb


# --- Palette colour (PS3.3 C.7.6.3.1.5 and C.7.9) ----------------------------------------

_PALETTE_DESCRIPTORS: Final = ("00281101", "00281102", "00281103")
_PALETTE_DATA: Final = ("00281201", "00281202", "00281203")
_SEGMENTED_DATA: Final = ("00281221", "00281222", "00281223")


def _palette_image(
    pixels: NDArray[Any], info: FrameInfo, attributes: Attributes
) -> NDArray[np.uint8]:
    """Palette indices to RGB through the Red, Green and Blue Palette Color LUTs."""
    channels = []
    first = 0
    for descriptor_tag, data_tag, segmented_tag in zip(
        _PALETTE_DESCRIPTORS, _PALETTE_DATA, _SEGMENTED_DATA, strict=True
    ):
        descriptor = attributes.numbers(descriptor_tag)
        if len(descriptor) != 3:
            raise RenderError(f"PALETTE COLOR needs ({descriptor_tag[:4]},{descriptor_tag[4:]})")
        entries, first, bits = int(descriptor[0]) or 65536, int(descriptor[1]), int(descriptor[2])
        if info.pixel_representation and first >= 2**15:
            first -= 2**16
        channels.append(_palette_channel(attributes, data_tag, segmented_tag, entries, bits))
    table = np.stack(channels, axis=-1)
    index = np.clip(pixels.astype(np.int64) - first, 0, len(table) - 1)
    return table[index]


def _palette_channel(
    attributes: Attributes, data_tag: str, segmented_tag: str, entries: int, bits: int
) -> NDArray[np.uint8]:
    metadata = attributes.metadata
    if data_tag in metadata:
        attribute = metadata[data_tag]
        raw = attributes.binary(data_tag, attribute) if "Value" not in attribute else None
        if raw is not None and bits == 8 and len(raw) == entries:
            values = np.frombuffer(raw, np.uint8).astype(np.float64)  # one byte per entry
        else:
            values = attributes.words(data_tag, metadata).astype(np.float64)
    elif segmented_tag in metadata:
        values = _expand_segments(attributes.words(segmented_tag, metadata))
    else:
        raise RenderError(f"PALETTE COLOR needs ({data_tag[:4]},{data_tag[4:]})")
    values = values[:entries]
    if len(values) == 0:
        raise RenderError("a Palette Color LUT is empty")
    # 16-bit entries go to 8 bits; some writers say 16 for entries that fit in 8.
    top = 255.0 if bits == 8 or values.max() < 256 else 65535.0
    return np.floor(np.clip(values, 0, top) * (255.0 / top) + 0.5).astype(np.uint8)


def _expand_segments(words: NDArray[Any]) -> NDArray[np.float64]:
    """A Segmented Palette Color LUT (PS3.3 C.7.9.2): discrete and linear segments."""
    values: list[float] = []
    position = 0
    while position + 1 < len(words):
        opcode, length = int(words[position]), int(words[position + 1])
        if opcode == 0:
            values.extend(float(v) for v in words[position + 2 : position + 2 + length])
            position += 2 + length
        elif opcode == 1 and values:
            start, end = values[-1], float(words[position + 2])
            values.extend(start + (end - start) * (n + 1) / length for n in range(length))
            position += 3
        else:
            raise RenderError("only discrete and linear palette segments are supported")
    return np.array(values, dtype=np.float64)


# --- Overlays (PS3.3 C.9.2) ----------------------------------------------------------------


def _burn_overlays(image: NDArray[np.uint8], attributes: Attributes) -> NDArray[np.uint8]:
    """`image` with the pixels of each overlay plane of the frame set to white."""
    out = image
    for tag in sorted(t for t in attributes.metadata if is_overlay_data(t)):
        mask = _overlay_mask(attributes, tag[:4], image.shape[:2])
        if mask is not None:
            out = out.copy() if out is image else out
            out[mask] = 255
    return out


def _overlay_mask(
    attributes: Attributes, group: str, shape: tuple[int, ...]
) -> NDArray[np.bool_] | None:
    rows = int(attributes.number(f"{group}0010", 0))
    columns = int(attributes.number(f"{group}0011", 0))
    if rows < 1 or columns < 1 or int(attributes.number(f"{group}0100", 1)) != 1:
        return None  # overlays in unused bits of the pixel data are retired; skipped
    origin = attributes.numbers(f"{group}0050") or [1.0, 1.0]
    frames = int(attributes.number(f"{group}0015", 1))
    index = attributes.frame_number - int(attributes.number(f"{group}0051", 1))
    if not 0 <= index < frames:
        return None
    data_tag = f"{group}3000"
    raw = attributes.binary(data_tag, attributes.metadata[data_tag])
    if attributes.byteorder == ">" and attributes.metadata[data_tag].get("vr") == "OW":
        raw = np.frombuffer(raw[: len(raw) // 2 * 2], ">u2").astype("<u2").tobytes()
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    plane = bits[index * rows * columns : (index + 1) * rows * columns]
    if len(plane) < rows * columns:
        raise RenderError(f"overlay ({group},3000) is shorter than its rows and columns")
    return _placed(plane.reshape(rows, columns).astype(bool), origin, shape)


def _placed(
    plane: NDArray[np.bool_], origin: Sequence[float], shape: tuple[int, ...]
) -> NDArray[np.bool_]:
    """An overlay plane placed at its origin (1-based row, column) on the image."""
    mask = np.zeros(shape[:2], dtype=bool)
    top, left = int(origin[0]) - 1, int(origin[1]) - 1
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(shape[0], top + plane.shape[0])
    x1 = min(shape[1], left + plane.shape[1])
    if y0 < y1 and x0 < x1:
        mask[y0:y1, x0:x1] = plane[y0 - top : y1 - top, x0 - left : x1 - left]
    return mask


# --- Geometry: source region, viewport, size -----------------------------------------------


def _geometry(
    image: NDArray[np.uint8],
    viewport: Viewport | None,
    region: tuple[float, float, float, float] | None,
    rows: int | None,
    columns: int | None,
) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    box, flip_x, flip_y = (0.0, 0.0, float(width), float(height)), False, False
    if viewport is not None:
        box, flip_x, flip_y = _viewport_box(viewport, width, height)
        size = _fit(box, viewport.width, viewport.height)
    else:
        if region is not None:
            box = _region_box(region, width, height)
        size = _fit(box, columns, rows)
    picture = Image.fromarray(image)
    whole = box == (0.0, 0.0, float(width), float(height))
    if size != (width, height) or not whole:
        picture = picture.resize(size, Image.Resampling.BILINEAR, box=box)
    if flip_x:
        picture = ImageOps.mirror(picture)
    if flip_y:
        picture = ImageOps.flip(picture)
    return np.asarray(picture)


def _viewport_box(
    viewport: Viewport, width: int, height: int
) -> tuple[tuple[float, float, float, float], bool, bool]:
    sw = width - viewport.sx if viewport.sw is None else viewport.sw
    sh = height - viewport.sy if viewport.sh is None else viewport.sh
    x0, y0 = viewport.sx, viewport.sy
    box = (x0, y0, min(x0 + abs(sw), float(width)), min(y0 + abs(sh), float(height)))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise RenderError(
            f"the viewport's source region ({viewport.sx:g},{viewport.sy:g} {sw:g} x "
            f"{sh:g}) holds no pixel of the {width} x {height} frame"
        )
    return box, sw < 0, sh < 0


def _region_box(
    region: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise RenderError("a region is x0,y0,x1,y1 within 0..1, with x0 < x1 and y0 < y1")
    box = (x0 * width, y0 * height, x1 * width, y1 * height)
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise RenderError("the region holds less than one pixel")
    return box


def _fit(
    box: tuple[float, float, float, float], max_width: int | None, max_height: int | None
) -> tuple[int, int]:
    """The size of `box` scaled to fit within the maxima (None: no limit), aspect kept."""
    width, height = box[2] - box[0], box[3] - box[1]
    scales = [m / s for m, s in ((max_width, width), (max_height, height)) if m]
    scale = min(scales) if scales else 1.0
    size = (max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5)))
    if max(size) > MAX_OUTPUT_SIDE:
        raise RenderError(f"a rendered image may be at most {MAX_OUTPUT_SIDE} pixels a side")
    return size
