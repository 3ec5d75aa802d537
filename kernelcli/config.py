"""Settings shared by every jitted function, kept in one place, and the
number of cores kernelcli may use.

The jitted kernels in :mod:`kernelcli.engine._jit` read these flags at import time;
nothing else in the package hard-codes a Numba option.
"""

import os

#: Spread output rows over threads.
PARALLEL = True
#: Keep IEEE semantics: results must be reproducible bit for bit between the
#: fused ``apply`` path and the stage-by-stage pipeline.
FASTMATH = False
#: Cache compiled code on disk so that a second run does not recompile.
CACHE = True
#: Load Numba on a background thread once a process has done enough work on
#: the NumPy twins (kernelcli.engine.warm_up): for processes that keep
#: calling. The command line turns it off: each command is one job, which
#: the engine already sends to the loop that suits its size.
AUTO_WARM_UP = True

#: The largest stride, padding, dilation, pool window or band height taken:
#: far beyond any image, and small enough that the geometry's arithmetic
#: stays within 64-bit integers. What a smaller value would cost in memory
#: is checked where it is known (kernelcli._memory.ensure_memory).
MAX_SIZE = 2**31 - 1


def cpus() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Memory set aside for each worker process of a folder run: the interpreter
#: with NumPy, Numba and Pillow loaded, and an image's work.
WORKER_BYTES = 256 * 2**20
#: Worker processes per core, at most: more only wait for a core.
WORKERS_PER_CPU = 2


def max_workers() -> int:
    """The most worker processes a folder run starts: :data:`WORKERS_PER_CPU`
    per core, and no more than the available memory holds at
    :data:`WORKER_BYTES` each (at least one)."""
    from ._memory import available_memory

    most = WORKERS_PER_CPU * cpus()
    free = available_memory()
    if free is not None:
        most = min(most, free // WORKER_BYTES)
    return max(1, int(most))
