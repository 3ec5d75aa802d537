"""Where large arrays that the engine hands out come from.

A new array of more than 32 MiB is mapped fresh from the kernel, which zeroes
every page the first time it is touched: for a small kernel over a large
image that costs more than the filtering (docs/performance.md). glibc's malloc keeps freed blocks
up to 32 MiB for the next allocation, so smaller arrays are reused anyway;
larger ones go straight back to the kernel, and a loop that filters one large
image after another pays for fresh pages on every call.

So :func:`empty` lays arrays of at least :data:`MIN_BYTES` on private
anonymous mappings. When the last array or view on one goes away, the mapping
is kept, and the next array of exactly that many bytes is laid on it instead
of a fresh one. An array of a size none of them has gives every kept mapping
back first. At most :data:`KEEP_COUNT` mappings of :data:`KEEP_BYTES` in all
are kept, the oldest dropped first; :func:`release` drops them now.

Such an array is an ordinary writable C-contiguous ndarray except that it
does not own its data (``arr.base`` is the array laid on the mapping), so
``arr.resize()`` refuses it, as it refuses any view.

:func:`ensure_memory` refuses, before it is allocated, work that the free
memory (:func:`available_memory`) cannot hold.
"""

from __future__ import annotations

import collections
import math
import mmap
import weakref

import numpy as np

from .errors import KernelcliError

#: Arrays at least this large come from kept mappings (below it, malloc
#: already reuses freed memory: see the module's notes).
MIN_BYTES = 32 * 2**20
#: At most this many bytes of mappings, in at most KEEP_COUNT of them, wait
#: for reuse once their arrays are gone.
KEEP_BYTES = 256 * 2**20
KEEP_COUNT = 4

#: (size, mapping) pairs whose arrays are gone, newest last. Only atomic deque
#: operations touch it: a mapping comes back from a weakref finalizer, which
#: may run on any thread, in the middle of anything.
_kept: collections.deque = collections.deque()
_MAPPED = hasattr(mmap, "MAP_PRIVATE")


def empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``,
    laid on memory given back by an earlier array when it is large."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES or not _MAPPED:
        return np.empty(shape, dtype)
    size = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    mapping = _take(size)
    if mapping is None:
        # None of this size: the kept ones are of sizes this program has
        # moved on from (a loop over same-size images finds its size every
        # time). Give them back before new pages are touched, so that kept
        # memory does not add to a peak (a whole-image job's stages: a
        # convolution's result, then a smaller pooled one).
        release()
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            mapping.madvise(mmap.MADV_HUGEPAGE)  # as NumPy asks for its own large arrays
    flat = np.frombuffer(mapping, dtype=dtype, count=count)
    # Every view of the result has `flat` as its base, so `flat` dies only
    # when the last of them does; then the mapping is free to reuse.
    weakref.finalize(flat, _give_back, size, mapping).atexit = False
    return flat.reshape(shape)


def _take(size: int):
    for item in reversed(list(_kept)):  # the newest first: likeliest still in cache
        if item[0] == size:
            try:
                _kept.remove(item)
            except ValueError:  # another thread took it first
                continue
            return item[1]
    return None


def _give_back(size: int, mapping) -> None:
    _kept.append((size, mapping))
    while len(_kept) > KEEP_COUNT or kept_bytes() > KEEP_BYTES:
        try:
            _kept.popleft()
        except IndexError:
            break


def kept_bytes() -> int:
    """Bytes of mappings waiting for reuse."""
    return sum(s for s, _ in list(_kept))


def release() -> None:
    """Give every kept mapping back to the system now."""
    _kept.clear()


def available_memory() -> int | None:
    """Bytes the system says it can still give us (Linux MemAvailable), or
    None; less when this process's address space is limited (``ulimit -v``,
    RLIMIT_AS) and that leaves less room."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    room = _address_space_left()
    if room is not None:
        free = room if free is None else min(free, room)
    return free


def _address_space_left() -> int | None:
    """Bytes of address space this process may still map under its RLIMIT_AS, or None."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm", encoding="ascii") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
    except (ImportError, OSError, ValueError, IndexError):
        return None
    return max(0, limit - mapped)


#: Allocations below this are not checked against the free memory (reading
#: /proc/meminfo for every band of an image costs more than the band's work).
CHECK_MEMORY_FROM = 64 * 2**20


def ensure_memory(nbytes: int, what: str,
                  advice: str = "use a smaller input, a larger stride or less padding") -> None:
    """Refuse up front, with the figure, work whose output cannot fit in memory
    (``what`` names it, ``advice`` says what to change)."""
    if nbytes < CHECK_MEMORY_FROM:
        return
    free = available_memory()
    if free is not None and nbytes > free and kept_bytes():
        release()  # memory kept for reuse counts as used
        free = available_memory()
    if free is not None and nbytes > free:
        raise KernelcliError(
            f"{what} needs {nbytes / 2**30:.1f} GiB of memory but only {free / 2**30:.1f} GiB is available; "
            f"{advice}"
        )
