"""The rendered-image cache: memory and disk bounds, eviction order, sharing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dicomweb.rendercache import RenderCache


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


async def test_memory_hit_then_disk_hit(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, memory_bytes=100, disk_bytes=1000)
    assert await cache.get(key("a")) is None
    await cache.put(key("a"), b"x" * 10)
    assert await cache.get(key("a")) == b"x" * 10
    assert (cache.hits, cache.disk_hits, cache.misses) == (1, 0, 1)
    # another process (or a restart) finds it on disk
    other = RenderCache(tmp_path, memory_bytes=100, disk_bytes=1000)
    assert await other.get(key("a")) == b"x" * 10
    assert (other.hits, other.disk_hits, other.misses) == (0, 1, 0)
    assert await other.get(key("a")) == b"x" * 10
    assert other.hits == 1  # promoted to memory


async def test_memory_drops_the_least_recently_used(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, memory_bytes=30, disk_bytes=0)
    for name in ("a", "b", "c"):
        await cache.put(key(name), name.encode() * 10)
    assert await cache.get(key("a")) is not None  # a is now the most recent
    await cache.put(key("d"), b"d" * 10)
    assert await cache.get(key("b")) is None
    assert await cache.get(key("a")) is not None
    assert not list(tmp_path.iterdir())  # disk_bytes 0 keeps nothing on disk
    await cache.put(key("big"), b"z" * 31)  # larger than the whole memory: not kept
    assert await cache.get(key("big")) is None


async def test_disk_is_bounded_and_evicts_the_oldest(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, memory_bytes=0, disk_bytes=100)
    for number in range(5):
        await cache.put(key(str(number)), bytes(20))
        path = tmp_path / key(str(number))[:2] / key(str(number))
        os.utime(path, (1000 + number, 1000 + number))  # put in order, a second apart
    assert cache.disk_usage() == 100
    await cache.put(key("5"), bytes(20))
    # over 100 bytes: the oldest go until at most 90 remain
    assert cache.disk_usage() <= 90
    assert await cache.get(key("0")) is None
    assert await cache.get(key("1")) is None
    assert await cache.get(key("5")) == bytes(20)


async def test_keys_must_be_digests(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, memory_bytes=0, disk_bytes=100)
    with pytest.raises(ValueError, match="hexadecimal"):
        await cache.put("../../etc/passwd", b"x")
