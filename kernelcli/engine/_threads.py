"""The helper threads that the engine's row loops and FFT tiles share.

Starting and joining a thread costs a fair part of what a small kernel
takes over a whole image, so helpers are started once per process and then
kept: an idle helper waits on the pool's queue and costs nothing.

Work is always shared the same way: the calling thread works too, and
``helpers`` more threads run the same ``worker`` beside it; each worker takes
the next piece of work (a block of rows, a tile) when it is free, so a helper
that starts late finds less to do, or nothing.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool = None
_size = 0
_local = threading.local()


def _forget() -> None:
    """In the child of a fork(): the pool's threads did not come along (and
    the lock may have been held by one of the parent's threads)."""
    global _lock, _pool, _size
    _lock, _pool, _size = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _helpers(n: int) -> ThreadPoolExecutor:
    global _pool, _size
    with _lock:
        if _pool is None or _size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="kernelcli")
            _size = n
        return _pool


def _as_helper(worker):
    _local.helper = True
    try:
        worker()
    finally:
        _local.helper = False


def run(worker, helpers: int) -> None:
    """Call ``worker()`` on this thread and on ``helpers`` kept threads at
    once; return when every call has returned, raising the first error.

    From inside a helper, ``worker`` just runs here: a helper waiting for
    its own pool could wait forever.
    """
    if helpers <= 0 or getattr(_local, "helper", False):
        worker()
        return
    pool = _helpers(helpers)
    futures = [pool.submit(_as_helper, worker) for _ in range(helpers)]
    try:
        worker()
    finally:
        errors = [f.exception() for f in futures]  # waits for each
    for error in errors:
        if error is not None:
            raise error
