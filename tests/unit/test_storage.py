"""FilesystemBlobStore: staging, atomic commit, reads, deletes, health and sweeps."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from dicomweb.storage.filesystem import FilesystemBlobStore

KEY = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
MIB = 1024 * 1024


@pytest.fixture(params=[True, False], ids=["direct-io", "page-cache"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> FilesystemBlobStore:
    """The store with O_DIRECT writes (where the filesystem allows) and without."""
    return FilesystemBlobStore(tmp_path / "store", direct_io=request.param)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


async def put(store: FilesystemBlobStore, key: str, data: bytes) -> bool:
    staged = store.stage()
    await staged.write(data)
    return await staged.commit(key)


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


async def test_many_small_writes_give_size_and_sha256(store: FilesystemBlobStore) -> None:
    data = payload(200_003)
    staged = store.stage()
    rng = random.Random(1)
    position = 0
    while position < len(data):
        step = rng.randint(0, 997)
        await staged.write(data[position : position + step])
        position += step
    info = await staged.finish()
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    # The staging file holds everything once finished, for parsing before commit.
    assert staged.path.read_bytes() == data
    assert staged.path.parent == store.tmp_dir


async def test_finish_twice_returns_the_same_info(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    await staged.write(b"abc")
    first = await staged.finish()
    assert await staged.finish() == first
    assert first.sha256 == hashlib.sha256(b"abc").hexdigest()


async def test_empty_blob(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    info = await staged.finish()
    assert info.size == 0
    assert info.sha256 == hashlib.sha256(b"").hexdigest()
    assert await staged.commit(KEY) is True
    assert await store.size(KEY) == 0
    assert [c async for c in store.iter_bytes(KEY)] == []


async def test_write_after_finish_is_refused(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    await staged.write(b"abc")
    await staged.finish()
    with pytest.raises(RuntimeError):
        await staged.write(b"more")
    assert (await staged.finish()).size == 3


async def test_commit_publishes_and_removes_staging(store: FilesystemBlobStore) -> None:
    data = payload(300_000, seed=2)
    staged = store.stage()
    for start in range(0, len(data), 4096):
        await staged.write(data[start : start + 4096])
    assert await staged.commit(KEY) is True

    assert not staged.path.exists()
    assert files_under(store.tmp_dir) == []
    assert await store.size(KEY) == len(data)
    assert await store.read_range(KEY, 0, len(data)) == data
    assert await store.read_range(KEY, 1234, 5000) == data[1234:6234]
    assert await store.read_range(KEY, len(data) - 10, 100) == data[-10:]
    assert await store.read_range(KEY, len(data), 10) == b""
    assert b"".join([c async for c in store.iter_bytes(KEY)]) == data


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 0),
        (1, 2),
        (100, 70_000),
        (65_536, 65_537),
        (299_999, None),
        (250_000, 400_000),
        (300_000, None),
        (500_000, None),
        (10, 5),
    ],
)
async def test_iter_bytes_ranges(store: FilesystemBlobStore, start: int, end: int | None) -> None:
    data = payload(300_000, seed=3)
    await put(store, KEY, data)
    chunks = [c async for c in store.iter_bytes(KEY, start, end, chunk_size=8192)]
    assert b"".join(chunks) == data[start:end]
    assert all(0 < len(c) <= 8192 for c in chunks)


async def test_commit_to_existing_key_keeps_the_first(store: FilesystemBlobStore) -> None:
    assert await put(store, KEY, b"first content") is True
    second = store.stage()
    await second.write(b"second, different content")
    assert await second.commit(KEY) is False
    assert await store.read_range(KEY, 0, 100) == b"first content"
    assert await store.size(KEY) == len(b"first content")
    assert not second.path.exists()
    assert files_under(store.tmp_dir) == []


async def test_abort_removes_staging_and_is_idempotent(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    await staged.write(payload(2 * MIB))  # flushed: the staging file exists now
    assert staged.path.exists()
    await staged.abort()
    assert not staged.path.exists()
    await staged.abort()
    assert files_under(store.tmp_dir) == []
    assert files_under(store.blob_dir) == []


async def test_abort_after_finish_and_before_any_write(store: FilesystemBlobStore) -> None:
    finished = store.stage()
    await finished.write(b"abc")
    await finished.finish()
    assert finished.path.exists()
    await finished.abort()
    assert not finished.path.exists()

    untouched = store.stage()
    await untouched.abort()
    await untouched.abort()
    assert files_under(store.tmp_dir) == []


async def test_abort_after_commit_keeps_the_blob(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    await staged.write(b"kept")
    assert await staged.commit(KEY)
    await staged.abort()
    assert await store.read_range(KEY, 0, 10) == b"kept"


async def test_writes_over_a_mebibyte_are_flushed(store: FilesystemBlobStore) -> None:
    data = payload(3 * MIB + 12345, seed=4)
    staged = store.stage()
    chunk = 100_000
    for start in range(0, len(data), chunk):
        await staged.write(data[start : start + chunk])
        written = start + len(data[start : start + chunk])
        if written >= 2 * MIB:
            # Data does not pile up in memory: most of it is on disk before finish.
            assert staged.path.stat().st_size >= written - MIB
    info = await staged.finish()
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await staged.commit(KEY)
    assert await store.read_range(KEY, 0, len(data)) == data


async def test_one_large_write(store: FilesystemBlobStore) -> None:
    data = payload(5 * MIB + 1, seed=5)
    staged = store.stage()
    await staged.write(data[:10])
    await staged.write(data[10:])
    info = await staged.finish()
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await staged.commit(KEY)
    assert b"".join([c async for c in store.iter_bytes(KEY, chunk_size=MIB)]) == data


BAD_KEYS = [
    "/etc/passwd",
    "/abs",
    "../escape",
    "a/../../escape",
    "..",
    ".",
    "a/./b",
    "a//b",
    "a/",
    "/",
    "",
    "a\\b",
    "..\\escape",
    "a b",
    "a/b\n",
    "x" * 513,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_refused(
    store: FilesystemBlobStore, tmp_path: Path, key: str
) -> None:
    before = files_under(tmp_path)
    with pytest.raises(ValueError):
        store.blob_path(key)
    with pytest.raises(ValueError):
        await store.read_range(key, 0, 1)
    with pytest.raises(ValueError):
        await store.size(key)
    with pytest.raises(ValueError):
        await store.delete([key])
    with pytest.raises(ValueError):
        async for _ in store.iter_bytes(key):
            pass

    staged = store.stage()
    await staged.write(b"data")
    with pytest.raises(ValueError):
        await staged.commit(key)
    # Nothing was published anywhere and the staged blob is still usable.
    assert files_under(store.blob_dir) == []
    assert not (tmp_path / "escape").exists()
    assert files_under(tmp_path) == before
    assert await staged.commit(KEY) is True
    assert await store.read_range(KEY, 0, 10) == b"data"


async def test_long_valid_key_is_accepted(store: FilesystemBlobStore) -> None:
    key = "/".join(["k" * 100] * 5) + "/" + "z" * 7
    assert len(key) == 512
    assert await put(store, key, b"long")
    assert await store.read_range(key, 0, 10) == b"long"


async def test_delete(store: FilesystemBlobStore) -> None:
    await store.delete(["never/written"])
    await put(store, KEY, b"x")
    await store.delete([KEY])
    with pytest.raises(FileNotFoundError):
        await store.size(KEY)
    await store.delete([KEY])


async def test_missing_blob(store: FilesystemBlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        await store.size(KEY)
    with pytest.raises(FileNotFoundError):
        await store.read_range(KEY, 0, 1)


async def test_healthy(store: FilesystemBlobStore) -> None:
    assert await store.healthy() is True
    assert files_under(store.root) == []


async def test_unhealthy_when_the_staging_directory_is_gone(store: FilesystemBlobStore) -> None:
    shutil.rmtree(store.tmp_dir)
    assert await store.healthy() is False


class Referenced:
    """A `referenced` callback that knows some keys and records what it was asked."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.calls: list[list[str]] = []

    async def __call__(self, keys: Sequence[str]) -> set[str]:
        self.calls.append(list(keys))
        return self.known & set(keys)

    @property
    def asked(self) -> set[str]:
        return {key for call in self.calls for key in call}


async def test_sweep_removes_leftovers_and_orphans(store: FilesystemBlobStore) -> None:
    kept, orphan = KEY, "studies/9/series/9/instances/9"
    await put(store, kept, b"referenced")
    await put(store, orphan, b"orphan")
    leftover = store.stage()
    await leftover.write(b"crashed upload")
    await leftover.finish()
    for path in [store.blob_path(kept), store.blob_path(orphan), leftover.path]:
        age(path, 3600)

    referenced = Referenced({kept})
    report = await store.sweep(referenced, older_than_seconds=0)

    assert (report.temporary_removed, report.orphans_removed) == (1, 1)
    assert referenced.asked == {kept, orphan}
    assert await store.read_range(kept, 0, 100) == b"referenced"
    assert not store.blob_path(orphan).exists()
    assert not leftover.path.exists()

    again = await store.sweep(Referenced({kept}), older_than_seconds=0)
    assert (again.temporary_removed, again.orphans_removed) == (0, 0)
    assert await store.size(kept) == len(b"referenced")


async def test_sweep_with_zero_grace_removes_fresh_files(store: FilesystemBlobStore) -> None:
    await put(store, KEY, b"orphan")
    (store.tmp_dir / "leftover.part").write_bytes(b"x")
    age(store.blob_path(KEY), 1)
    age(store.tmp_dir / "leftover.part", 1)
    report = await store.sweep(Referenced(set()), older_than_seconds=0)
    assert (report.temporary_removed, report.orphans_removed) == (1, 1)
    assert files_under(store.root) == []


async def test_sweep_grace_keeps_young_files(store: FilesystemBlobStore) -> None:
    old_orphan, young_orphan = "old/orphan", "young/orphan"
    await put(store, old_orphan, b"old")
    await put(store, young_orphan, b"young")
    old_tmp, young_tmp = store.tmp_dir / "old.part", store.tmp_dir / "young.part"
    old_tmp.write_bytes(b"old")
    young_tmp.write_bytes(b"young")
    age(store.blob_path(old_orphan), 3600)
    age(old_tmp, 3600)
    age(store.blob_path(young_orphan), 60)
    age(young_tmp, 60)

    referenced = Referenced(set())
    report = await store.sweep(referenced, older_than_seconds=600)

    assert (report.temporary_removed, report.orphans_removed) == (1, 1)
    assert young_orphan not in referenced.asked
    assert await store.read_range(young_orphan, 0, 10) == b"young"
    assert young_tmp.read_bytes() == b"young"
    assert not store.blob_path(old_orphan).exists()
    assert not old_tmp.exists()


async def test_sweep_does_not_touch_an_open_staged_blob(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    await staged.write(payload(2 * MIB))
    report = await store.sweep(Referenced(set()), older_than_seconds=600)
    assert report.temporary_removed == 0
    await staged.write(b"tail")
    assert await staged.commit(KEY)
    assert await store.size(KEY) == 2 * MIB + 4


async def test_sweep_asks_about_keys_in_bounded_batches(store: FilesystemBlobStore) -> None:
    keys = [f"batch/{i:04d}" for i in range(1203)]
    (store.blob_dir / "batch").mkdir()
    for key in keys:
        path = store.blob_path(key)
        path.write_bytes(b"x")
        age(path, 3600)
    known = set(keys[::2])
    referenced = Referenced(known)

    report = await store.sweep(referenced, older_than_seconds=0)

    # The callback queries an index, so it is never handed every key at once.
    assert len(referenced.calls) > 1
    assert all(0 < len(call) < len(keys) for call in referenced.calls)
    assert referenced.asked == set(keys)
    assert sum(len(call) for call in referenced.calls) == len(keys)
    assert report.orphans_removed == len(keys) - len(known)
    remaining = {p.relative_to(store.blob_dir).as_posix() for p in files_under(store.blob_dir)}
    assert remaining == known


async def test_commit_after_abort_publishes_nothing(store: FilesystemBlobStore) -> None:
    staged = store.stage()
    await staged.write(b"some data")
    await staged.abort()
    with pytest.raises(RuntimeError):
        await staged.commit(KEY)
    assert files_under(store.blob_dir) == []


async def test_falls_back_where_direct_io_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filesystems that refuse O_DIRECT (EINVAL) get writes through the page cache."""
    real_open = os.open

    def refusing_open(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    store = FilesystemBlobStore(tmp_path)
    staged = store.stage()
    data = payload(3 * 1024 * 1024 + 17)
    await staged.write(data)
    assert await staged.commit("a/b.dcm") is True
    assert store.blob_path("a/b.dcm").read_bytes() == data
    assert store.direct_io is False
