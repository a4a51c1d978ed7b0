"""BlobStore on a local or shared filesystem.

Layout under the root: ``tmp/`` holds staging files, ``blobs/<key>`` the committed ones.
A commit is fsync of the file, a hard link into place (which fails rather than replaces
when the key exists), and fsync of the directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread

from dicomweb.storage.base import BlobInfo, SweepReport

# Keys are built by the ingest path from validated UIDs; this is a second guard so
# that nothing outside the blob tree can ever be named.
_KEY = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]*(/[0-9A-Za-z_-][0-9A-Za-z._-]*)*")
_BUFFER = 1 << 20
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


class FilesystemStagedBlob:
    """A staging file; writes are buffered and handed to a thread a megabyte at a time."""

    def __init__(self, store: FilesystemBlobStore) -> None:
        self._store = store
        self._path = store.tmp_dir / f"{uuid.uuid4().hex}.part"
        self._file: BinaryIO | None = None
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._info: BlobInfo | None = None
        self._done = False

    @property
    def path(self) -> Path:
        return self._path

    async def write(self, chunk: bytes) -> None:
        if self._info is not None or self._done:
            raise RuntimeError("write after finish")
        self._buffer += chunk
        if len(self._buffer) >= _BUFFER:
            data = bytes(self._buffer)
            self._buffer.clear()
            await to_thread.run_sync(self._write_sync, data)

    def _write_sync(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self._path, "xb")  # noqa: SIM115 - closed in finish/abort
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)

    def _finish_sync(self, data: bytes) -> BlobInfo:
        self._write_sync(data)
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return BlobInfo(size=self._size, sha256=self._hash.hexdigest())

    async def finish(self) -> BlobInfo:
        if self._info is None:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._info = await to_thread.run_sync(self._finish_sync, data)
        return self._info

    def _commit_sync(self, key: str) -> bool:
        target = self._store.blob_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
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
        if created:
            _fsync_dir(target.parent)
        self._path.unlink(missing_ok=True)
        return created

    async def commit(self, key: str) -> bool:
        _check_key(key)
        if self._done:
            raise RuntimeError("commit after abort or commit")
        await self.finish()
        created = await to_thread.run_sync(self._commit_sync, key)
        self._done = True
        return created

    def _abort_sync(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            self._buffer.clear()
            await to_thread.run_sync(self._abort_sync)


class FilesystemBlobStore:
    """Blobs as files below one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.blob_dir = root / "blobs"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    def blob_path(self, key: str) -> Path:
        """The file of the blob `key`."""
        return self.blob_dir / _check_key(key)

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

    async def delete(self, key: str) -> None:
        path = self.blob_path(key)
        await to_thread.run_sync(lambda: path.unlink(missing_ok=True))

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
            for key in batch:
                if key not in known:
                    await self.delete(key)
                    orphans += 1
        return SweepReport(temporary_removed=temporary, orphans_removed=orphans)

    def _sweep_tmp(self, cutoff: float) -> int:
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
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
