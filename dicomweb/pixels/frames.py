"""Where each frame's bytes lie in a stored DICOM Part 10 file.

At ingest only the header is parsed; `locate_frames` then records, per frame, the byte
ranges of the file holding that frame, so that a frame can later be served with
seek+read and no parsing. It reads element and item headers only and seeks over values,
so its memory and I/O do not grow with the size of the pixel data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from struct import unpack, unpack_from
from typing import BinaryIO, Final, NamedTuple

from pydicom import Dataset
from pydicom.dataelem import RawDataElement

__all__ = ["FrameLayoutError", "FrameTable", "locate_frames"]

Range = tuple[int, int]
"""(offset, length) of a run of bytes in the file."""

_PIXEL_TAGS: Final = {
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
    0x7FE00010: "PixelData",
}
_FIRST_PIXEL_TAG: Final = 0x7FE00008
_LAST_PIXEL_TAG: Final = 0x7FE00010
_DEFAULT_BITS: Final = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}

_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_UNDEFINED: Final = 0xFFFFFFFF
_MAX_DEPTH: Final = 64

_IMPLICIT_LE: Final = "1.2.840.10008.1.2"
_EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
_DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
_EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
_NATIVE: Final = frozenset({_IMPLICIT_LE, _EXPLICIT_LE, _EXPLICIT_BE})
_RLE: Final = "1.2.840.10008.1.2.5"
_COMPRESSED_PREFIX: Final = "1.2.840.10008.1.2.4."

_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ALL_VRS: Final = _LONG_VRS | frozenset(
    {
        *(b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO"),
        *(b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"),
    }
)

_JPEG_SOI: Final = b"\xff\xd8"
_J2K_SOC_SIZ: Final = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JXL_CODESTREAM: Final = b"\xff\x0a"
_JXL_SIGNATURE: Final = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_PEEK: Final = 12


class FrameLayoutError(ValueError):
    """The pixel data is malformed or truncated, or its frames cannot be told apart."""


@dataclass(frozen=True, slots=True)
class FrameTable:
    """Where each frame's bytes lie in the file.

    ``frames[i]`` holds the (offset, length) ranges whose concatenation is frame ``i``:
    one range for native data; for encapsulated data one range per fragment of the
    frame, item headers excluded. Native bytes are as stored, so big-endian for
    Explicit VR Big Endian files.
    """

    pixel_keyword: str
    encapsulated: bool
    frames: tuple[tuple[Range, ...], ...]

    def to_json(self) -> list[list[int]]:
        """Per frame, its ranges flattened: ``[offset, length, offset, length, ...]``."""
        return [[n for byte_range in frame for n in byte_range] for frame in self.frames]

    @classmethod
    def from_json(cls, data: object, *, pixel_keyword: str, encapsulated: bool) -> FrameTable:
        """Rebuild a table from `to_json` output; the JSON holds only the ranges."""
        if pixel_keyword not in _PIXEL_TAGS.values():
            raise ValueError(f"not a pixel data keyword: {pixel_keyword!r}")
        if not isinstance(data, list | tuple):
            raise ValueError("a frame table is a list of frames")
        frames: list[tuple[Range, ...]] = []
        for row in data:
            if not isinstance(row, list | tuple) or len(row) % 2:
                raise ValueError(f"frame {len(frames)}: expected [offset, length, ...]")
            values: list[int] = []
            for n in row:
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise ValueError(f"frame {len(frames)}: {n!r} is not a byte count")
                values.append(n)
            frames.append(tuple(zip(values[::2], values[1::2], strict=True)))
        return cls(pixel_keyword, encapsulated, tuple(frames))


def locate_frames(fp: BinaryIO, header: Dataset) -> FrameTable | None:
    """Find the top-level pixel data element of the seekable file `fp` and its frames.

    `header` is ``pydicom.dcmread(fp, stop_before_pixels=True)`` of the same file; its
    element positions, when still known, let the search start at the last header
    element instead of the start of the file. The position of `fp` is restored.

    Returns None when there is no pixel data, and when byte ranges cannot represent
    the frames: Deflated Explicit VR Little Endian (the data set is compressed as a
    whole), video transfer syntaxes (one stream for all frames), and multi-frame
    1-bit data whose frames are not a whole number of bytes (frames start mid-byte, so
    any byte range would carry bits of the neighbouring frames). Callers decode with
    pydicom in those cases.

    Encapsulated fragments are grouped into frames by, in order: the Extended Offset
    Table, a non-empty Basic Offset Table, Number of Frames being 1, one fragment per
    frame, and codestream markers at fragment starts. An offset table that disagrees
    with the fragments actually present is ignored, since wrong tables (such as 32-bit
    Basic Offset Table overflow past 4 GiB) are common.

    Raises FrameLayoutError when the pixel data is malformed or truncated, the image
    attributes needed to size native frames are missing or invalid, or encapsulated
    frames cannot be told apart.
    """
    transfer_syntax = _transfer_syntax(header)
    if transfer_syntax == _DEFLATED_LE:
        return None
    saved = fp.tell()
    try:
        src = _Source(fp)
        start, implicit, little = _dataset_start(src, transfer_syntax)
        resume = _resume_point(src, header, implicit, little)
        pixel = _scan(src, start if resume is None else max(start, resume), implicit, little)
        if pixel is None:
            return None
        keyword = _PIXEL_TAGS[pixel.tag]
        if pixel.length == _UNDEFINED:
            if transfer_syntax in _NATIVE:
                raise FrameLayoutError(
                    f"{keyword} has undefined length but the transfer syntax "
                    f"{transfer_syntax} is not encapsulated"
                )
            frames = _encapsulated_frames(src, header, transfer_syntax, pixel, little)
            return None if frames is None else FrameTable(keyword, True, frames)
        if _is_encapsulated_syntax(transfer_syntax):
            raise FrameLayoutError(
                f"{keyword} has a defined length but the transfer syntax "
                f"{transfer_syntax} is encapsulated"
            )
        frames = _native_frames(src, header, keyword, pixel)
        return None if frames is None else FrameTable(keyword, False, frames)
    finally:
        fp.seek(saved)


class _Source:
    """Reads and seeks that never go past the end of the file."""

    __slots__ = ("_fp", "size")

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self.size = fp.seek(0, os.SEEK_END)

    def tell(self) -> int:
        return self._fp.tell()

    def seek(self, pos: int) -> None:
        if pos > self.size:
            raise FrameLayoutError(
                f"a length points to offset {pos}, past the end of the file ({self.size} bytes)"
            )
        self._fp.seek(pos)

    def read_upto(self, n: int) -> bytes:
        data = self._fp.read(n)
        # Raw (unbuffered) streams may return fewer bytes than asked before the end.
        while 0 < len(data) < n:
            more = self._fp.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def read(self, n: int) -> bytes:
        pos = self.tell()
        data = self.read_upto(n)
        if len(data) != n:
            raise FrameLayoutError(
                f"the file ends at {self.size} bytes, inside a header at offset {pos}"
            )
        return data


class _Header(NamedTuple):
    tag: int
    vr: bytes | None
    length: int
    value_pos: int


class _Fragment(NamedTuple):
    item_pos: int
    value_pos: int
    length: int


def _is_vr(raw: bytes) -> bool:
    return len(raw) == 2 and 0x41 <= raw[0] <= 0x5A and 0x41 <= raw[1] <= 0x5A


def _endian(little: bool) -> str:
    return "<" if little else ">"


def _read_header(src: _Source, implicit: bool, little: bool) -> _Header | None:
    """The next element header, or None at the end of the file."""
    start = src.tell()
    raw = src.read_upto(8)
    if not raw:
        return None
    if len(raw) < 8:
        raise FrameLayoutError(f"the file ends inside the element header at offset {start}")
    e = _endian(little)
    group, element = unpack_from(f"{e}HH", raw)
    vr = raw[4:6]
    # Items and delimiters never carry a VR; an explicit VR data set may switch to
    # implicit VR mid-way (as pydicom also accepts), detected by a VR that is not two
    # capital letters.
    if implicit or group == 0xFFFE or not _is_vr(vr):
        (length,) = unpack_from(f"{e}L", raw, 4)
        return _Header(group << 16 | element, None, length, src.tell())
    if vr in _LONG_VRS:
        (length,) = unpack(f"{e}L", src.read(4))
    else:
        (length,) = unpack_from(f"{e}H", raw, 6)
    return _Header(group << 16 | element, vr, length, src.tell())


def _read_item_header(src: _Source, little: bool) -> tuple[int, int]:
    group, element, length = unpack(f"{_endian(little)}HHL", src.read(8))
    return group << 16 | element, length


def _peek_implicit(src: _Source) -> bool:
    pos = src.tell()
    raw = src.read_upto(6)
    src.seek(pos)
    return len(raw) == 6 and raw[:2] != b"\xfe\xff" and not _is_vr(raw[4:6])


def _skip_value(src: _Source, header: _Header, implicit: bool, little: bool, depth: int) -> None:
    if header.length != _UNDEFINED:
        src.seek(header.value_pos + header.length)
        return
    if header.vr == b"UN":
        # PS3.5 6.2.2: an undefined-length UN value is encoded as Implicit VR Little Endian.
        implicit, little = True, True
    _skip_items(src, implicit, little, depth + 1)


def _skip_items(src: _Source, implicit: bool, little: bool, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise FrameLayoutError(f"sequences nested deeper than {_MAX_DEPTH} levels")
    while True:
        pos = src.tell()
        tag, length = _read_item_header(src, little)
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise FrameLayoutError(f"expected a sequence item at offset {pos}, found {_fmt(tag)}")
        if length == _UNDEFINED:
            _skip_item_elements(src, implicit, little, depth)
        else:
            src.seek(src.tell() + length)


def _skip_item_elements(src: _Source, implicit: bool, little: bool, depth: int) -> None:
    # Items of an explicit VR data set may be implicit VR (PS3.5 6.2.2); pydicom decides
    # per item from its first element, and so do we.
    implicit = implicit or _peek_implicit(src)
    while True:
        pos = src.tell()
        header = _read_header(src, implicit, little)
        if header is None:
            raise FrameLayoutError("the file ends inside a sequence item")
        if header.tag == _ITEM_END:
            return
        if header.tag >> 16 == 0xFFFE:
            raise FrameLayoutError(f"unexpected {_fmt(header.tag)} at offset {pos}")
        _skip_value(src, header, implicit, little, depth)


def _skip_group(src: _Source, pos: int, group: int, implicit: bool) -> int:
    """Skip the little endian elements of `group` at `pos`; return where they end."""
    src.seek(pos)
    implicit = implicit or _peek_implicit(src)
    while len(raw := src.read_upto(4)) == 4 and unpack_from("<H", raw)[0] == group:
        src.seek(pos)
        header = _read_header(src, implicit, True)
        assert header is not None
        _skip_value(src, header, implicit, True, 0)
        pos = src.tell()
    src.seek(pos)
    return pos


def _dataset_start(src: _Source, transfer_syntax: str | None) -> tuple[int, bool, bool]:
    """Where the data set starts and its (implicit VR, little endian) encoding."""
    src.seek(0)
    prefix = src.read_upto(132)
    pos = 132 if len(prefix) == 132 and prefix[128:] == b"DICM" else 0
    pos = _skip_group(src, pos, 0x0002, implicit=False)
    pos = _skip_group(src, pos, 0x0000, implicit=True)
    raw = src.read_upto(6)
    if transfer_syntax is None:
        # As pydicom does without a Transfer Syntax UID: a VR means explicit VR, and a
        # group that reads as 0x0400 or more means big endian.
        if len(raw) == 6 and raw[4:6] in _ALL_VRS:
            return pos, False, unpack_from("<H", raw)[0] < 0x0400
        return pos, True, True
    implicit = transfer_syntax == _IMPLICIT_LE
    little = transfer_syntax != _EXPLICIT_BE
    if len(raw) == 6:
        group, element = unpack_from(f"{_endian(little)}HH", raw)
        found_implicit = not _is_vr(raw[4:6])
        # pydicom reads the data set as encoded, whatever the transfer syntax claims.
        if found_implicit != implicit and (group << 16 | element) not in _PIXEL_TAGS:
            implicit = found_implicit
    return pos, implicit, little


def _resume_point(src: _Source, header: Dataset, implicit: bool, little: bool) -> int | None:
    """The file offset of the last top-level header element, if `header` knows it."""
    # keys(), not iteration: iterating a Dataset decodes every element.
    tags = header.keys()
    for tag in sorted((t for t in tags if t < _FIRST_PIXEL_TAG), reverse=True):
        elem = header.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            value_pos: object = elem.value_tell
        else:
            value_pos = getattr(elem, "file_tell", None)
        if not isinstance(value_pos, int):
            continue
        # Check the element really is there: `header` may come from another file.
        for header_size in (8, 12):
            start = value_pos - header_size
            if start < 0:
                continue
            try:
                src.seek(start)
                found = _read_header(src, implicit, little)
            except FrameLayoutError:
                continue
            if found is not None and found.tag == tag and found.value_pos == value_pos:
                return start
        return None
    return None


def _scan(src: _Source, pos: int, implicit: bool, little: bool) -> _Header | None:
    """The header of the first top-level pixel data element from `pos`, if any."""
    src.seek(pos)
    while True:
        pos = src.tell()
        header = _read_header(src, implicit, little)
        if header is None or header.tag > _LAST_PIXEL_TAG:
            return None
        if header.tag in _PIXEL_TAGS:
            return header
        if header.tag >> 16 == 0xFFFE:
            raise FrameLayoutError(f"unexpected {_fmt(header.tag)} at offset {pos}")
        _skip_value(src, header, implicit, little, 0)


def _native_frames(
    src: _Source, header: Dataset, keyword: str, pixel: _Header
) -> tuple[tuple[Range, ...], ...] | None:
    end = pixel.value_pos + pixel.length
    if end > src.size:
        raise FrameLayoutError(
            f"{keyword} of {pixel.length} bytes at offset {pixel.value_pos} runs past "
            f"the end of the file ({src.size} bytes)"
        )
    rows = _int_attribute(header, "Rows", None)
    columns = _int_attribute(header, "Columns", None)
    samples = _int_attribute(header, "SamplesPerPixel", 1)
    bits = _int_attribute(header, "BitsAllocated", _DEFAULT_BITS.get(keyword))
    if rows is None or columns is None or samples is None or bits is None:
        raise FrameLayoutError(f"{keyword} is present but Rows, Columns or BitsAllocated is not")
    count = _frame_count(header)
    frame_bits = rows * columns * samples * bits
    if samples == 3 and str(header.get("PhotometricInterpretation", "")).strip() == (
        "YBR_FULL_422"
    ):
        # Native 4:2:2 stores two chroma samples per two pixels: 2 samples per pixel.
        frame_bits = frame_bits // 3 * 2
    if frame_bits <= 0:
        raise FrameLayoutError(f"{keyword}: a frame of {rows}x{columns}x{samples} is empty")
    if frame_bits % 8 and count > 1:
        return None
    frame_length = (frame_bits + 7) // 8
    if count * frame_length > pixel.length:
        raise FrameLayoutError(
            f"{keyword} holds {pixel.length} bytes but {count} frame(s) of "
            f"{frame_length} bytes need {count * frame_length}"
        )
    return tuple(((pixel.value_pos + i * frame_length, frame_length),) for i in range(count))


def _encapsulated_frames(
    src: _Source, header: Dataset, transfer_syntax: str | None, pixel: _Header, little: bool
) -> tuple[tuple[Range, ...], ...] | None:
    basic_offsets, fragments = _read_fragments(src, pixel.value_pos, little)
    if _is_video(transfer_syntax):
        return None
    count = _frame_count(header)
    if not fragments:
        raise FrameLayoutError("the encapsulated Pixel Data has no fragments")
    first = fragments[0].item_pos
    index = {fragment.item_pos - first: i for i, fragment in enumerate(fragments)}
    frames = _from_extended_offsets(header, fragments, index, count, little)
    if frames is None:
        frames = _from_basic_offsets(basic_offsets, fragments, index, count, little)
    if frames is not None:
        return frames
    if count == 1:
        return (tuple((f.value_pos, f.length) for f in fragments),)
    if len(fragments) == count:
        return tuple(((f.value_pos, f.length),) for f in fragments)
    is_start = _frame_start_test(transfer_syntax)
    starts = []
    for i, fragment in enumerate(fragments):
        src.seek(fragment.value_pos)
        if is_start(src.read(min(_PEEK, fragment.length))):
            starts.append(i)
    if len(starts) == count and starts[0] == 0:
        return _group(fragments, starts)
    raise FrameLayoutError(
        f"cannot tell which of the {len(fragments)} fragments make up each of the {count} "
        f"frames: no usable offset table, and {len(starts)} fragments start with a "
        "codestream marker"
    )


def _read_fragments(src: _Source, value_pos: int, little: bool) -> tuple[bytes, list[_Fragment]]:
    """The Basic Offset Table and the fragments of encapsulated pixel data."""
    src.seek(value_pos)
    tag, length = _read_item_header(src, little)
    if tag != _ITEM:
        raise FrameLayoutError(
            f"encapsulated Pixel Data starts with {_fmt(tag)} at offset {value_pos}, "
            "not a Basic Offset Table item"
        )
    if length == _UNDEFINED or src.tell() + length > src.size:
        raise FrameLayoutError(f"the Basic Offset Table at offset {value_pos} is truncated")
    basic_offsets = src.read(length)
    fragments: list[_Fragment] = []
    while True:
        pos = src.tell()
        if pos == src.size:
            # Without the delimiter a file cut at an item boundary would look complete.
            raise FrameLayoutError(
                "the encapsulated Pixel Data has no sequence delimiter: the file ends after "
                f"{len(fragments)} fragment(s)"
            )
        tag, length = _read_item_header(src, little)
        if tag == _SEQUENCE_END:
            return basic_offsets, fragments
        if tag != _ITEM:
            raise FrameLayoutError(f"expected a fragment item at offset {pos}, found {_fmt(tag)}")
        if length == _UNDEFINED or pos + 8 + length > src.size:
            raise FrameLayoutError(
                f"the fragment at offset {pos} ({length} bytes) runs past the end of the file"
            )
        fragments.append(_Fragment(pos, pos + 8, length))
        src.seek(pos + 8 + length)


def _from_extended_offsets(
    header: Dataset, fragments: list[_Fragment], index: dict[int, int], count: int, little: bool
) -> tuple[tuple[Range, ...], ...] | None:
    raw_offsets = header.get("ExtendedOffsetTable")
    raw_lengths = header.get("ExtendedOffsetTableLengths")
    if not isinstance(raw_offsets, bytes) or not isinstance(raw_lengths, bytes):
        return None
    if len(raw_offsets) != 8 * count or len(raw_lengths) != 8 * count:
        return None
    e = _endian(little)
    starts = _fragment_indexes(unpack(f"{e}{count}Q", raw_offsets), index)
    if starts is None:
        return None
    lengths: tuple[int, ...] = unpack(f"{e}{count}Q", raw_lengths)
    frames = []
    for i, (first, length) in enumerate(zip(starts, lengths, strict=True)):
        stop = starts[i + 1] if i + 1 < count else len(fragments)
        ranges = []
        remaining = length
        for fragment in fragments[first:stop]:
            if remaining == 0:
                break
            take = min(remaining, fragment.length)
            ranges.append((fragment.value_pos, take))
            remaining -= take
        if remaining or not ranges:
            return None
        frames.append(tuple(ranges))
    return tuple(frames)


def _from_basic_offsets(
    table: bytes, fragments: list[_Fragment], index: dict[int, int], count: int, little: bool
) -> tuple[tuple[Range, ...], ...] | None:
    if len(table) != 4 * count:
        return None
    starts = _fragment_indexes(unpack(f"{_endian(little)}{count}L", table), index)
    return None if starts is None else _group(fragments, starts)


def _fragment_indexes(offsets: tuple[int, ...], index: dict[int, int]) -> list[int] | None:
    """Fragment indexes of frame offsets, or None unless they start at 0 and ascend."""
    starts = [index.get(offset, -1) for offset in offsets]
    if not starts or starts[0] != 0 or any(b <= a for a, b in pairwise(starts)):
        return None
    return starts


def _group(fragments: list[_Fragment], starts: list[int]) -> tuple[tuple[Range, ...], ...]:
    stops = [*starts[1:], len(fragments)]
    return tuple(
        tuple((f.value_pos, f.length) for f in fragments[a:b])
        for a, b in zip(starts, stops, strict=True)
    )


def _is_jpeg_start(head: bytes) -> bool:
    return head.startswith(_JPEG_SOI)


def _is_j2k_start(head: bytes) -> bool:
    return head.startswith(_J2K_SOC_SIZ) or head.startswith(_JP2_SIGNATURE)


def _is_jxl_start(head: bytes) -> bool:
    return head.startswith(_JXL_CODESTREAM) or head.startswith(_JXL_SIGNATURE)


def _is_rle_start(head: bytes) -> bool:
    # The RLE header: segment count (1 to 15), then the first segment's offset, 64.
    return len(head) >= 8 and 1 <= unpack_from("<L", head)[0] <= 15 and head[4:8] == b"@\0\0\0"


def _is_any_start(head: bytes) -> bool:
    return _is_jpeg_start(head) or _is_j2k_start(head) or _is_jxl_start(head)


def _frame_start_test(transfer_syntax: str | None) -> Callable[[bytes], bool]:
    """How to recognise a fragment that begins a frame, by codec family."""
    if transfer_syntax == _RLE:
        return _is_rle_start
    number = _compressed_number(transfer_syntax)
    if number is None:
        return _is_any_start
    if 50 <= number <= 87:  # JPEG and JPEG-LS
        return _is_jpeg_start
    if 90 <= number <= 93 or 201 <= number <= 203:  # JPEG 2000 and HTJ2K
        return _is_j2k_start
    if 110 <= number <= 112:  # JPEG XL
        return _is_jxl_start
    return _is_any_start


def _compressed_number(transfer_syntax: str | None) -> int | None:
    """N of a 1.2.840.10008.1.2.4.N[.M] transfer syntax."""
    if transfer_syntax is None or not transfer_syntax.startswith(_COMPRESSED_PREFIX):
        return None
    number = transfer_syntax[len(_COMPRESSED_PREFIX) :].split(".")[0]
    return int(number) if number.isdigit() else None


def _is_video(transfer_syntax: str | None) -> bool:
    number = _compressed_number(transfer_syntax)
    return number is not None and 100 <= number <= 108  # MPEG-2, MPEG-4 AVC, HEVC


def _is_encapsulated_syntax(transfer_syntax: str | None) -> bool:
    return transfer_syntax == _RLE or _compressed_number(transfer_syntax) is not None


def _transfer_syntax(header: Dataset) -> str | None:
    meta = getattr(header, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value is None:
        return None
    return str(value).strip("\0 ") or None


def _int_attribute(header: Dataset, keyword: str, default: int | None) -> int | None:
    value = header.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite DS
        raise FrameLayoutError(f"{keyword} {value!r} is not an integer") from None
    if number < 0:
        raise FrameLayoutError(f"{keyword} {number} is negative")
    return number


def _frame_count(header: Dataset) -> int:
    # Absent or 0 (seen in the wild for single frames) both mean one frame.
    return _int_attribute(header, "NumberOfFrames", 1) or 1


def _fmt(tag: int) -> str:
    return f"tag ({tag >> 16:04X},{tag & 0xFFFF:04X})"
