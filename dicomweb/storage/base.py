"""The BlobStore protocol: stage, commit or abort, read, delete.

A blob is written to a staging area first and becomes visible under its key only
by an atomic commit, so a crash leaves either nothing or a whole blob.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What is known of a staged blob once all of it was written."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep removed."""

    temporary_removed: int
    orphans_removed: int


class StagedBlob(Protocol):
    """A blob being written; nothing is visible until `commit`."""

    @property
    def path(self) -> Path:
        """A local file holding what was written so far, for parsing before commit."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append bytes."""
        ...

    async def finish(self) -> BlobInfo:
        """Flush everything to stable storage; no more writes after this."""
        ...

    async def commit(self, key: str) -> bool:
        """Publish the blob under `key`, atomically and durably.

        Returns False if a blob already exists under `key` (it is kept, the staged one
        dropped): keys are derived from content, so an existing blob is the same data.
        """
        ...

    async def seal(self, name: Callable[[bytes | Path, BlobInfo], str]) -> tuple[str, bool]:
        """finish() and commit() in one step, under the key that `name` gives.

        `name` runs in a worker thread with the blob's bytes (or its local file when
        they are not held in memory) and its BlobInfo; it may raise to refuse the blob,
        which then stays staged for abort(). Returns (key, created) as commit() does.
        """
        ...

    async def abort(self) -> None:
        """Drop the staged data. Safe to call more than once and after commit."""
        ...


class BlobStore(Protocol):
    """Where instance files are kept."""

    def stage(self) -> StagedBlob:
        """Start writing a new blob."""
        ...

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read `length` bytes at `offset` of the blob `key`."""
        ...

    def iter_bytes(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Stream the bytes [start, end) of the blob `key`."""
        ...

    async def size(self, key: str) -> int:
        """The size of the blob `key`; FileNotFoundError if it does not exist."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove the blobs `keys`, those that exist."""
        ...

    async def healthy(self) -> bool:
        """Whether blobs can be written and read now."""
        ...

    async def sweep(
        self,
        referenced: Callable[[Sequence[str]], Awaitable[set[str]]],
        older_than_seconds: float,
    ) -> SweepReport:
        """Remove leftover staging files and blobs that `referenced` does not know.

        Only entries untouched for `older_than_seconds` are candidates, so blobs that a
        concurrent writer is about to index survive.
        """
        ...
