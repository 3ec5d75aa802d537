"""Process-wide settings for kernelcli's own processes: the command
(:func:`kernelcli.cli.main`) and the worker processes of a folder run
(:func:`worker_main`). Never applied when kernelcli is used as a library.
Each says in a line why.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import sys


def command_process(argv) -> None:
    """Everything below, for the ``kernelcli`` command itself."""
    signal.signal(signal.SIGTERM, _on_sigterm)  # remove temporaries, exit 143 (or let a folder run wind down)
    guard_standard_streams()  # no output file may take the number of a closed stdin/stdout/stderr
    one_job_per_process()  # no Numba loading in the background: the command is one job
    skip_numba_blas()  # about 0.2 s less start-up when SciPy is installed
    one_blas_thread()  # about 0.07 s less start-up; kernelcli does no matrix products
    reuse_freed_memory()  # bands reuse freed blocks instead of touching fresh pages
    if not os.environ.get("KERNELCLI_DEBUG") and "--debug" not in (argv or sys.argv[1:]):
        import warnings

        warnings.simplefilter("ignore")  # library warnings are not messages for users


def _on_sigterm(signum, frame):
    from . import stopping

    stopping.stop(128 + signum)


def one_job_per_process() -> None:
    """The engine's automatic warm-up (:func:`kernelcli.engine.warm_up`) is for
    processes that keep calling; a command is one job, already sent to the
    loop that suits its size."""
    from . import config

    config.AUTO_WARM_UP = False


# --------------------------------------------------------------------------
# standard streams


class _ClosedStdout(io.RawIOBase):
    """What stdout writes into when the command started with descriptor 1
    closed: every write fails with "it is closed"."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.EBADF, "it is closed")


def guard_standard_streams() -> None:
    """Descriptors 0, 1 and 2 closed at start (``2>&-``) are opened on
    /dev/null, so that no file the command opens takes their numbers (libtiff
    prints on descriptor 2; it must not land in an output). Python has made
    ``sys.stdin``, ``sys.stdout``, ``sys.stderr`` None for them: stdin stays
    None (reading it says it is closed), stderr writes into /dev/null (a run
    whose notes cannot be shown still succeeds), and stdout fails on the
    first write with "it is closed" (output that cannot be delivered is an
    error; a run that writes nothing there succeeds)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:
            continue
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if fd == 1 and sys.stdout is None:
            sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedStdout()), encoding="utf-8")
        elif fd == 2 and sys.stderr is None:
            sys.stderr = open(os.devnull, "w")


def quiet_stdout() -> None:
    """After the reader of our stdout went away, or writing to it failed:
    point stdout at /dev/null so the interpreter's final flush does not
    complain (and a stdout that was closed at start has nothing left to
    write)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        try:
            sys.stdout = open(os.devnull, "w")  # (a stream with no descriptor: the closed stdout's)
        except OSError:
            pass


def say(message: str) -> None:
    """A line on stderr; nothing when stderr cannot be written (closed, a
    full disk): the exit status still tells."""
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def exit_now(code) -> int:
    """End the command's process at once with ``code`` (as ``sys.exit`` takes
    it), once stdout and stderr are flushed, skipping the interpreter's
    teardown of every module's objects (docs/performance.md). Every output
    file is closed by then (written to a temporary file, renamed into place).
    Output still buffered for stdout that cannot be written (a full disk,
    stdout closed) makes a successful run fail with one line on stderr; a
    reader that went away does not. Returns the exit status, for the
    ordinary exit, where the teardown may matter: while a thread that is not
    a daemon is still running (a Dask client's)."""
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        say(str(code))
        status = 1
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
    except (OSError, ValueError) as e:
        if status == 0:
            say(f"kernelcli: error: cannot write to stdout: {getattr(e, 'strerror', None) or e}")
            status = 1
        quiet_stdout()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() and not t.name.startswith("kernelcli")
           for t in threading.enumerate()):
        return status
    os._exit(status)


# --------------------------------------------------------------------------
# libraries' start-up and memory


def skip_numba_blas() -> None:
    """Keep Numba from importing SciPy's BLAS: ``import numba`` probes
    ``scipy.linalg.cython_blas`` to support ``np.dot`` and ``np.linalg`` in
    jitted code, which kernelcli never uses."""
    if "scipy.linalg.cython_blas" not in sys.modules and "numba" not in sys.modules:
        sys.modules["scipy.linalg.cython_blas"] = None  # makes that import fail at once


def one_blas_thread() -> None:
    """Ask NumPy's OpenBLAS for one thread (unless the user set a count):
    starting its thread pool slows ``import numpy``, and kernelcli does no
    matrix products. Only before NumPy is imported."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks of up to 32 MiB for the next
    request instead of returning them to the system: bands of rows allocate
    and free the same few megabytes over and over, and fresh pages cost a
    page fault each on first touch. Larger arrays still come from and go
    back to the system. Nothing where there is no mallopt."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # the largest glibc takes
        libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
    except Exception:  # not glibc (musl, macOS, Windows): their own allocator's defaults
        pass


# --------------------------------------------------------------------------
# a folder run's worker process


def worker_main(parent: int) -> None:
    """A worker process of a folder run (:mod:`kernelcli.run.workers`): take tasks
    from stdin, send results to stdout, until the parent closes the stream."""
    from .run import batch, workers

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
        signal.signal(signal.SIGTERM, _on_sigterm)  # remove the temporary being written, leave
        if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while starting us
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        _stop_with_parent(parent)  # never outlive the parent, however it dies
        tasks, results = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # nothing else may write into the results stream
        skip_numba_blas()  # as for the command
        reuse_freed_memory()
        workers.serve(tasks, results, batch.run_task)
    except BaseException:  # the parent reports the file this worker held
        os._exit(1)
    os._exit(0)


def _stop_with_parent(parent: int) -> None:
    """Linux: have the kernel send SIGTERM when the parent dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: a worker left alone stops at the end of its stream
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(128 + signal.SIGTERM)
