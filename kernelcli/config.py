"""Settings shared by every jitted function, kept in one place, and the
number of cores kernelcli may use.

The jitted kernels in :mod:`kernelcli._jit` read these flags at import time;
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


def cpus() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
