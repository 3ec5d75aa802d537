"""Running work on an existing Dask distributed cluster (``--scheduler``).

Dask is an optional extra (``pip install 'kernelcli[distributed]'``); nothing
here is imported unless ``--scheduler`` is given. The cluster's workers must
run the same kernelcli and see the same file paths (a shared file system):
tasks carry paths, never pixels.

Start a cluster with ``dask scheduler`` and ``dask worker ADDRESS``; give
kernelcli the address (``tcp://10.0.0.5:8786``) or the scheduler file.
"""

from __future__ import annotations

import logging
import os
import re
import threading

from .errors import KernelcliError, UsageError

#: Seconds to wait for the scheduler before giving up.
DEFAULT_TIMEOUT = 10.0

_ADDRESS = re.compile(r"^([a-z][a-z0-9+]*://)?[\w.\-\[\]:]+:\d+$", re.IGNORECASE)
#: One computation at a time per worker process: the jitted engine already uses
#: every core, and this keeps it safe with any Numba threading layer.
_ONE_AT_A_TIME = threading.Lock()


def connect(address: str, timeout: float = DEFAULT_TIMEOUT, debug: bool = False):
    """A ``distributed.Client`` for a scheduler address or scheduler file.

    An unreachable scheduler is a one-line error after ``timeout`` seconds.
    """
    try:
        from distributed import Client
    except ImportError:
        raise KernelcliError(
            "--scheduler needs Dask distributed: pip install 'kernelcli[distributed]'"
        ) from None
    if not debug:
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if os.path.isfile(address):
        where, kwargs = f"the scheduler in {address}", {"scheduler_file": address}
    elif _ADDRESS.match(address):
        where, kwargs = f"the Dask scheduler at {address}", {"address": address}
    else:
        raise UsageError(
            f"--scheduler {address!r} is neither a scheduler file nor an address like tcp://HOST:PORT"
        )
    try:
        return Client(timeout=timeout, set_as_default=False, **kwargs)
    except (OSError, TimeoutError) as e:
        raise KernelcliError(f"cannot reach {where} within {timeout:g} s: {e}") from None
    except Exception as e:  # a malformed scheduler file, an unknown protocol...
        raise KernelcliError(f"cannot connect to {where}: {type(e).__name__}: {e}") from None


def serial(fn, *args):
    """Run ``fn(*args)`` on a worker, one at a time per worker process."""
    with _ONE_AT_A_TIME:
        return fn(*args)


def close(client) -> None:
    try:
        client.close(timeout=5)
    except Exception:
        pass
