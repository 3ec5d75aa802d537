"""A folder run's worker processes.

Each worker is a fresh interpreter (never a fork of a process that may hold
Numba's threads) that reads tasks from its stdin and writes results to its
stdout, one file at a time, as length-prefixed pickles. The parent knows
which file each worker holds, so a worker that dies (the kernel's OOM
killer, kill -9) fails that one file and is replaced; and the parent alone
decides when workers stop.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from ..io.sinks import temporaries_of

_FRAME = struct.Struct("<Q")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int):
    """The next object, or None at the end of the stream (also mid-frame: the writer died)."""
    head = _read_exactly(fd, _FRAME.size)
    if head is None:
        return None
    body = _read_exactly(fd, _FRAME.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def serve(tasks: int, results: int, work) -> None:
    """A worker process's loop (:func:`kernelcli._process.worker_main`): take
    tasks from the ``tasks`` descriptor and send ``work(task)`` for each to
    ``results``, until the parent closes the stream."""
    try:
        import numba

        numba.set_num_threads(1)  # the processes share the cores already
    except Exception:
        pass
    while True:
        task = _receive(tasks)
        if task is None:
            return
        _send(results, work(task))


class _Worker:
    """The parent's handle on one worker process and the file it holds."""

    def __init__(self):
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
                f"from kernelcli._process import worker_main; worker_main({os.getpid()})")
        env = dict(os.environ)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, close_fds=True)
        self.task = None

    def give(self, task) -> None:
        """Send a task (if the worker has died, its closed stream tells)."""
        self.task = task
        with contextlib.suppress(OSError):  # EPIPE
            _send(self.proc.stdin.fileno(), task)

    def result(self):
        """The result of the task it holds, or None if the worker died."""
        result = _receive(self.proc.stdout.fileno())
        if result is not None:
            self.task = None
        return result

    def death(self) -> str:
        """How it ended (it has closed its end, so it is gone or going)."""
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "a signal"
            return f"worker died (killed by {name}, signal {-code})"
        return f"worker died (exit status {code})"

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()


def _remove_partial_output(dst: Path) -> None:
    """A worker killed while writing ``dst`` may leave its temporary file."""
    with contextlib.suppress(OSError):
        for tmp in temporaries_of(dst):
            with contextlib.suppress(OSError):
                tmp.unlink()


#: Seconds workers have to stop after SIGTERM before they are killed.
STOP_GRACE = 2.0


def run_pool(tasks, jobs, record):
    """Run ``tasks`` (``(source, target, settings)``) on ``jobs`` worker
    processes, one file per worker at a time; ``record(result)`` for each
    result, a failure naming how the worker died for a file whose worker died."""
    queue = deque(tasks)
    workers: list = []
    interrupted = True
    try:
        while queue or any(w.task is not None for w in workers):
            for w in [w for w in workers if w.task is None and w.proc.poll() is not None]:
                w.close()  # died between files: replaced below
                workers.remove(w)
            for w in workers:
                if w.task is None and queue:
                    w.give(queue.popleft())
            while len(workers) < jobs and queue:
                # SIGINT and SIGTERM wait (blocked, not lost) until the new worker
                # is known, so none is left running untracked; it inherits the
                # mask and unblocks them once its own handlers are set.
                with _signals_blocked():
                    w = _Worker()
                    workers.append(w)
                w.give(queue.popleft())
            busy = {w.proc.stdout.fileno(): w for w in workers if w.task is not None}
            ready, _, _ = select.select(list(busy), [], [])
            for fd in ready:
                w = busy[fd]
                result = w.result()
                if result is not None:
                    record(result)
                    continue
                src, dst, _ = w.task  # the worker died holding this file
                reason = w.death()
                w.close()
                workers.remove(w)
                _remove_partial_output(dst)
                record((str(src), False, 0.0, reason))
        interrupted = False
    finally:
        _stop(workers, interrupted)


def _stop(workers, interrupted: bool) -> None:
    """End the workers. After the work: close their streams (they exit). On an
    interruption: SIGTERM (a stopped worker is continued to receive it), then
    SIGKILL after :data:`STOP_GRACE` seconds, and remove what those held half-written.
    Further SIGINT/SIGTERM wait until this is done, so no worker is left behind."""
    with _signals_held():
        for w in workers:
            w.close()
            if interrupted:
                with contextlib.suppress(OSError):
                    w.proc.send_signal(signal.SIGTERM)
                    w.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + (STOP_GRACE if interrupted else 30.0)
        for w in workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            if w.task is not None:
                _remove_partial_output(w.task[1])


@contextlib.contextmanager
def _signals_blocked():
    """Delay SIGINT and SIGTERM to the end of the block (this thread only)."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover (POSIX has it)
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _signals_held():
    """Ignore SIGINT and SIGTERM in the block (the main thread only can)."""
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
