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


def wait_readable(stream) -> None:
    """Wait for a pipe's next bytes (or its end) in short steps, so that a
    stop or Ctrl-C that comes just before a read is acted on: a blocking
    read begun after it would not be interrupted, and a writer that keeps
    the pipe open would hold the command for good. Returns at once for a
    stream with no descriptor to wait on."""
    import select

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a caller's stream in memory
        return
    try:
        while not select.select([fd], [], [], 0.2)[0]:
            pass
    except (OSError, ValueError):  # not a descriptor select takes (Windows pipes): read as it comes
        return
