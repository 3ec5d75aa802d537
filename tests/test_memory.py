"""kernelcli._memory: large arrays laid on memory that earlier arrays gave back.

Sizes are made small here (``MIN_BYTES`` lowered) so that every engine path
runs on reused memory; a reused mapping is first filled with NaN, so a
result that does not overwrite every value shows it.
"""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

from kernelcli import _memory, engine
from kernelcli.engine import plan

from .reference import correlate_ref, rand_image, rand_kernel


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture
def reuse(monkeypatch):
    """Every array of 1 KiB or more goes through the kept mappings."""
    monkeypatch.setattr(_memory, "MIN_BYTES", 1024)
    _memory.release()
    yield
    _memory.release()


def test_small_arrays_are_plain_numpy_arrays():
    a = _memory.empty((16, 16))
    assert a.flags.owndata and a.dtype == np.float32 and a.shape == (16, 16)


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_a_dropped_array_is_reused_for_the_next_of_its_size(reuse):
    a = _memory.empty((64, 48, 3))
    assert a.shape == (64, 48, 3) and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable
    a[...] = 7
    first = address(a)
    del a
    gc.collect()
    assert _memory.kept_bytes() >= 64 * 48 * 3 * 4
    b = _memory.empty((64, 144))  # same bytes, other shape
    assert address(b) == first and np.all(b == 7)  # a new mapping would be zeroed
    assert _memory.kept_bytes() == 0
    c = _memory.empty((65, 144))  # other bytes: a new mapping
    assert address(c) != first


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_a_live_view_keeps_its_memory_from_reuse(reuse):
    a = _memory.empty((100, 100))
    a[...] = 1
    view = a[10:20, ::2]
    del a
    gc.collect()
    b = _memory.empty((100, 100))
    b[...] = 2
    assert not np.shares_memory(view, b)
    assert np.all(view == 1)
    del view
    gc.collect()
    assert _memory.kept_bytes() > 0  # now the first one came back


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_kept_mappings_are_capped_oldest_first(reuse, monkeypatch):
    monkeypatch.setattr(_memory, "KEEP_COUNT", 2)
    arrays = [_memory.empty((256, n)) for n in (10, 20, 30)]
    for a in arrays:
        a[...] = a.shape[1]  # a reused mapping still holds its old values; a new one is zeroed
    del a
    while arrays:
        del arrays[0]  # (256, 10) comes back first
    gc.collect()
    assert len(_memory._kept) == 2
    taken = [_memory.empty((256, n)) for n in (20, 30, 10)]  # (the last one, a miss, clears the rest)
    assert [float(a[0, 0]) for a in taken] == [20.0, 30.0, 0.0]
    assert _memory.kept_bytes() == 0
    del taken

    monkeypatch.setattr(_memory, "KEEP_BYTES", 8192)
    big = _memory.empty((256, 100))  # 100 KiB: more than may be kept
    del big
    gc.collect()
    assert _memory.kept_bytes() == 0


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_release_gives_everything_back(reuse):
    arrays = [_memory.empty((128, 128)), _memory.empty((64, 64))]
    del arrays
    gc.collect()
    assert _memory.kept_bytes() > 0
    _memory.release()
    assert _memory.kept_bytes() == 0


def _dirty(shape):
    """Leave a NaN-filled mapping of ``shape`` float32 values to be reused;
    return a check that ``result`` was laid on it. (Not by address alone: a
    new mapping may land where a freed one was, but then the kept one would
    still be waiting.)"""
    a = _memory.empty(shape)
    a[...] = np.nan
    where = address(a)
    del a
    gc.collect()
    mapping = _memory._kept[-1][1]

    def took(result):
        return address(result) == where and all(m is not mapping for _, m in _memory._kept)

    return took


def _force(monkeypatch, method):
    """Make engine.convolve compute by ``method`` (FFT tiles: the kernel's
    size plus 3 rows and 2 columns)."""

    def forced(weights, *args, **kw):
        size = (weights.shape[0] + 3, weights.shape[1] + 2) if method == "fft" else None
        return method, size

    monkeypatch.setattr(plan, "_choose", forced)


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
@pytest.mark.parametrize("method", ["direct", "separable", "fft"])
@pytest.mark.parametrize("shape", [(40, 56), (33, 21, 3)])
def test_convolve_overwrites_reused_memory(reuse, monkeypatch, method, shape):
    _force(monkeypatch, method)
    x = rand_image(shape, 3)
    k = np.outer([1.0, 2.0, -1.0, 0.5, 3.0], [0.5, 1.0, 0.25, 2.0, -1.0, 1.5]).astype(np.float32)  # rank 1
    took = _dirty(shape)
    got = engine.convolve(x, k)
    assert took(got), "the result was not laid on the kept mapping"
    pads = ((2, 2), (2, 3))
    np.testing.assert_allclose(got, correlate_ref(x, k, pads=pads), rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_strided_depth_pool_and_relu_overwrite_reused_memory(reuse):
    x = rand_image((48, 40, 3), 5)
    k = rand_kernel((3, 3), 6)
    took = _dirty((24, 20, 3))
    got = engine.convolve(x, k, stride=2)
    assert took(got)
    np.testing.assert_allclose(got, correlate_ref(x, k, stride=2, pads=((1, 1), (1, 1))), rtol=1e-5, atol=1e-4)

    deep = np.stack([rand_kernel((3, 3), s) for s in (7, 8, 9)], axis=2)
    took = _dirty((48, 40))
    got = engine.convolve(x, deep)
    assert took(got)
    want = sum(correlate_ref(x[:, :, i], deep[:, :, i], pads=((1, 1), (1, 1))) for i in range(3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)

    took = _dirty((24, 60))
    got = engine.pool(x, "max", 2)
    assert took(got)
    np.testing.assert_array_equal(got, x.reshape(24, 2, 20, 2, 3).max(axis=(1, 3)))

    signed = x - np.float32(0.5)
    for slope in (0.0, 0.1):
        took = _dirty(signed.shape)
        got = engine.relu(signed, slope)
        assert took(got)
        np.testing.assert_array_equal(got, np.where(signed > 0, signed, signed * np.float32(slope)))


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_converted_input_is_a_full_copy(reuse):
    x = (np.arange(60 * 50 * 3) % 251).astype(np.uint8).reshape(60, 50, 3)
    took = _dirty(x.shape)
    got = engine.as_image_array(x)
    assert took(got)
    np.testing.assert_array_equal(got, x.astype(np.float32))
    strided = np.arange(40 * 80, dtype=np.float64).reshape(40, 80)[:, ::2]
    np.testing.assert_array_equal(engine.as_image_array(strided), strided.astype(np.float32))


def test_memory_check_gives_kept_mappings_back_first(monkeypatch):
    monkeypatch.setattr(_memory, "_kept", type(_memory._kept)([(1 << 30, object())]))
    free = iter([100 << 20, 2 << 30])
    monkeypatch.setattr(_memory, "available_memory", lambda: next(free))
    _memory.ensure_memory(1 << 30, "a test result")  # fits once the kept GiB is gone
    assert _memory.kept_bytes() == 0


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_threads_never_share_a_live_mapping(reuse):
    errors = []

    def work(mark):
        for _ in range(300):
            a = _memory.empty((32, 64))
            a[...] = mark
            b = _memory.empty((32, 64))  # while `a` lives, never on its memory
            b[...] = -mark
            if not (np.all(a == mark) and np.all(b == -mark)):
                errors.append(mark)
            del a, b

    threads = [threading.Thread(target=work, args=(m,)) for m in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_memory._kept) <= _memory.KEEP_COUNT


@pytest.mark.skipif(not hasattr(os, "fork") or not _memory._MAPPED, reason="needs fork() and private mappings")
def test_a_forked_child_writes_its_own_copy(reuse):
    a = _memory.empty((64, 64))
    a[...] = 1
    pid = os.fork()
    if pid == 0:  # the child
        a[...] = 2
        os._exit(0 if np.all(a == 2) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert np.all(a == 1)


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_release_memory_is_public(reuse):
    import kernelcli

    a = _memory.empty((64, 64))
    del a
    gc.collect()
    assert _memory.kept_bytes() > 0
    kernelcli.release_memory()
    assert _memory.kept_bytes() == 0


@pytest.mark.skipif(not _memory._MAPPED, reason="no private mappings on this system")
def test_an_array_of_a_new_size_gives_the_kept_ones_back_first(reuse):
    a, b = _memory.empty((64, 64)), _memory.empty((32, 32))
    del a, b
    gc.collect()
    assert len(_memory._kept) == 2
    same = _memory.empty((32, 32))  # a hit: the other one stays kept
    assert _memory.kept_bytes() == 64 * 64 * 4
    other = _memory.empty((50, 50))  # a miss: nothing stays kept beside it
    assert _memory.kept_bytes() == 0
    del same, other
