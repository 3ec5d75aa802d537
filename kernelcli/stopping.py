"""What a request to stop (SIGTERM) does, said by the code that knows.

The command's entry point only catches the signal (:mod:`kernelcli._process`)
and calls :func:`stop`. Library code says what stopping means for it:

* code that writes temporary files registers their removal with :func:`at_stop`;
* code that can wind down in order (a folder run waiting on its workers)
  runs inside ``with raising(Interrupted):``, and a stop then raises that
  exception (with the exit status) instead of ending the process at once.
"""

from __future__ import annotations

import contextlib
import os
import sys

_cleanups: list = []
_raising: list = []


def at_stop(cleanup):
    """Call ``cleanup()`` when the process is stopped (last registered, first called)."""
    _cleanups.append(cleanup)
    return cleanup


@contextlib.contextmanager
def raising(make_error):
    """Within the block, a stop raises ``make_error(status)`` here instead."""
    _raising.append(make_error)
    try:
        yield
    finally:
        _raising.remove(make_error)


def stop(status: int) -> None:
    """Stop with exit ``status``: raise where a block asked for it, else run
    the cleanups and end the process at once. (Ending at once: an exception
    raised from a signal handler could land in a callback of the Numba
    compiler, which would print it and carry on.)"""
    if _raising:
        raise _raising[-1](status)
    for cleanup in reversed(_cleanups):
        with contextlib.suppress(Exception):
            cleanup()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(status)
