"""The arena allocator: best fit, coalescing, alignment accounting, and a measured churn."""

from __future__ import annotations

import bisect
import random

import pytest

from pocketlib.tiers.allocator import Allocator

KiB = 1024
MiB = 1024 * KiB


class LiveBlocks:
    """The blocks a test holds, kept sorted, checking that none ever overlap."""

    def __init__(self, alloc: Allocator) -> None:
        self.alloc = alloc
        self.starts: list[int] = []
        self.ends: dict[int, int] = {}

    def add(self, start: int, length: int) -> None:
        size = self.alloc.rounded(length)
        if size == 0:
            return
        assert start % self.alloc.align == 0, f"unaligned block at {start}"
        assert start >= 0, "block outside the arena"
        assert start + size <= self.alloc.capacity, "block outside the arena"
        i = bisect.bisect_left(self.starts, start)
        if i > 0:
            prev = self.starts[i - 1]
            assert self.ends[prev] <= start, f"block {start} overlaps the block at {prev}"
        if i < len(self.starts):
            assert start + size <= self.starts[i], f"block {start} overlaps {self.starts[i]}"
        self.starts.insert(i, start)
        self.ends[start] = start + size

    def remove(self, start: int) -> None:
        self.starts.remove(start)
        del self.ends[start]

    @property
    def used(self) -> int:
        return sum(end - start for start, end in self.ends.items())


def must(start: int | None) -> int:
    """An allocation that must have succeeded."""
    assert start is not None, "the allocator refused a block it had room for"
    return start


def fragmentation(alloc: Allocator) -> float:
    """1 - largest free block / free bytes (0: all free space is one block)."""
    free = alloc.free_bytes
    return 0.0 if free == 0 else 1.0 - alloc.largest_free / free


def test_alignment_and_accounting() -> None:
    alloc = Allocator(1000, align=64)
    assert alloc.capacity == 960  # rounded down to the alignment
    assert alloc.rounded(0) == 0
    assert alloc.rounded(1) == 64
    assert alloc.rounded(64) == 64
    assert alloc.rounded(65) == 128
    a = must(alloc.allocate(1))
    b = must(alloc.allocate(65))
    assert a % 64 == 0
    assert b % 64 == 0
    assert alloc.used == 64 + 128
    assert alloc.free_bytes == 960 - 192
    alloc.free(b, 65)
    alloc.free(a, 1)
    assert alloc.used == 0
    assert (alloc.free_blocks, alloc.largest_free) == (1, 960)


def test_bad_alignment_and_foreign_blocks_are_refused() -> None:
    for align in (0, -64, 48):
        with pytest.raises(ValueError, match="power of two"):
            Allocator(1024, align)
    alloc = Allocator(1024, 64)
    with pytest.raises(ValueError, match="not in this arena"):
        alloc.free(1024, 64)
    with pytest.raises(ValueError, match="not in this arena"):
        alloc.free(32, 64)


def test_best_fit_picks_the_smallest_block_that_fits() -> None:
    alloc = Allocator(64 * 100, align=64)
    # Carve free holes of 5, 2 and 3 blocks separated by live blocks.
    starts = [must(alloc.allocate(64 * n)) for n in (5, 1, 2, 1, 3, 1)]
    assert alloc.allocate(64 * 87) is not None  # the rest of the arena
    hole5, _, hole2, _, hole3, _ = starts
    alloc.free(hole5, 64 * 5)
    alloc.free(hole2, 64 * 2)
    alloc.free(hole3, 64 * 3)
    assert alloc.free_blocks == 3
    assert alloc.allocate(64 * 3) == hole3  # exact fit rather than the first that fits
    assert alloc.allocate(64 * 2) == hole2
    assert alloc.allocate(64) == hole5  # only the 5-block hole is left: split it
    assert alloc.largest_free == 64 * 4
    assert alloc.allocate(64 * 5) is None  # 4 blocks free, contiguous: no room for 5


def test_allocate_reports_none_when_full() -> None:
    alloc = Allocator(64 * 4, 64)
    assert alloc.allocate(64 * 4) == 0
    assert alloc.allocate(1) is None
    assert alloc.allocate_extents(1) is None
    assert alloc.allocate(0) is not None  # a zero-byte value takes no space
    assert alloc.allocate_extents(0) == []
    assert alloc.used == 64 * 4


def test_coalescing_returns_to_one_block() -> None:
    alloc = Allocator(64 * 1000, 64)
    blocks = []
    for n in range(1, 40):
        start = alloc.allocate(64 * n // 3 + 1)
        assert start is not None
        blocks.append((start, 64 * n // 3 + 1))
    rng = random.Random(20240607)
    rng.shuffle(blocks)
    for start, n in blocks:
        alloc.free(start, n)
    assert alloc.used == 0
    assert alloc.free_blocks == 1
    assert alloc.largest_free == alloc.capacity
    assert alloc.allocate(alloc.capacity) == 0


def test_freeing_merges_with_both_neighbours() -> None:
    alloc = Allocator(64 * 3, 64)
    a, b, c = (must(alloc.allocate(64)) for _ in range(3))
    alloc.free(a, 64)
    alloc.free(c, 64)
    assert alloc.free_blocks == 2
    alloc.free(b, 64)
    assert (alloc.free_blocks, alloc.largest_free) == (1, 64 * 3)


def test_allocate_extents_spreads_a_value_when_fragmented() -> None:
    alloc = Allocator(64 * 20, 64)
    starts = [must(alloc.allocate(64)) for _ in range(20)]
    live = LiveBlocks(alloc)
    for s in starts:
        live.add(s, 64)
    # Free holes of 1, 2 and 3 blocks, none adjacent to another.
    holes = [(0, 1), (3, 2), (7, 3)]
    for first, n in holes:
        for i in range(first, first + n):
            start = starts[i]
            alloc.free(start, 64)
            live.remove(start)
    assert (alloc.free_blocks, alloc.largest_free, alloc.free_bytes) == (3, 192, 384)
    assert alloc.allocate(64 * 4) is None  # no single block is large enough
    extents = alloc.allocate_extents(64 * 5 + 10)  # 6 blocks' worth: every hole
    assert extents is not None
    assert [length for _, length in extents] == [192, 128, 10]  # largest holes first
    assert sum(length for _, length in extents) == 64 * 5 + 10
    for start, length in extents:
        live.add(start, length)
    assert alloc.free_bytes == 0
    assert alloc.used == live.used == alloc.capacity
    assert alloc.allocate_extents(1) is None
    for start, length in extents:
        alloc.free(start, length)
    assert alloc.free_bytes == 384


def test_allocate_extents_refuses_more_than_is_free() -> None:
    alloc = Allocator(64 * 10, 64)
    for _ in range(5):
        assert alloc.allocate(64) is not None
    before = (alloc.used, alloc.free_blocks, alloc.largest_free)
    assert alloc.allocate_extents(64 * 5 + 1) is None
    assert (alloc.used, alloc.free_blocks, alloc.largest_free) == before


def test_churn_of_mixed_sizes_measures_fragmentation() -> None:
    capacity = 64 * MiB
    alloc = Allocator(capacity, 64)
    live = LiveBlocks(alloc)
    values: dict[int, list[tuple[int, int]]] = {}  # value id -> extents
    rng = random.Random(20240607)
    refused = split = 0
    for op in range(5000):
        if values and (rng.random() < 0.45 or alloc.free_bytes < 4 * MiB):
            vid = rng.choice(list(values))
            for start, length in values.pop(vid):
                alloc.free(start, length)
                live.remove(start)
        else:
            # Log-uniform sizes from 64 B to 1 MiB: many small values, some large ones.
            nbytes = int(2 ** rng.uniform(6, 20)) + rng.randrange(64)
            extents = alloc.allocate_extents(nbytes)
            if extents is None:
                refused += 1
                continue
            split += len(extents) > 1
            assert sum(length for _, length in extents) == nbytes
            for start, length in extents:
                live.add(start, length)
            values[op] = extents
        assert alloc.used + alloc.free_bytes == alloc.capacity
        assert alloc.used == live.used
    frag = fragmentation(alloc)
    print(
        f"\nallocator churn: {len(values)} live values, {alloc.used / MiB:.1f} MiB used, "
        f"{alloc.free_blocks} free blocks, fragmentation {frag:.3f}, "
        f"{split} values split, {refused} refused"
    )
    assert 0.0 <= frag < 0.9
    assert refused == 0
    for vid in list(values):
        for start, length in values.pop(vid):
            alloc.free(start, length)
            live.remove(start)
    assert alloc.used == 0
    assert alloc.free_blocks == 1
    assert fragmentation(alloc) == 0.0
    assert alloc.allocate(capacity) == 0


def test_freed_small_blocks_are_reused_first_and_merged_when_needed() -> None:
    alloc = Allocator(64 * KiB, 64)
    live = LiveBlocks(alloc)
    small = [must(alloc.allocate(1000)) for _ in range(16)]  # 1 KiB blocks, cacheable
    for start in small:
        live.add(start, 1000)
    big = must(alloc.allocate(alloc.free_bytes))  # the rest of the arena
    live.add(big, alloc.capacity - 16 * KiB)
    assert alloc.free_bytes == 0
    # Freed small blocks come straight back for the same size (the last freed first) ...
    alloc.free(small[3], 1000)
    live.remove(small[3])
    assert alloc.allocate(1000) == small[3]
    live.add(small[3], 1000)
    # ... and a request no cached size can meet merges the cache into free blocks first:
    # eight adjacent 1 KiB blocks become one 8 KiB block, which a large value can take.
    for start in sorted(small)[:8]:
        alloc.free(start, 1000)
        live.remove(start)
    assert alloc.free_bytes == 8 * KiB
    start = must(alloc.allocate(8 * KiB))
    live.add(start, 8 * KiB)
    assert alloc.used == live.used
    alloc.free(start, 8 * KiB)
    assert (alloc.free_blocks, alloc.largest_free) == (1, 8 * KiB)
