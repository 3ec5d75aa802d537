"""Settings shared by every jitted function, kept in one place.

The jitted kernels in :mod:`kernelcli._jit` read these flags at import time;
nothing else in the package hard-codes a Numba option.
"""

#: Spread output rows over threads.
PARALLEL = True
#: Keep IEEE semantics: results must be reproducible bit for bit between the
#: fused ``apply`` path and the stage-by-stage pipeline.
FASTMATH = False
#: Cache compiled code on disk so that a second run does not recompile.
CACHE = True
