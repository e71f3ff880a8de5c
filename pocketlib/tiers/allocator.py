"""Space allocator for one contiguous arena: best fit, coalescing frees, exact accounting.

Free blocks are kept three ways: by start (to merge with the next block), by end (to merge
with the previous block) and in a list sorted by (size, start) for best-fit search with
bisect. Best fit keeps large blocks whole for large values; coalescing on every free means a
churned arena returns to one block once it is empty. When no single block is large enough but
enough bytes are free in total, :meth:`Allocator.allocate_extents` spreads a value over several
blocks (largest first), so a full-enough arena never refuses a value it has room for.

Small blocks (up to 4 KiB) that are freed go first to a per-size list and are handed out again
from it in O(1), as malloc's thread caches do: ephemeral small objects are overwritten and
deleted in storms, and a bisect-and-merge per operation is most of their cost. Those lists are
bounded (1/64 of the arena) and merged into the free blocks whenever a request cannot be met
otherwise, and before fragmentation is reported, so they never cause a refusal.

Not thread-safe: the tier that owns it serialises calls under its own lock.
"""

from __future__ import annotations

from bisect import bisect_left, insort

__all__ = ["Allocator"]

#: Freed blocks up to this size are cached per size for O(1) reuse.
_QUICK_MAX = 4096


class Allocator:
    """Hands out byte ranges ``(start, length)`` of an arena of ``capacity`` bytes."""

    def __init__(self, capacity: int, align: int = 64) -> None:
        if align <= 0 or align & (align - 1):
            raise ValueError("align must be a power of two")
        self.align = align
        self.capacity = capacity - capacity % align
        self.used = 0
        self._by_start: dict[int, int] = {}
        self._by_end: dict[int, int] = {}
        self._sizes: list[tuple[int, int]] = []
        self._quick: dict[int, list[int]] = {}  # rounded size -> starts of freed small blocks
        self._quick_bytes = 0
        self._quick_limit = self.capacity // 64
        if self.capacity:
            self._add_free(0, self.capacity)

    @property
    def free_bytes(self) -> int:
        """Bytes not allocated."""
        return self.capacity - self.used

    @property
    def largest_free(self) -> int:
        """The largest contiguous free block."""
        self._flush_quick()
        return self._sizes[-1][0] if self._sizes else 0

    @property
    def free_blocks(self) -> int:
        """Number of free blocks (1 means no fragmentation)."""
        self._flush_quick()
        return len(self._sizes)

    def rounded(self, nbytes: int) -> int:
        """Bytes actually taken by a value of ``nbytes`` (alignment included)."""
        return -(-nbytes // self.align) * self.align

    def allocate(self, nbytes: int) -> int | None:
        """Start of a contiguous block of ``rounded(nbytes)`` bytes, or None if none is free."""
        align = self.align
        need = -(-nbytes // align) * align
        if need <= _QUICK_MAX:
            if need == 0:
                return 0
            cached = self._quick.get(need)
            if cached:
                self._quick_bytes -= need
                self.used += need
                return cached.pop()
        sizes = self._sizes
        i = bisect_left(sizes, (need, -1))
        if i == len(sizes):
            if not self._quick_bytes:
                return None
            self._flush_quick()
            return self.allocate(nbytes)
        size, start = sizes[i]
        del sizes[i]
        by_start = self._by_start
        del by_start[start]
        if size > need:
            # Keep the tail of the block free: its end entry stays, pointing at the new start.
            rest = start + need
            by_start[rest] = size - need
            self._by_end[start + size] = rest
            insort(sizes, (size - need, rest))
        else:
            del self._by_end[start + size]
        self.used += need
        return start

    def allocate_extents(self, nbytes: int) -> list[tuple[int, int]] | None:
        """Blocks holding ``nbytes`` in order, as ``(start, length)``; None if too few are free.

        One block when one fits; otherwise the largest free blocks, so a value is split as
        little as possible. The last extent's length is the remainder, not rounded.
        """
        start = self.allocate(nbytes)
        if start is not None:
            return [(start, nbytes)] if nbytes else []
        if self.rounded(nbytes) > self.free_bytes:
            return None
        self._flush_quick()
        extents: list[tuple[int, int]] = []
        left = nbytes
        while left > 0:
            size, start = self._sizes[-1]
            take = min(size, self.rounded(left))
            self._remove_free(start, size)
            if size > take:
                self._add_free(start + take, size - take)
            self.used += take
            extents.append((start, min(take, left)))
            left -= take
        return extents

    def free(self, start: int, nbytes: int) -> None:
        """Return a block; it merges with free neighbours."""
        size = -(-nbytes // self.align) * self.align
        if size == 0:
            return
        if start < 0 or start + size > self.capacity or start % self.align:
            raise ValueError(f"block ({start}, {nbytes}) is not in this arena")
        self.used -= size
        if size <= _QUICK_MAX and self._quick_bytes + size <= self._quick_limit:
            self._quick.setdefault(size, []).append(start)
            self._quick_bytes += size
            return
        self._merge_free(start, size)

    def _merge_free(self, start: int, size: int) -> None:
        """Add a block to the free blocks, merged with its free neighbours."""
        end = start + size
        before = self._by_end.get(start)
        if before is not None:
            self._remove_free(before, start - before)
            start = before
        after = self._by_start.get(end)
        if after is not None:
            self._remove_free(end, after)
            end += after
        self._add_free(start, end - start)

    def reset(self, used: list[tuple[int, int]]) -> None:
        """Forget every allocation, then mark ``used`` extents (``(start, length)``) as taken.

        How a persistent tier rebuilds its allocator from what it finds on disk. ValueError
        if an extent is misaligned, outside the arena, or overlaps another.
        """
        self._by_start.clear()
        self._by_end.clear()
        self._sizes.clear()
        self._quick.clear()
        self._quick_bytes = 0
        self.used = 0
        pos = 0
        for start, length in sorted(used):
            size = self.rounded(length)
            if size == 0:
                continue
            if start % self.align or start < pos or start + size > self.capacity:
                raise ValueError(f"extent ({start}, {length}) is misaligned, overlaps, or is out")
            if start > pos:
                self._add_free(pos, start - pos)
            pos = start + size
            self.used += size
        if pos < self.capacity:
            self._add_free(pos, self.capacity - pos)

    def _flush_quick(self) -> None:
        """Merge every cached small block into the free blocks."""
        if not self._quick_bytes:
            return
        quick, self._quick, self._quick_bytes = self._quick, {}, 0
        for size, starts in quick.items():
            for start in starts:
                self._merge_free(start, size)

    def _add_free(self, start: int, size: int) -> None:
        self._by_start[start] = size
        self._by_end[start + size] = start
        insort(self._sizes, (size, start))

    def _remove_free(self, start: int, size: int) -> None:
        del self._by_start[start]
        del self._by_end[start + size]
        i = bisect_left(self._sizes, (size, start))
        del self._sizes[i]
