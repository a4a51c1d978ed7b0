"""The size-bounded LRU map behind the frame, rendered and metadata caches."""

from __future__ import annotations

import threading

from dicomweb.lru import SizedLRU


def test_keeps_the_most_recently_used_within_its_size() -> None:
    cache: SizedLRU[tuple[str, int], bytes] = SizedLRU(max_bytes=10)
    cache.put(("a", 1), b"1234", 4)
    cache.put(("a", 2), b"5678", 4)
    assert cache.get(("a", 1)) == b"1234"  # now the most recently used
    cache.put(("a", 3), b"9012", 4)  # 12 bytes: 2 goes
    assert cache.get(("a", 2)) is None
    assert cache.get(("a", 1)) == b"1234"
    assert cache.size == 8 and len(cache) == 2
    cache.put(("a", 4), b"x" * 11, 11)  # larger than the cache: not kept
    assert cache.get(("a", 4)) is None
    assert (cache.hits, cache.misses) == (2, 2)


def test_replacing_a_value_counts_its_new_size() -> None:
    cache: SizedLRU[str, str] = SizedLRU(max_bytes=100)
    cache.put("k", "old", 60)
    cache.put("k", "new", 30)
    assert cache.get("k") == "new"
    assert cache.size == 30 and len(cache) == 1


def test_threads_never_leave_it_over_its_bound() -> None:
    cache: SizedLRU[int, bytes] = SizedLRU(max_bytes=1000)

    def fill(start: int) -> None:
        for n in range(start, start + 2000):
            cache.put(n % 300, bytes(n % 50), n % 50)
            cache.get((n * 7) % 300)

    threads = [threading.Thread(target=fill, args=(k * 2000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.size <= 1000
    assert cache.size == sum(len(cache.get(k) or b"") for k in range(300))
