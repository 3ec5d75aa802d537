"""kernelcli._threads: the helper threads kept for the engine's loops and FFT tiles."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from kernelcli.engine import _threads


def test_worker_runs_here_and_on_each_helper():
    names = []
    lock = threading.Lock()
    start = threading.Barrier(3, timeout=10)  # all three at once, or it fails

    def worker():
        start.wait()
        with lock:
            names.append(threading.current_thread().name)

    _threads.run(worker, 2)
    assert len(names) == 3 and len(set(names)) == 3
    assert threading.current_thread().name in names


def test_helpers_are_kept_between_calls():
    seen = []
    _threads.run(lambda: seen.append(threading.get_ident()), 1)
    pool = _threads._pool
    _threads.run(lambda: seen.append(threading.get_ident()), 1)
    assert _threads._pool is pool


def test_an_error_on_a_helper_reaches_the_caller():
    here = threading.get_ident()

    def worker():
        if threading.get_ident() != here:
            raise ZeroDivisionError("on a helper")

    with pytest.raises(ZeroDivisionError, match="on a helper"):
        _threads.run(worker, 1)


def test_an_error_here_waits_for_the_helpers():
    here = threading.get_ident()
    done = threading.Event()

    def worker():
        if threading.get_ident() == here:
            raise KeyError("here")
        done.wait(0.05)
        done.set()

    with pytest.raises(KeyError):
        _threads.run(worker, 1)
    assert done.is_set()  # the helper had finished before run() returned


def test_run_inside_a_helper_does_not_wait_for_its_own_pool():
    inner = []

    def worker():
        # with one helper busy running this, a nested run() that queued work
        # for it would wait forever
        _threads.run(lambda: inner.append(1), 1)

    t = threading.Thread(target=_threads.run, args=(worker, 1), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive()
    assert inner.count(1) >= 3  # here twice (caller's nested run) + inline on the helper


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_makes_its_own_helpers():
    _threads.run(lambda: None, 1)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: the inherited pool has no threads
        try:
            hits = []
            _threads.run(lambda: hits.append(1), 1)
            os._exit(0 if len(hits) == 2 else 3)
        except BaseException:
            os._exit(4)
    deadline = 20
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    pytest.fail("the child hung on the parent's pool")


def test_convolve_from_several_threads_at_once_shares_the_helpers():
    """Callers on their own threads (Dask, a web server) share the kept
    helpers: every result is the one a lone call gives, and nothing hangs."""
    import numpy as np

    from kernelcli import engine  # noqa: F401
    from kernelcli.engine import _jit  # noqa: F401  (Numba loaded: the threaded loops run)

    rng = np.random.default_rng(3)
    jobs = [(rng.normal(0, 50, (1000, 1000 + 7 * i)).astype(np.float32), k)  # enough work for helpers
            for i, k in enumerate(["sharpen", "gaussian:1.5", "edge", "box:5"] * 2)]
    want = [engine.convolve(x, k) for x, k in jobs]
    got = [None] * len(jobs)

    def one(i):
        for _ in range(3):
            got[i] = engine.convolve(*jobs[i])

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
