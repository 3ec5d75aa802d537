"""The engine's plan: the one place that says how a computation runs."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from kernelcli import engine
from kernelcli.engine import _jit, _npkernels
from kernelcli.kernels import as_kernel


def test_both_backends_have_the_same_loops():
    for name in ("correlate_rows", "correlate_depth", "pool_rows"):
        assert inspect.signature(getattr(_jit, name)) == inspect.signature(getattr(_npkernels, name)), name
    assert _jit.FUSED_SEPARABLE and hasattr(_jit, "correlate_separable")
    assert not _npkernels.FUSED_SEPARABLE and not hasattr(_npkernels, "correlate_separable")


def test_the_plan_of_a_call_is_what_convolve_computes():
    x = np.random.default_rng(0).uniform(0, 255, (64, 64)).astype(np.float32)
    weights = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32)
    how = engine.plan_convolution(weights, x.shape, 1, "same", 1)
    assert how.method == "separable" and len(how.factors) == 1
    assert how.pads == ((2, 2), (2, 2)) and how.out_size == (64, 64)
    assert how.work == engine.multiply_adds(weights, 64 * 64)
    assert how.method == engine.method_for(weights, x.shape)
    assert engine.plan_convolution(weights, x.shape, 2, "valid", 1).out_size == (30, 30)


def _cut(rows=8):
    return lambda value_bytes: engine.Bands(rows * 4 // value_bytes, (rows + 6, 7), 4, (rows + 6) * 300)


def _bands(kernel="sharpen", **kw):
    args = dict(integer_pixels=True, output_is_plain_8bit=True, pool_kind=None, gray=False, has_alpha=False)
    args.update(kw)
    k = as_kernel(kernel)
    return engine.plan_bands((k,), False, (100, 100, 3), 1, "same", 1, ((0, 0), (3, 3)), _cut(), **args)


def test_an_integer_kernel_on_8bit_pixels_runs_in_int16_bands_twice_as_tall():
    how = _bands()
    assert how.as_whole and how.integer_weights is not None and how.integer_weights.dtype == np.int16
    assert how.bands.rows == 16 and not how.load_numba and not how.take_turns


@pytest.mark.parametrize("change", [dict(output_is_plain_8bit=False), dict(integer_pixels=False),
                                    dict(pool_kind="avg"), dict(gray=True), dict(has_alpha=True),
                                    dict(kernel="gaussian:1")])
def test_the_integer_path_needs_every_condition(change):
    how = _bands(**change)
    assert how.as_whole and how.integer_weights is None and how.bands.rows == 8


def test_a_kernel_run_by_fft_makes_the_image_go_whole():
    big = np.random.default_rng(1).standard_normal((31, 31)).astype(np.float32)
    k = as_kernel(big)
    shape = (2000, 2000)
    assert engine.method_for(big, shape) == "fft"  # the premise
    how = engine.plan_bands((k,), False, shape, 1, "same", 1, ((0, 0), (15, 15)), _cut(),
                            integer_pixels=False, output_is_plain_8bit=False, pool_kind=None, gray=False,
                            has_alpha=False)
    assert not how.as_whole
    assert not engine.numba_ahead((k,), False, shape, 1, "same", 1)
