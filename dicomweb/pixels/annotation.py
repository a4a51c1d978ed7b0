"""Text burned into rendered images: the `annotation` parameter of PS3.18 8.3.5.1.1.

`patient` writes the patient's name, ID, birth date and sex at the top left; `technique`
writes the modality, series and acquisition technique and the window used at the bottom
left. Text is drawn with Pillow's default font, white with a black outline so that it
reads on any image; its size follows the image's height.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from dicomweb.pixels.metadata import Attributes

__all__ = ["KINDS", "PATIENT", "TECHNIQUE", "annotate", "annotation_lines"]

PATIENT: Final = "patient"
TECHNIQUE: Final = "technique"
KINDS: Final = (PATIENT, TECHNIQUE)

# (tag, label, unit) of the technique values written when the instance has them.
_TECHNIQUE_VALUES: Final = (
    ("00180060", "kVp", ""),
    ("00181151", "mA", ""),
    ("00181150", "Exposure time", " ms"),
    ("00180050", "Slice", " mm"),
    ("00180080", "TR", " ms"),
    ("00180081", "TE", " ms"),
    ("00180087", "Field", " T"),
)


def annotation_lines(
    attributes: Attributes, kinds: Sequence[str], window: tuple[float, float] | None
) -> tuple[list[str], list[str]]:
    """The text of each kind asked for: (lines at the top, lines at the bottom)."""
    top: list[str] = []
    bottom: list[str] = []
    if PATIENT in kinds:
        top = _patient(attributes)
    if TECHNIQUE in kinds:
        bottom = _technique(attributes, window)
    return top, bottom


def _patient(attributes: Attributes) -> list[str]:
    name = attributes.text("00100010").replace("^", " ").strip()
    birth = _date(attributes.text("00100030"))
    sex = attributes.text("00100040")
    lines = [name, f"ID {attributes.text('00100020')}" if attributes.text("00100020") else ""]
    lines.append(" ".join(part for part in (birth, sex) if part))
    return [line for line in lines if line]


def _technique(attributes: Attributes, window: tuple[float, float] | None) -> list[str]:
    header = " ".join(
        part for part in (attributes.text("00080060"), attributes.text("0008103E")) if part
    )
    values = []
    for tag, label, unit in _TECHNIQUE_VALUES:
        value = attributes.text(tag)
        if value:
            values.append(f"{label} {value}{unit}")
    lines = [header, "  ".join(values)]
    if window is not None:
        lines.append(f"W {window[1]:g} L {window[0]:g}")
    return [line for line in lines if line]


def _date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def annotate(
    image: NDArray[np.uint8], top: Sequence[str], bottom: Sequence[str]
) -> NDArray[np.uint8]:
    """`image` with the lines written at its top left and bottom left corners."""
    if not top and not bottom:
        return image
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    size = max(9, min(32, picture.height // 28))
    font = ImageFont.load_default(size=size)
    fill: int | tuple[int, int, int] = 255 if picture.mode == "L" else (255, 255, 255)
    stroke: int | tuple[int, int, int] = 0 if picture.mode == "L" else (0, 0, 0)
    margin, step = max(2, size // 3), size + max(2, size // 4)
    for number, line in enumerate(top):
        position = (margin, margin + number * step)
        draw.text(position, line, fill=fill, font=font, stroke_width=1, stroke_fill=stroke)
    first = picture.height - margin - len(bottom) * step
    for number, line in enumerate(bottom):
        position = (margin, first + number * step)
        draw.text(position, line, fill=fill, font=font, stroke_width=1, stroke_fill=stroke)
    return np.asarray(picture)
