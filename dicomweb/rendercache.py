"""The cache of rendered images and thumbnails: in memory, then on disk.

A key names everything that makes a rendered result (the instance's content hash,
frames, media type and every parameter; see `rendered.cache_key`), so an entry never
goes stale: a changed instance has another hash and so another key. Both levels are
bounded by bytes. Memory drops the least recently used entry; disk (files under
`<data dir>/cache/rendered/`, shared by the processes and replicas using the data
directory) drops the files least recently used, by modification time, which a hit
refreshes. Disk work runs in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path
from typing import Final

from anyio import to_thread

from dicomweb.lru import SizedLRU

__all__ = ["RenderCache"]

# Eviction goes below the bound by this share, so that it runs once per many writes.
_EVICTION_MARGIN: Final = 0.1


class RenderCache:
    """Rendered results by key (hexadecimal digits), bounded in memory and on disk.

    `hits`, `disk_hits` and `misses` count lookups. A `disk_bytes` of 0 keeps nothing
    on disk.
    """

    def __init__(self, directory: Path, memory_bytes: int, disk_bytes: int) -> None:
        self.directory = directory
        self.memory_bytes = memory_bytes
        self.disk_bytes = disk_bytes
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self._memory: SizedLRU[str, bytes] = SizedLRU(memory_bytes)
        # Bytes this process believes are on disk: None until counted; a scan corrects
        # it before any eviction, as other processes write to the same directory.
        self._disk_size: int | None = None
        self._lock = threading.Lock()

    async def get(self, key: str) -> bytes | None:
        """The cached result for `key`, from memory or disk, or None."""
        value = self._memory.get(key)
        if value is not None:
            self.hits += 1
            return value
        if self.disk_bytes > 0:
            value = await to_thread.run_sync(self._disk_get, key)
            if value is not None:
                self.disk_hits += 1
                self._memory.put(key, value, len(value))
                return value
        self.misses += 1
        return None

    async def put(self, key: str, value: bytes) -> None:
        """Keep `value` for `key` in memory and on disk."""
        self._memory.put(key, value, len(value))
        if 0 < len(value) <= self.disk_bytes:
            await to_thread.run_sync(self._disk_put, key, value)

    def _path(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are hexadecimal digests, not {key[:16]!r}")
        return self.directory / key[:2] / key

    # Disk (worker threads)

    def _disk_get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            value = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # recently used: evicted last
        return value

    def _disk_put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside its place and renamed: a reader never sees half a file, and two
        # writers of one key leave one whole file. No fsync: a cache may lose entries.
        temporary = path.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(value)
        temporary.replace(path)
        with self._lock:
            if self._disk_size is None:
                self._disk_size = self._scan_size()
            else:
                self._disk_size += len(value)
            over = self._disk_size > self.disk_bytes
        if over:
            self._evict()

    def _files(self) -> list[tuple[float, int, Path]]:
        """(modification time, size, path) of every cached file."""
        found = []
        for path in self.directory.glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _scan_size(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self) -> None:
        """Remove the least recently used files until the total is below the bound."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        target = self.disk_bytes * (1 - _EVICTION_MARGIN)
        for _, size, path in files:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        with self._lock:
            self._disk_size = total

    def disk_usage(self) -> int:
        """Bytes of cached files on disk now (a directory scan)."""
        return self._scan_size()
