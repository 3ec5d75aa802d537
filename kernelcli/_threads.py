"""The helper threads that the engine's row loops and FFT tiles share.

Starting and joining a thread costs about 0.1 ms each here, against about
0.5 ms for a 3x3 kernel over a whole 1-megapixel image on one thread, so
helpers are started once per process and then kept: an idle helper waits on
the pool's queue and costs nothing.

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
#: (process id, size) the pool was made for: a pool inherited through fork()
#: has no threads in the child, so the child makes its own.
_made_for = (None, 0)
_local = threading.local()


def _helpers(n: int) -> ThreadPoolExecutor:
    global _pool, _made_for
    with _lock:
        pid = os.getpid()
        if _pool is None or _made_for[0] != pid or _made_for[1] < n:
            if _pool is not None and _made_for[0] == pid:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="kernelcli")
            _made_for = (pid, n)
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
