"""BlobStore on a local or shared filesystem.

Layout under the root: ``tmp/`` holds staging files, ``blobs/<key>`` the committed ones.
A commit is a hard link into place (which fails rather than replaces when the key
exists), fsync of the file, and fsync of the directory.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from anyio import to_thread

from dicomweb.storage.base import BlobInfo, SweepReport

# Keys are built by the ingest path from validated UIDs; this is a second guard so
# that nothing outside the blob tree can ever be named.
_KEY = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]*(/[0-9A-Za-z_-][0-9A-Za-z._-]*)*")
_BUFFER = 1 << 20
_ALIGN = 4096
_SWEEP_BATCH = 500


def _check_key(key: str) -> str:
    if len(key) > 512 or not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"invalid blob key {key!r}")
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Buffers:
    """A few page-aligned 1 MiB buffers, reused: O_DIRECT needs aligned memory, and
    fresh anonymous memory costs a page fault per 4 KiB."""

    def __init__(self, keep: int = 16) -> None:
        self._free: list[mmap.mmap] = []
        self._keep = keep

    def take(self) -> mmap.mmap:
        return self._free.pop() if self._free else mmap.mmap(-1, _BUFFER)

    def give(self, buffer: mmap.mmap) -> None:
        if len(self._free) < self._keep:
            self._free.append(buffer)
        else:
            buffer.close()


class FilesystemStagedBlob:
    """A staging file, written a megabyte at a time from an aligned buffer in a thread.

    The page cache is bypassed where the filesystem allows it (O_DIRECT): a blob is
    written once and read rarely, and filling the page cache with new pages costs
    more CPU than the write itself.
    """

    def __init__(self, store: FilesystemBlobStore) -> None:
        self._store = store
        self._path = store.tmp_dir / f"{uuid.uuid4().hex}.part"
        self._fd: int | None = None
        self._direct = store.direct_io
        self._buffer: mmap.mmap | None = store.buffers.take()
        self._fill = 0
        self._flushed = False
        self._hash = hashlib.sha256()
        self._size = 0
        self._info: BlobInfo | None = None
        self._done = False

    @property
    def path(self) -> Path:
        return self._path

    async def write(self, chunk: bytes) -> None:
        if self._info is not None or self._done or self._buffer is None:
            raise RuntimeError("write after finish")
        view = memoryview(chunk)
        while view:
            room = _BUFFER - self._fill
            take = min(room, len(view))
            self._buffer[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == _BUFFER:
                await to_thread.run_sync(self._flush_sync, False)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if self._direct:
            try:
                return os.open(self._path, flags | os.O_DIRECT, 0o644)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # tmpfs and some network filesystems refuse O_DIRECT.
                self._store.direct_io = self._direct = False
        return os.open(self._path, flags, 0o644)

    def _flush_sync(self, final: bool) -> None:
        assert self._buffer is not None
        if self._fd is None:
            self._fd = self._open()
        data = memoryview(self._buffer)[: self._fill]
        self._hash.update(data)
        if self._direct and final and self._fill % _ALIGN:
            # O_DIRECT writes whole blocks: pad the tail, then cut the file to size.
            padded = -(-self._fill // _ALIGN) * _ALIGN
            self._buffer[self._fill : padded] = bytes(padded - self._fill)
            _write_all(self._fd, memoryview(self._buffer)[:padded])
            os.ftruncate(self._fd, self._size + self._fill)
        else:
            _write_all(self._fd, data)
        data.release()
        self._size += self._fill
        self._fill = 0
        self._flushed = True

    def _finish_sync(self) -> BlobInfo:
        self._flush_sync(True)
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        return BlobInfo(size=self._size, sha256=self._hash.hexdigest())

    async def finish(self) -> BlobInfo:
        if self._info is None:
            if self._done:
                raise RuntimeError("finish after abort")
            self._info = await to_thread.run_sync(self._finish_sync)
        return self._info

    def _release(self) -> None:
        if self._buffer is not None:
            self._store.buffers.give(self._buffer)
            self._buffer = None

    def _commit_sync(self, key: str) -> bool:
        target = self._store.blob_path(key)
        self._store.make_dirs(target.parent)
        try:
            os.link(self._path, target)
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:
            # Filesystems without hard links: rename, after checking for an existing blob.
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            created = not target.exists()
            if created:
                self._path.rename(target)
        if self._fd is not None:
            # Linked first, then synced: on a journalling filesystem the file's fsync
            # commits its new name in the same journal commit, and the directory's
            # fsync below finds nothing left to write. Until the index commits, the
            # name is an unindexed blob, which the start-up sweep removes.
            if created:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if created:
            _fsync_dir(target.parent)
        self._path.unlink(missing_ok=True)
        return created

    async def commit(self, key: str) -> bool:
        _check_key(key)
        _, created = await self.seal(lambda _source, _info: key)
        return created

    def _seal_sync(self, name: Callable[[bytes | Path, BlobInfo], str]) -> tuple[str, bool]:
        assert self._buffer is not None
        # Bytes still in the buffer are handed over as they are: cheaper than a read back.
        memory = None if self._flushed else self._buffer[: self._fill]
        if self._info is None:
            # Written but not yet synced: _commit_sync syncs after linking.
            self._flush_sync(True)
            self._info = BlobInfo(size=self._size, sha256=self._hash.hexdigest())
        key = _check_key(name(self._path if memory is None else memory, self._info))
        self._done = True
        return key, self._commit_sync(key)

    async def seal(self, name: Callable[[bytes | Path, BlobInfo], str]) -> tuple[str, bool]:
        if self._done:
            raise RuntimeError("seal or commit after commit or abort")
        try:
            return await to_thread.run_sync(self._seal_sync, name)
        finally:
            if self._done:
                self._release()

    def _abort_sync(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._path.unlink(missing_ok=True)

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            self._release()
            await to_thread.run_sync(self._abort_sync)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class FilesystemBlobStore:
    """Blobs as files below one root directory."""

    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.blob_dir = root / "blobs"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.buffers = _Buffers()
        self.direct_io = direct_io

    def blob_path(self, key: str) -> Path:
        """The file of the blob `key`."""
        return self.blob_dir / _check_key(key)

    def make_dirs(self, directory: Path) -> None:
        """Create `directory` below the blob tree; each new entry is made durable by an
        fsync of its parent, so a committed blob's path survives a crash."""
        if directory.is_dir():
            return
        self.make_dirs(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            return
        _fsync_dir(directory.parent)

    def stage(self) -> FilesystemStagedBlob:
        return FilesystemStagedBlob(self)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        path = self.blob_path(key)

        def read() -> bytes:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(length)

        return await to_thread.run_sync(read)

    async def iter_bytes(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = _BUFFER
    ) -> AsyncIterator[bytes]:
        path = self.blob_path(key)
        f = await to_thread.run_sync(open, path, "rb")
        try:
            await to_thread.run_sync(f.seek, start)
            position = start
            while end is None or position < end:
                want = chunk_size if end is None else min(chunk_size, end - position)
                data = await to_thread.run_sync(f.read, want)
                if not data:
                    break
                position += len(data)
                yield data
        finally:
            await to_thread.run_sync(f.close)

    async def size(self, key: str) -> int:
        path = self.blob_path(key)
        return (await to_thread.run_sync(path.stat)).st_size

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self.blob_path(key) for key in keys]

        def unlink() -> None:
            # Directories stay: a concurrent commit may have just made them.
            for path in paths:
                path.unlink(missing_ok=True)

        await to_thread.run_sync(unlink)

    async def healthy(self) -> bool:
        def probe() -> bool:
            probe_path = self.tmp_dir / f"health-{uuid.uuid4().hex}"
            try:
                probe_path.write_bytes(b"ok")
                return probe_path.read_bytes() == b"ok"
            except OSError:
                return False
            finally:
                probe_path.unlink(missing_ok=True)

        return await to_thread.run_sync(probe)

    async def sweep(
        self,
        referenced: Callable[[Sequence[str]], Awaitable[set[str]]],
        older_than_seconds: float,
    ) -> SweepReport:
        cutoff = time.time() - older_than_seconds
        temporary = await to_thread.run_sync(self._sweep_tmp, cutoff)
        orphans = 0
        candidates = await to_thread.run_sync(self._old_blob_keys, cutoff)
        for start in range(0, len(candidates), _SWEEP_BATCH):
            batch = candidates[start : start + _SWEEP_BATCH]
            known = await referenced(batch)
            unknown = [key for key in batch if key not in known]
            await self.delete(unknown)
            orphans += len(unknown)
        return SweepReport(temporary_removed=temporary, orphans_removed=orphans)

    def _sweep_tmp(self, cutoff: float) -> int:
        removed = 0
        with os.scandir(self.tmp_dir) as entries:
            for entry in entries:
                try:
                    old = entry.is_file() and entry.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue  # committed or aborted meanwhile
                if old:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
        return removed

    def _old_blob_keys(self, cutoff: float) -> list[str]:
        keys: list[str] = []
        for directory, _dirs, files in os.walk(self.blob_dir):
            for name in files:
                path = Path(directory) / name
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue
                keys.append(path.relative_to(self.blob_dir).as_posix())
        return keys
