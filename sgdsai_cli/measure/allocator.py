"""A model of the CUDA caching allocator: replay allocations and frees, predict reserved bytes.

    model = CachingAllocatorModel(parse_alloc_conf("expandable_segments:True"))
    a = model.malloc(3 * MiB); model.free(a)
    replay(events, config).reserved_peak_bytes

The rules are those of ``c10/cuda/CUDACachingAllocator.cpp`` (``DeviceCachingAllocator``; read for
torch 2.11-2.13, where they have not changed):

- ``round_size``: requests are rounded up to ``kMinBlockSize`` = 512 bytes, or, where
  ``roundup_power2_divisions`` gives the size's power-of-two interval ``d > 1`` divisions and the
  size is above ``512 * d``, up to the next of ``d`` equal steps between two powers of two
  (``roundup_power2_next_division``).
- ``get_pool``: rounded sizes up to ``kSmallSize`` = 1 MiB go to the small pool, larger to the
  large pool; each pool keeps its free blocks per stream, ordered by (stream, size, address).
- ``get_allocation_size``: a new segment (``cudaMalloc``) is ``kSmallBuffer`` = 2 MiB for the small
  pool, ``kLargeBuffer`` = 20 MiB for requests under ``kMinLargeAlloc`` = 10 MiB, else the size
  rounded up to ``kRoundLarge`` = 2 MiB.
- ``get_free_block``: best fit, the smallest free block of the pool and stream at least as large;
  a request under ``max_split_size`` never takes a block at or above it, and a request at or above
  it takes only a block smaller than ``size + max_non_split_rounding`` (default ``kLargeBuffer``).
- ``should_split``: a small-pool block (and any block with expandable segments) is split when at
  least 512 bytes remain; a large-pool block when the request is under ``max_split_size`` and more
  than ``kSmallSize`` remains. The remainder goes back to the pool.
- ``free_block`` / ``try_merge_blocks``: a freed block merges with its free neighbours in the same
  segment; blocks of different segments never merge. Segments are kept (reserved) until released.
- ``expandable_segments``: one segment per stream and pool, a large virtual range mapped on demand
  in pages of ``kSmallBuffer`` (small pool) or ``kLargeBuffer`` (large pool), at the lowest address
  with enough free plus unmapped room (``find_expandable_block``, ``map_block``); best fit counts a
  block followed by unmapped space as that much larger.
- ``garbage_collect_cached_blocks``: only with a memory limit (``torch.cuda.
  set_per_process_memory_fraction``, here ``memory_limit_bytes``) and a threshold: when no free block
  fits and reserved is above ``threshold * limit``, whole free large-pool segments whose reuse age
  is at least the average are released until reserved is back under it. Ages count
  ``get_free_block`` calls on the pool since the block was cached.
- Under a memory limit a new segment that would pass it first makes the allocator release every
  cached unsplit segment and retry (``release_cached_blocks``); when that fails too the model counts
  an out-of-memory and stops growing (``ooms``).

Not modelled: the retry chain against the card's real free memory (the model never runs out
unless given ``memory_limit_bytes``), ``release_available_cached_blocks`` (freeing only enough
oversize blocks before the full release), CUDA-graph private pools and ``MemPool``s, cross-stream
use (``record_stream`` events delay a free; here a free is immediate), unmapping of expandable
pages on OOM or ``empty_cache``, IPC, ``cudaMallocAsync``, the per-process memory fraction's own
OOM messages, and the CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers outside the
allocator (``analysis.gpus.GPU.context_bytes`` is the measured allowance for those).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from sgdsai_cli.measure.allocator_config import K_LARGE_BUFFER, AllocatorConfig

K_MIN_BLOCK = 512  # kMinBlockSize
K_SMALL_SIZE = 1024**2  # kSmallSize
K_SMALL_BUFFER = 2 * 1024**2  # kSmallBuffer
K_MIN_LARGE_ALLOC = 10 * 1024**2  # kMinLargeAlloc
K_ROUND_LARGE = 2 * 1024**2  # kRoundLarge
# virtual address space of one expandable segment (torch: 1.125 x the card's memory; any large value
# gives the same figures as long as the program fits)
EXPANDABLE_SPACE = 1 << 44


class Block:
    __slots__ = ("addr", "size", "stream", "small", "segment", "prev", "next", "allocated", "mapped",
                 "expandable", "gc_base", "requested")

    def __init__(self, addr: int, size: int, stream: int, small: bool, segment: int, expandable: bool = False):
        self.addr, self.size, self.stream, self.small, self.segment = addr, size, stream, small, segment
        self.prev: Block | None = None
        self.next: Block | None = None
        self.allocated = False
        self.mapped = True
        self.expandable = expandable
        self.gc_base = 0
        self.requested = 0

    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None

    def key(self) -> tuple[int, int, int]:
        return (self.stream, self.size, self.addr)


class _Pool:
    """Free mapped blocks ordered by (stream, size, address); unmapped ones by (stream, address)."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.keys: list[tuple[int, int, int]] = []
        self.blocks: dict[int, Block] = {}  # addr -> free mapped block
        self.unmapped: list[tuple[int, int]] = []
        self.unmapped_blocks: dict[int, Block] = {}
        self.calls = 0  # get_free_blocks_call_count

    def insert(self, b: Block) -> None:
        b.gc_base = self.calls
        bisect.insort(self.keys, b.key())
        self.blocks[b.addr] = b

    def erase(self, b: Block) -> None:
        k = b.key()
        i = bisect.bisect_left(self.keys, k)
        del self.keys[i]
        del self.blocks[b.addr]

    def insert_unmapped(self, b: Block) -> None:
        bisect.insort(self.unmapped, (b.stream, b.addr))
        self.unmapped_blocks[b.addr] = b

    def erase_unmapped(self, b: Block) -> None:
        i = bisect.bisect_left(self.unmapped, (b.stream, b.addr))
        del self.unmapped[i]
        del self.unmapped_blocks[b.addr]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay predicts (bytes), and how it got there."""

    reserved_peak_bytes: int  # segments mapped, at their highest
    allocated_peak_bytes: int  # allocated blocks (rounded sizes), at their highest
    requested_peak_bytes: int  # requested bytes (the tensors' own), at their highest
    reserved_at_allocated_peak_bytes: int
    reserved_end_bytes: int
    segments: int  # cudaMalloc calls (expandable: page mappings)
    events: int
    ooms: int

    @property
    def fragmentation_bytes(self) -> int:
        """Reserved but not allocated at the reserved peak: ``reserved_peak - allocated_peak``."""
        return self.reserved_peak_bytes - self.allocated_peak_bytes

    @property
    def fragmentation(self) -> float:
        return self.fragmentation_bytes / self.reserved_peak_bytes if self.reserved_peak_bytes else 0.0


class CachingAllocatorModel:
    """One device's ``DeviceCachingAllocator``, default pools only (see the module docstring)."""

    def __init__(self, config: AllocatorConfig | None = None, memory_limit_bytes: int | None = None) -> None:
        self.config = config or AllocatorConfig()
        self.limit = memory_limit_bytes
        max_split = self.config.max_split_size_bytes
        self.max_split = max_split if max_split is not None else 1 << 64
        self.pools = {True: _Pool(True), False: _Pool(False)}
        self.reserved = self.allocated = self.requested = 0
        self.reserved_peak = self.allocated_peak = self.requested_peak = 0
        self.reserved_at_allocated_peak = 0
        self.segments = 0
        self.ooms = 0
        self._next_addr = 1 << 20
        self._segment_id = 0
        self._expandable: dict[tuple[int, bool], Block] = {}

    # -- sizes
    def round_size(self, size: int) -> int:
        if size < K_MIN_BLOCK:
            return K_MIN_BLOCK
        d = self.config.divisions(size)
        if d > 1 and size > K_MIN_BLOCK * d:
            if size & (size - 1) == 0:
                return size
            floor = 1 << (size.bit_length() - 1)
            step = floor >> (d.bit_length() - 1)
            if step == 0:
                return floor << 1
            low = size & ~(step - 1)
            return size if low == size else low + step
        return -(-size // K_MIN_BLOCK) * K_MIN_BLOCK

    @staticmethod
    def allocation_size(size: int) -> int:
        if size <= K_SMALL_SIZE:
            return K_SMALL_BUFFER
        if size < K_MIN_LARGE_ALLOC:
            return K_LARGE_BUFFER
        return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE

    def _gc_enabled(self) -> bool:
        return self.limit is not None and self.config.garbage_collection_threshold > 0.0

    # -- malloc
    def malloc(self, nbytes: int, stream: int = 0) -> Block:
        size = self.round_size(nbytes)
        small = size <= K_SMALL_SIZE
        pool = self.pools[small]
        block = self._get_free_block(pool, size, stream)
        if block is None:
            if self._gc_enabled():
                self._garbage_collect()
            block = self._alloc_block(pool, size, stream)
            if block is None and self.limit is not None:
                self._release_cached_blocks()
                block = self._alloc_block(pool, size, stream)
            if block is None:  # out of memory: counted, and the request is served anyway to keep replaying
                self.ooms += 1
                self.limit = None
                block = self._alloc_block(pool, size, stream)
        if self._should_split(block, size):
            rest = block
            block = Block(rest.addr, size, stream, small, rest.segment, rest.expandable)
            block.prev, block.next = rest.prev, rest
            if block.prev:
                block.prev.next = block
            rest.prev = block
            rest.addr += size
            rest.size -= size
            pool.insert(rest)
        block.allocated = True
        block.requested = nbytes
        self.allocated += block.size
        self.requested += nbytes
        if self.allocated > self.allocated_peak:
            self.allocated_peak = self.allocated
            self.reserved_at_allocated_peak = self.reserved
        self.requested_peak = max(self.requested_peak, self.requested)
        return block

    def _should_split(self, block: Block, size: int) -> bool:
        remaining = block.size - size
        if block.small or self.config.expandable_segments:
            return remaining >= K_MIN_BLOCK
        return size < self.max_split and remaining > K_SMALL_SIZE

    def _get_free_block(self, pool: _Pool, size: int, stream: int) -> Block | None:
        if self._gc_enabled():
            pool.calls += 1
        keys = pool.keys
        i = bisect.bisect_left(keys, (stream, size, -1))
        if i == len(keys) or keys[i][0] != stream:
            return None
        b = pool.blocks[keys[i][2]]
        if b.expandable:
            if self.config.expandable_segments:
                def room(x: Block) -> int:
                    return x.size + (x.next.size if x.next is not None and not x.next.mapped else 0)
                j = i + 1
                while b.expandable and j < len(keys) and keys[j][0] == stream:
                    nb = pool.blocks[keys[j][2]]
                    if room(nb) >= room(b):
                        break
                    b, j = nb, j + 1
            else:
                j = i + 1
                while j < len(keys) and keys[j][0] == stream and pool.blocks[keys[j][2]].expandable:
                    j += 1
                if j == len(keys) or keys[j][0] != stream:
                    return None
                b = pool.blocks[keys[j][2]]
        if size < self.max_split and b.size >= self.max_split:
            return None
        if size >= self.max_split and b.size >= size + self.config.max_non_split_rounding_bytes:
            return None
        pool.erase(b)
        return b

    def _fits_limit(self, nbytes: int) -> bool:
        return self.limit is None or self.reserved + nbytes <= self.limit

    def _grow(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.reserved_peak = max(self.reserved_peak, self.reserved)
        self.segments += 1

    def _alloc_block(self, pool: _Pool, size: int, stream: int) -> Block | None:
        if self.config.expandable_segments:
            return self._alloc_expandable(pool, size, stream)
        alloc = self.allocation_size(size)
        if not self._fits_limit(alloc):
            return None
        self._segment_id += 1
        b = Block(self._next_addr, alloc, stream, pool.small, self._segment_id)
        self._next_addr += alloc + K_ROUND_LARGE  # distinct segments are never adjacent
        self._grow(alloc)
        return b

    # -- expandable segments
    def _alloc_expandable(self, pool: _Pool, size: int, stream: int) -> Block | None:
        c = self._find_expandable_block(pool, size, stream)
        if not c.mapped:
            c = self._map_block(pool, c, min(c.size, size))
            if c is None:
                return None
        while c.size < size:
            nxt = c.next
            c2 = self._map_block(pool, nxt, min(size - c.size, nxt.size))
            if c2 is None:
                return None
            c = c2
        pool.erase(c)
        return c

    @staticmethod
    def _allocatable(b: Block | None) -> bool:
        return b is not None and not b.allocated

    def _find_expandable_block(self, pool: _Pool, size: int, stream: int) -> Block:
        i = bisect.bisect_left(pool.unmapped, (stream, -1))
        while i < len(pool.unmapped) and pool.unmapped[i][0] == stream:
            c = pool.unmapped_blocks[pool.unmapped[i][1]]
            if self._allocatable(c.prev) and c.prev.mapped:
                c = c.prev
            total, b = 0, c
            while total < size and self._allocatable(b):
                total += b.size
                b = b.next
            if total >= size:
                return c
            i += 1
        self._segment_id += 1
        base = (len(self._expandable) + 1) << 46
        seg = Block(base, EXPANDABLE_SPACE, stream, pool.small, self._segment_id, expandable=True)
        seg.mapped = False
        self._expandable[(stream, pool.small)] = seg
        pool.insert_unmapped(seg)
        return seg

    def _map_block(self, pool: _Pool, b: Block, size: int) -> Block | None:
        page = K_SMALL_BUFFER if pool.small else K_LARGE_BUFFER
        mapped = -(-size // page) * page
        if not self._fits_limit(mapped):
            return None
        pool.erase_unmapped(b)
        b.mapped = True
        if mapped < b.size:
            rest = Block(b.addr + mapped, b.size - mapped, b.stream, b.small, b.segment, expandable=True)
            rest.mapped = False
            rest.prev, rest.next = b, b.next
            if b.next:
                b.next.prev = rest
            b.next = rest
            b.size = mapped
            pool.insert_unmapped(rest)
        b = self._merge(pool, b, b.prev)
        b = self._merge(pool, b, b.next)
        pool.insert(b)
        self._grow(mapped)
        return b

    # -- free
    def free(self, block: Block) -> None:
        if not block.allocated:
            raise ValueError("block freed twice")
        block.allocated = False
        self.allocated -= block.size
        self.requested -= block.requested
        pool = self.pools[block.small]
        block = self._merge(pool, block, block.prev)
        block = self._merge(pool, block, block.next)
        pool.insert(block)

    @staticmethod
    def _merge(pool: _Pool, dst: Block, src: Block | None) -> Block:
        """``try_merge_blocks``: ``dst`` takes over a free neighbour ``src`` of the same mapping."""
        if src is None or src.allocated or src.mapped != dst.mapped:
            return dst
        if src.mapped:
            pool.erase(src)
        else:
            pool.erase_unmapped(src)
        if dst.prev is src:
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next:
                dst.next.prev = dst
        dst.size += src.size
        return dst

    # -- release
    def _release(self, pool: _Pool, b: Block) -> None:
        pool.erase(b)
        self.reserved -= b.size

    def _release_cached_blocks(self) -> None:
        for pool in self.pools.values():
            for b in [b for b in pool.blocks.values() if not b.is_split() and not b.expandable]:
                self._release(pool, b)

    def _garbage_collect(self) -> None:
        threshold = int(self.config.garbage_collection_threshold * self.limit)
        if self.reserved <= threshold:
            return
        target = self.reserved - threshold
        pool = self.pools[False]
        age = lambda b: pool.calls - b.gc_base  # noqa: E731
        candidates = [b for b in pool.blocks.values() if not b.is_split()]
        total_age, count = sum(map(age, candidates)), len(candidates)
        reclaimed, freed = 0, True
        while reclaimed < target and freed and count > 0:
            avg = total_age / count
            freed = False
            for b in [pool.blocks[k[2]] for k in list(pool.keys)]:
                if not b.is_split() and not b.expandable and age(b) >= avg:
                    freed = True
                    reclaimed += b.size
                    total_age -= age(b)
                    count -= 1
                    self._release(pool, b)

    def result(self, events: int = 0) -> ReplayResult:
        return ReplayResult(
            reserved_peak_bytes=self.reserved_peak,
            allocated_peak_bytes=self.allocated_peak,
            requested_peak_bytes=self.requested_peak,
            reserved_at_allocated_peak_bytes=self.reserved_at_allocated_peak,
            reserved_end_bytes=self.reserved,
            segments=self.segments,
            events=events,
            ooms=self.ooms,
        )


def replay(events: Iterable[tuple], config: AllocatorConfig | None = None,
           memory_limit_bytes: int | None = None) -> ReplayResult:
    """Replay ``events`` in order: ``("a", key, nbytes[, stream])`` allocates, ``("f", key)`` frees.

    A free of a key never allocated (made before the trace started) is ignored.
    """
    model = CachingAllocatorModel(config, memory_limit_bytes)
    live: dict = {}
    n = 0
    for ev in events:
        n += 1
        if ev[0] == "a":
            live[ev[1]] = model.malloc(ev[2], ev[3] if len(ev) > 3 else 0)
        else:
            b = live.pop(ev[1], None)
            if b is not None:
                model.free(b)
    return model.result(n)
