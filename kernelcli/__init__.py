"""kernelcli: convolution kernels, ReLU and pooling for images, with a Numba engine.

Public API::

    convolve(x, kernel, stride=1, padding="same", pad_mode="zero", dilation=1, flip=False, out=None, cval=0.0,
             origin=None)
    relu(x)
    activate(x, kind="relu", param=None)   # relu, leaky (slope), tanh, sigmoid (input scale)
    pool(x, kind="max", size=2, stride=None)
    release_memory()          # give back memory kept from large results that are gone
    warm_up(wait=True)        # load Numba and the engine's loops now (else automatic, see below)
    get_kernel(spec)          # name, spec string, file path or 2-D array -> Kernel
    read_image(source, reading=ReadSpec())   # path, "-", bytes or file -> Picture (.pixels float32)
    write_image(target, picture_or_array, fmt=None, scaling="clip", offset=0.0, colormap="gray", depth=None)

Importing kernelcli does not import Numba. Small work runs on NumPy twins of
the engine's loops, which spare a one-shot job Numba's start-up; large work
loads Numba. A process that keeps calling gets the compiled loops: once it
has done enough work on the twins, Numba loads on a background thread while
they go on serving (``warm_up`` does it at once).
"""

from ._lazy import lazy_getattr as _lazy_getattr
from .errors import ImageReadError, ImageWriteError, KernelcliError, KernelError, UsageError

__version__ = "0.1.0"

# The rest is imported on first use, so that `kernelcli --help` stays fast.
_LAZY = {
    "convolve": "engine", "relu": "engine", "activate": "engine", "pool": "engine", "release_memory": "engine",
    "warm_up": "engine",
    "get_kernel": "kernels", "Kernel": "kernels",
    "read_image": "io", "write_image": "io", "Picture": "io", "ReadSpec": "io",
}

__getattr__ = _lazy_getattr(__name__, _LAZY)

__all__ = [
    "convolve", "relu", "activate", "pool", "release_memory", "warm_up", "get_kernel", "read_image",
    "write_image",
    "Kernel", "Picture", "ReadSpec", "KernelcliError", "KernelError", "UsageError",
    "ImageReadError", "ImageWriteError", "__version__",
]
