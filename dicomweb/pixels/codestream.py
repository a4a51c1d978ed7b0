"""The image size a compressed frame declares in its codestream header.

A decoder allocates what the codestream declares, not what the data set's Rows and
Columns say, so a frame of a few bytes can declare a 60000 x 60000 image (a
decompression bomb). Rendering reads the header first and refuses frames whose size
differs from the instance's. JPEG (all processes) and JPEG-LS declare it in their SOF
segment, JPEG 2000 and HTJ2K in the SIZ segment (in a JP2 file, of its codestream box).
"""

from __future__ import annotations

from struct import unpack_from
from typing import Final

__all__ = ["declared_size"]

# Start Of Frame markers: JPEG processes (C0-C3, C5-C7, C9-CB, CD-CF) and JPEG-LS (F7).
_SOF: Final = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)})
_SOF_MARKERS: Final = _SOF | {*range(0xCD, 0xD0), 0xF7}
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD9)})
_START_OF_SCAN: Final = 0xDA
_J2K_START: Final = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  "


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) that a JPEG, JPEG-LS, JPEG 2000 or HTJ2K frame declares; None for
    other data or a header that cannot be read. Rows of 0 mean the JPEG frame declares
    its height later (DNL)."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:4] == _J2K_START:
        return _siz(data, 0)
    if data[:12] == _JP2_SIGNATURE:
        start = _codestream_box(data)
        return None if start is None else _siz(data, start)
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        (length,) = unpack_from(">H", data, position + 2)
        if marker in _SOF_MARKERS and position + 9 <= len(data):
            rows, columns = unpack_from(">HH", data, position + 5)
            return int(rows), int(columns)
        if marker == _START_OF_SCAN:
            return None
        position += 2 + length
    return None


def _siz(data: bytes, start: int) -> tuple[int, int] | None:
    """Image size from the SIZ segment that follows SOC at `start`."""
    if data[start : start + 4] != _J2K_START or start + 26 > len(data):
        return None
    width, height, x_offset, y_offset = unpack_from(">IIII", data, start + 8)
    return int(height - y_offset), int(width - x_offset)


def _codestream_box(data: bytes) -> int | None:
    """Where the contiguous codestream box ('jp2c') of a JP2 file starts its data."""
    position = 0
    while position + 8 <= len(data):
        length, kind = unpack_from(">I4s", data, position)
        header = 8
        if length == 1 and position + 16 <= len(data):
            (length,) = unpack_from(">Q", data, position + 8)
            header = 16
        if kind == b"jp2c":
            return position + header
        if length == 0 or length < header:
            return None
        position += length
    return None
