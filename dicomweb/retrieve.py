"""What a retrieve reads from stored instances: frames, pixel data and bulk data values.

The index says where they lie: the frame table gives each frame's byte ranges and the
bulk data map each top-level value's. Only what those cannot say (values inside
sequences, deflated data sets, frames that do not start on a byte boundary, video) is
found by parsing the file with pydicom, in a worker thread.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from struct import unpack
from typing import TypeVar

import numpy as np
import orjson
import pydicom
from anyio import from_thread, to_thread
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from dicomweb.errors import BadRequest, NotFound
from dicomweb.index.repository import StoredInstance
from dicomweb.negotiation import NATIVE_LITTLE_ENDIAN, frame_media_type
from dicomweb.storage import BlobStore

T = TypeVar("T")
Range = tuple[int, int]

PIXEL_DATA_TAGS = ("7FE00008", "7FE00009", "7FE00010")
NATIVE_SYNTAXES = NATIVE_LITTLE_ENDIAN | {ExplicitVRBigEndian}

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = 0x7FE00008
_DOUBLE_PIXEL_DATA = 0x7FE00009
_FIRST_PIXEL_TAG = _FLOAT_PIXEL_DATA
_DEFAULT_BITS = {_FLOAT_PIXEL_DATA: 32, _DOUBLE_PIXEL_DATA: 64}
_TAG = re.compile(r"[0-9A-F]{8}")
_ITEM = re.compile(r"[1-9][0-9]{0,8}")
_NUMBER = re.compile(r"[0-9]{1,9}")
# Ranges up to this size are read at once; longer ones are streamed in pieces.
_READ_AT_ONCE = 1 << 20
# Reads of a pydicom parse are buffered so that its many small reads cost few thread hops.
_PARSE_BUFFER = 256 * 1024


@dataclass(frozen=True, slots=True)
class ByteSource:
    """Bytes to send: runs of a stored blob, or bytes already in memory."""

    key: str
    ranges: tuple[Range, ...] = ()
    data: bytes | None = None

    @property
    def length(self) -> int:
        """How many bytes the source holds."""
        if self.data is not None:
            return len(self.data)
        return sum(length for _, length in self.ranges)

    def slice(self, start: int, stop: int) -> ByteSource:
        """The bytes [start, stop) of this source."""
        if self.data is not None:
            return ByteSource(self.key, data=self.data[start:stop])
        ranges: list[Range] = []
        position = 0
        for offset, length in self.ranges:
            lo, hi = max(start, position), min(stop, position + length)
            if lo < hi:
                ranges.append((offset + lo - position, hi - lo))
            position += length
        return ByteSource(self.key, tuple(ranges))

    async def chunks(self, blobs: BlobStore) -> AsyncIterator[bytes]:
        """The bytes, read as they are sent; long runs a megabyte at a time."""
        if self.data is not None:
            yield self.data
            return
        if self._compact():
            # The fragments of a small frame, separated by 8-byte item headers: one read.
            first = self.ranges[0][0]
            block = await blobs.read_range(self.key, first, self._span())
            yield b"".join(block[o - first : o - first + n] for o, n in self.ranges)
            return
        for offset, length in self.ranges:
            if length <= _READ_AT_ONCE:
                yield await blobs.read_range(self.key, offset, length)
            else:
                async for chunk in blobs.iter_bytes(self.key, offset, offset + length):
                    yield chunk

    async def read(self, blobs: BlobStore) -> bytes:
        """All the bytes at once, for work that needs them whole (transcoding)."""
        return b"".join([chunk async for chunk in self.chunks(blobs)])

    def _span(self) -> int:
        last_offset, last_length = self.ranges[-1]
        return last_offset + last_length - self.ranges[0][0]

    def _compact(self) -> bool:
        """Whether the runs are ascending and close enough to read as one block."""
        if len(self.ranges) < 2 or self._span() > _READ_AT_ONCE:
            return False
        ascending = all(a + n <= b for (a, n), (b, _) in pairwise(self.ranges))
        return ascending and self._span() <= 2 * self.length


@dataclass(frozen=True, slots=True)
class PixelData:
    """The pixel data of an instance, as the parts a response carries.

    Native pixel data is one value; encapsulated pixel data is one source per frame
    (PS3.18 8.7.3.3.2: compressed bulk data is sent frame by frame).
    """

    transfer_syntax_uid: str
    encapsulated: bool
    sources: tuple[ByteSource, ...]

    @property
    def media_type(self) -> str:
        """The media type of each part."""
        return frame_media_type(self.transfer_syntax_uid)


def is_encapsulated(transfer_syntax: str) -> bool:
    """Whether pixel data in `transfer_syntax` is encapsulated (fragments in items)."""
    return transfer_syntax not in NATIVE_SYNTAXES


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a frame list such as `1,3,2,1` (any order, repeats kept);
    BadRequest unless every entry is a positive integer."""
    numbers: list[int] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not _NUMBER.fullmatch(entry) or int(entry) == 0:
            raise BadRequest(
                f"{text[:80]!r} is not a frame list: frames are numbered from 1, e.g. 1,3,2"
            )
        numbers.append(int(entry))
    return numbers


def check_frame_numbers(numbers: Sequence[int], number_of_frames: int) -> None:
    """NotFound, naming the first frame number past `number_of_frames`, if any is."""
    for number in numbers:
        if number > number_of_frames:
            raise NotFound(
                f"frame {number} does not exist: the instance has {number_of_frames} frame(s)"
            )


def parse_bulkdata_path(text: str) -> str:
    """A bulk data path (`tag[/item/tag...]`) in the form the index keeps, or BadRequest."""
    segments = text.strip("/").upper().split("/")
    valid = len(segments) % 2 == 1 and all(
        (_TAG if n % 2 == 0 else _ITEM).fullmatch(s) for n, s in enumerate(segments)
    )
    if not valid:
        raise BadRequest(
            f"{text[:80]!r} is not a bulk data path: expected tag[/item/tag...], "
            "tags as 8 hexadecimal digits, items numbered from 1"
        )
    return "/".join(segments)


def pixel_data_tag(stored: StoredInstance) -> str | None:
    """The tag (e.g. 7FE00010) of the instance's top-level pixel data, if it has any."""
    locations = _locations(stored)
    return next((tag for tag in PIXEL_DATA_TAGS if tag in locations), None)


async def frame_sources(
    blobs: BlobStore, stored: StoredInstance, numbers: Sequence[int]
) -> list[ByteSource]:
    """The bytes of each requested frame (numbered from 1), in the order requested."""
    table = _frame_table(stored)
    if table is None:
        frames = await _parsed_frames(blobs, stored)
        return [ByteSource(stored.blob_key, data=frames[n - 1]) for n in numbers]
    return [ByteSource(stored.blob_key, table[n - 1]) for n in numbers]


async def pixel_data(blobs: BlobStore, stored: StoredInstance) -> PixelData:
    """The instance's pixel data; NotFound if it has none."""
    if pixel_data_tag(stored) is None:
        raise NotFound(f"instance {stored.sop_instance_uid} has no pixel data")
    syntax, key = stored.transfer_syntax_uid, stored.blob_key
    table = _frame_table(stored)
    if is_encapsulated(syntax):
        if table is None:
            # Video (one stream for all frames): the fragments joined.
            stream = await _parse(blobs, stored, _encapsulated_stream)
            return PixelData(syntax, True, (ByteSource(key, data=stream),))
        return PixelData(syntax, True, tuple(ByteSource(key, frame) for frame in table))
    if table is None:
        value = await _parse(blobs, stored, _pixel_value)
        return PixelData(syntax, False, (ByteSource(key, data=value),))
    return PixelData(syntax, False, (await _native_value(blobs, stored, table),))


async def bulk_value(blobs: BlobStore, stored: StoredInstance, path: str) -> ByteSource:
    """The value at bulk data `path` (other than the pixel data); NotFound if none."""
    locations = _locations(stored)
    if path not in locations:
        raise NotFound(f"instance {stored.sop_instance_uid} has no bulk data at {path}")
    location = locations[path]
    # Offsets of a deflated data set's elements are in the inflated stream, not the file.
    if location is not None and stored.transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
        offset, length = location
        return ByteSource(stored.blob_key, ((offset, length),))
    header_only = int(path.split("/", 1)[0], 16) < _FIRST_PIXEL_TAG
    value = await _parse(blobs, stored, partial(_nested_value, path=path), header_only)
    return ByteSource(stored.blob_key, data=value)


def _locations(stored: StoredInstance) -> dict[str, list[int] | None]:
    locations: dict[str, list[int] | None] = orjson.loads(stored.bulkdata)
    return locations


def _frame_table(stored: StoredInstance) -> list[tuple[Range, ...]] | None:
    if stored.frames is None:
        return None
    rows: list[list[int]] = orjson.loads(stored.frames)
    return [tuple(zip(row[::2], row[1::2], strict=True)) for row in rows]


async def _native_value(
    blobs: BlobStore, stored: StoredInstance, table: list[tuple[Range, ...]]
) -> ByteSource:
    """The whole native pixel data value: the frames, plus the padding byte of an odd
    length. The element's length field is the 4 bytes before its value."""
    start = table[0][0][0]
    last_offset, last_length = table[-1][-1]
    length = last_offset + last_length - start
    if start >= 4:
        field = await blobs.read_range(stored.blob_key, start - 4, 4)
        order = ">" if stored.transfer_syntax_uid == ExplicitVRBigEndian else "<"
        (declared,) = unpack(f"{order}L", field)
        if length <= declared <= length + 1 and start + declared <= stored.size:
            length = declared
    return ByteSource(stored.blob_key, ((start, length),))


async def _parsed_frames(blobs: BlobStore, stored: StoredInstance) -> list[bytes]:
    """Every frame, from a parse: for instances whose frames have no byte ranges."""
    if is_encapsulated(stored.transfer_syntax_uid):
        raise BadRequest(
            f"the frames of instance {stored.sop_instance_uid} "
            f"({stored.transfer_syntax_uid}, a video stream) cannot be sent one by one; "
            "retrieve its pixel data instead"
        )
    return await _parse(blobs, stored, _native_frames)


async def _parse(
    blobs: BlobStore,
    stored: StoredInstance,
    take: Callable[[Dataset], T],
    header_only: bool = False,
) -> T:
    """Parse the stored file with pydicom in a worker thread and apply `take` there."""

    def work() -> T:
        fp = _BlobReader(blobs, stored.blob_key, stored.size)
        return take(pydicom.dcmread(fp, stop_before_pixels=header_only))

    return await to_thread.run_sync(work)


def _pixel_element(ds: Dataset) -> tuple[int, bytes]:
    for tag in (_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_PIXEL_DATA):
        if tag in ds and isinstance(ds[tag].value, bytes):
            return tag, ds[tag].value
    raise NotFound("the instance has no pixel data")


def _pixel_value(ds: Dataset) -> bytes:
    return _pixel_element(ds)[1]


def _encapsulated_stream(ds: Dataset) -> bytes:
    # With one frame asked for, every fragment is taken, whatever the offset table says.
    return b"".join(generate_frames(_pixel_value(ds), number_of_frames=1))


def _native_frames(ds: Dataset) -> list[bytes]:
    """Native frames cut from the value; 1-bit frames that start inside a byte are
    repacked so that each starts at bit 0 of its first byte (PS3.5 8.1.1)."""
    tag, value = _pixel_element(ds)
    count = int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.get("BitsAllocated") or _DEFAULT_BITS.get(tag, 8))
    samples = int(ds.get("SamplesPerPixel") or 1)
    frame_bits = int(ds.Rows) * int(ds.Columns) * samples * bits
    if samples == 3 and str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        frame_bits = frame_bits // 3 * 2
    if frame_bits % 8 == 0:
        size = frame_bits // 8
        return [value[n * size : (n + 1) * size] for n in range(count)]
    unpacked = np.unpackbits(np.frombuffer(value, np.uint8), bitorder="little")
    return [
        np.packbits(unpacked[n * frame_bits : (n + 1) * frame_bits], bitorder="little").tobytes()
        for n in range(count)
    ]


def _nested_value(ds: Dataset, path: str) -> bytes:
    """The bytes of the element at `path` (tag/item/tag...) below `ds`."""
    segments = path.split("/")
    current = ds
    for position in range(0, len(segments) - 1, 2):
        tag, item = int(segments[position], 16), int(segments[position + 1])
        if tag not in current or current[tag].VR != "SQ" or item > len(current[tag].value):
            raise NotFound(f"no sequence item at {'/'.join(segments[: position + 2])}")
        current = current[tag].value[item - 1]
    tag = int(segments[-1], 16)
    if tag not in current or not isinstance(current[tag].value, bytes):
        raise NotFound(f"no binary value at {path}")
    value: bytes = current[tag].value
    return value


class _BlobReader:
    """A stored blob as a read-only file for code in a worker thread.

    Each read that its read-ahead buffer cannot serve runs the blob store's read_range
    on the event loop, so pydicom's many small reads cost few thread hops.
    """

    def __init__(self, blobs: BlobStore, key: str, size: int) -> None:
        self._blobs = blobs
        self._key = key
        self._size = size
        self._position = 0
        self._buffer = b""
        self._buffer_start = 0

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = self._size if size < 0 else min(self._size, self._position + size)
        if end <= self._position:
            return b""
        buffered_end = self._buffer_start + len(self._buffer)
        if not self._buffer_start <= self._position or end > buffered_end:
            length = min(max(end - self._position, _PARSE_BUFFER), self._size - self._position)
            self._buffer = from_thread.run(
                self._blobs.read_range, self._key, self._position, length
            )
            self._buffer_start = self._position
        start = self._position - self._buffer_start
        data = self._buffer[start : start + end - self._position]
        self._position += len(data)
        return data
