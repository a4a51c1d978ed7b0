"""A zip archive written as it is sent, with the standard library's zipfile.

zipfile writes to an unseekable sink, so each member's CRC and sizes follow its data
in a data descriptor and nothing is held back: memory stays at one chunk however large
the archive. Members are stored, not deflated: DICOM pixel data is often compressed
already, and deflating gigabytes would cost far more CPU than the bytes it saves. The
CRC and the writes into zipfile run in worker threads; the event loop only moves bytes.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from functools import partial

from anyio import to_thread

# Above this a member needs ZIP64 size fields.
_ZIP64_LIMIT = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class ZipMember:
    """One file of the archive: its name, its size as known beforehand, and its bytes."""

    name: str
    size: int
    body: AsyncIterable[bytes]


class _Sink(io.RawIOBase):
    """Collects what zipfile writes until the generator passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self._pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        piece = bytes(data)  # type: ignore[call-overload]
        self._pieces.append(piece)
        return len(piece)

    def take(self) -> bytes:
        """Everything written since the last take."""
        pieces, self._pieces = self._pieces, []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def write_zip(members: AsyncIterable[ZipMember]) -> AsyncIterator[bytes]:
    """Yield a zip archive of `members` as it is built."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
    stamp = time.localtime()[:6]
    async for member in members:
        info = zipfile.ZipInfo(member.name, date_time=stamp)
        info.file_size = member.size
        info.external_attr = 0o644 << 16
        entry = await to_thread.run_sync(
            partial(archive.open, info, "w", force_zip64=member.size > _ZIP64_LIMIT)
        )
        async for chunk in member.body:
            await to_thread.run_sync(entry.write, chunk)
            if data := sink.take():
                yield data
        await to_thread.run_sync(entry.close)
        if data := sink.take():
            yield data
    await to_thread.run_sync(archive.close)
    yield sink.take()
