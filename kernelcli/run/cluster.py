"""Running work on an existing Dask distributed cluster (``--scheduler``).

Dask is an optional extra (``pip install 'kernelcli[distributed]'``); nothing
here is imported unless ``--scheduler`` is given. The cluster's workers must
run the same kernelcli and see the same file paths (a shared file system):
tasks carry paths, never pixels.

Start a cluster with ``dask scheduler`` and ``dask worker ADDRESS``; give
kernelcli the address (``tcp://10.0.0.5:8786``) or the scheduler file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading

from ..errors import KernelcliError, UsageError

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
        _quiet_logs()
    if os.path.isfile(address):
        where = f"the Dask scheduler in {address}"
        address = _address_from_file(address)
    elif _ADDRESS.match(address):
        where = f"the Dask scheduler at {address}"
    else:
        raise UsageError(
            f"--scheduler {address!r} is neither a scheduler file nor an address like tcp://HOST:PORT"
        )
    # Client's own timeout does not cover the handshake: a server that accepts
    # the connection and never answers (not a Dask scheduler) would hold it
    # forever. So the whole attempt runs in a thread that is waited for at most
    # ``timeout`` seconds (and a moment for Client to give its own reason),
    # and left behind (a daemon) if it does not finish.
    outcome: dict = {}

    def attempt():
        try:
            outcome["client"] = Client(address, timeout=timeout, set_as_default=False)
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=attempt, name="kernelcli-connect", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if thread.is_alive():
        raise KernelcliError(f"cannot reach {where} within {timeout:g} s: no answer (is it a Dask scheduler?)")
    e = outcome.get("error")
    if e is None:
        return outcome["client"]
    if isinstance(e, (OSError, TimeoutError)):
        raise KernelcliError(f"cannot reach {where} within {timeout:g} s: {first_line(e)}") from None
    # an unknown protocol, a version mismatch...
    raise KernelcliError(f"cannot connect to {where}: {type(e).__name__}: {first_line(e)}") from None


def _quiet_logs() -> None:
    """No log records from Dask and its event loop reach stderr: a lost
    scheduler is reported per file and in the summary, not as tracebacks.
    Dask's own configuration gives some loggers a level of their own
    (``distributed.client: warning``), so each one is silenced, not only the
    parents."""
    prefixes = ("distributed", "tornado", "asyncio")
    names = [name for name in logging.root.manager.loggerDict
             if name in prefixes or name.startswith(tuple(p + "." for p in prefixes))]
    for name in {*prefixes, *names}:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _address_from_file(path: str) -> str:
    """The address in a scheduler file (JSON written by ``dask scheduler --scheduler-file``)."""
    try:
        with open(path, encoding="utf-8") as f:
            address = json.load(f).get("address")
    except (OSError, ValueError, AttributeError) as e:
        raise KernelcliError(f"{path}: not a Dask scheduler file: {first_line(e)}") from None
    if not isinstance(address, str) or not address:
        raise KernelcliError(f"{path}: not a Dask scheduler file: it holds no address")
    return address


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def serial(fn, *args):
    """Run ``fn(*args)`` on a worker, one at a time per worker process."""
    with _ONE_AT_A_TIME:
        return fn(*args)


def close(client) -> None:
    try:
        client.close(timeout=5)
    except Exception:
        pass
