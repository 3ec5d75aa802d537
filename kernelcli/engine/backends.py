"""Which loops run a computation: the Numba ones or their NumPy twins.

Both backends are modules with the same functions, of the same signatures,
giving the same numbers bit for bit (:class:`Kernels`):
:mod:`kernelcli.engine._jit` (compiled by Numba) and
:mod:`kernelcli.engine._npkernels` (plain NumPy, for small work while Numba
is not loaded: they spare a short job Numba's start-up). This module is the
only one that asks whether Numba is loaded; it also holds the warm-up that
loads Numba on a background thread in a process that keeps calling.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Protocol

from .. import config


class Kernels(Protocol):
    """What a backend module provides. Images are passed as ``H x W*C`` rows
    plus the channel count ``C``; ``rowmap`` / ``colmap`` give the source
    index of each padded coordinate (-1: a zero)."""

    #: Whether it has ``correlate_separable`` (both 1-D passes of a low-rank
    #: kernel in one call); when not, the engine runs the passes as two
    #: ``correlate_rows`` calls.
    FUSED_SEPARABLE: bool

    def correlate_rows(self, src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out): ...

    def correlate_depth(self, src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out): ...

    def pool_rows(self, src, channels, kind, ph, pw, sy, sx, out): ...


def numba_loaded() -> bool:
    """Is Numba loaded in this process (so its loops cost nothing more to start)?"""
    return "numba" in sys.modules


def threads() -> int:
    """The threads the engine spreads work over (without loading Numba to ask)."""
    if not numba_loaded():
        return config.cpus()
    import numba

    return max(1, int(numba.get_num_threads()))


#: While Numba is not loaded in this process, work up to this many
#: multiply-adds runs on the NumPy twins: the same numbers bit for bit,
#: without Numba's start-up, which costs about what NumPy needs for this many
#: (a 12-megapixel RGB image with a 3x3 kernel is 324 million at most).
NUMPY_MAX_WORK = 250_000_000


def load_numba() -> None:
    """Load Numba and the jitted loops now: every later call in this process
    runs on them (:func:`backend`). For work that is large in total but
    comes in small pieces, such as an image's bands."""
    from . import _jit  # noqa: F401


#: A process that keeps calling (a notebook, a service) gets the compiled
#: loops: once the NumPy twins have spent this many seconds in it, the
#: warm-up starts on a background thread (when ``config.AUTO_WARM_UP``
#: allows), the twins serving every call until it is done. About half of
#: Numba's own start-up: a process that has paid that much on the twins is
#: likely to go on calling.
WARM_UP_AFTER_SECONDS = 0.15

_warming = threading.local()  # .active: this thread is the one warming up
_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None
_warm_done = threading.Event()
_twin_seconds = 0.0
#: The exercises of the loops the twins stood in for, in the order first used:
#: what the automatic warm-up compiles (the rest load when first used).
_twin_loops: dict = {}


def warm_up(exercise: Callable[[], None], wait: bool = True) -> None:
    """Load Numba and run ``exercise`` (calls that compile the loops into an
    empty cache, else load them from it) on a background thread; with
    ``wait``, return once they are ready. Calls made meanwhile run on the
    NumPy twins; every call after it runs on the compiled loops. Done once
    per process; calling again only waits (or not)."""
    thread = _start_warm_up(exercise)
    if wait and thread is not None and thread is not threading.current_thread():
        thread.join()


def _start_warm_up(exercise: Callable[[], None]) -> threading.Thread | None:
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            thread = threading.Thread(target=_warm, args=(exercise,), name="kernelcli-warm-up", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: Numba loads when work needs it
                return None
            _warm_thread = thread
        return _warm_thread


def _warm(exercise: Callable[[], None]) -> None:
    """On this thread, while the others use the twins: load Numba and
    compile what ``exercise`` calls (same argument types as real calls:
    that is what is compiled)."""
    _warming.active = True
    try:
        load_numba()
        exercise()
    except Exception:  # only a head start: a real call meets and reports the error
        pass
    finally:
        _warming.active = False
        _warm_done.set()


def warming_elsewhere() -> bool:
    """Is the warm-up at work on another thread than this one?"""
    return _warm_thread is not None and not _warm_done.is_set() and not getattr(_warming, "active", False)


def uses_numba(work: int) -> bool:
    """Do ``work`` multiply-adds run on the Numba loops (:func:`backend`)?

    Yes for more than :data:`NUMPY_MAX_WORK`; else once Numba is loaded, except
    while the warm-up is still at work on another thread (the twins serve)."""
    if getattr(_warming, "active", False):
        return True
    if work > NUMPY_MAX_WORK:
        if warming_elsewhere():
            _warm_done.wait()  # never two threads in the parallel loops at once
        return True
    return numba_loaded() and not warming_elsewhere()


def backend(work: int) -> Kernels:
    """The module whose loops run ``work`` multiply-adds: the NumPy twins for
    small work while Numba is not loaded, else the jitted loops. Run its
    loops inside :func:`timed` so that the twins' time counts towards
    :data:`WARM_UP_AFTER_SECONDS`."""
    if not uses_numba(work):
        from . import _npkernels

        return _npkernels
    from . import _jit

    return _jit


def is_twins(kernels: Kernels) -> bool:
    """Are these the NumPy twins (rather than the jitted loops)?"""
    return kernels.__name__ == "kernelcli.engine._npkernels"


@contextlib.contextmanager
def timed(kernels: Kernels, exercise: Callable[[], None]):
    """Time what runs inside when ``kernels`` (from :func:`backend`) are the
    NumPy twins; past :data:`WARM_UP_AFTER_SECONDS` in all, the warm-up
    starts, if ``config.AUTO_WARM_UP``: it compiles the loops whose
    ``exercise`` (a call of that loop on a small array) the twins have run."""
    if not is_twins(kernels):
        yield
        return
    global _twin_seconds
    started = time.perf_counter()
    try:
        yield
    finally:
        _twin_seconds += time.perf_counter() - started
    _twin_loops.setdefault(exercise, None)
    if _twin_seconds >= WARM_UP_AFTER_SECONDS and _warm_thread is None and config.AUTO_WARM_UP:
        _start_warm_up(_exercise_used)


def _exercise_used() -> None:
    for exercise in list(_twin_loops):
        exercise()
