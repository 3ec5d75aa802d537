"""kernelcli.convolve, relu and pool on a Dask array: a lazy result that,
computed, is the in-memory result (itself tested against the plain loops)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import kernelcli  # noqa: E402

RNG = np.random.default_rng(9)
X = RNG.standard_normal((41, 29, 3)).astype(np.float32)
KERNEL = "1,2,3;4,-5,6;-7,8,9"

CASES = [
    dict(),
    dict(pad_mode="reflect", stride=2),
    dict(padding="full", pad_mode="wrap", dilation=2),
    dict(cval=3.0),
    dict(padding="valid", pad_mode="edge", stride=(3, 1)),
    dict(origin=(0, 2), pad_mode="reflect101"),
    dict(padding=(5, 1), pad_mode="reflect", dilation=(3, 1), flip=True),
]


@pytest.mark.parametrize("chunks", [(1, 29, 3), (7, 10, 3), (41, 29, 3)], ids=["rows1", "rows7", "one"])
@pytest.mark.parametrize("kw", CASES, ids=str)
def test_convolve_is_lazy_and_exact(kw, chunks):
    d = da.from_array(X, chunks=chunks)
    got = kernelcli.convolve(d, KERNEL, **kw)
    assert isinstance(got, da.Array)
    want = kernelcli.convolve(X, KERNEL, **kw)
    assert got.shape == want.shape
    assert np.array_equal(got.compute(), want)


def test_a_bank_kernel_gray_and_a_deep_kernel():
    gray = X[..., 0]
    d = da.from_array(gray, chunks=(6, 29))
    assert np.array_equal(kernelcli.convolve(d, "sobel-x", pad_mode="reflect").compute(),
                          kernelcli.convolve(gray, "sobel-x", pad_mode="reflect"))
    deep = RNG.standard_normal((3, 3, 3)).astype(np.float32)
    d3 = da.from_array(X, chunks=(5, 29, 3))
    assert np.array_equal(kernelcli.convolve(d3, deep).compute(), kernelcli.convolve(X, deep))


@pytest.mark.parametrize("kind, size, stride", [("max", 2, None), ("avg", 3, 2), ("sum", (3, 1), (1, 2))])
def test_pool_and_relu(kind, size, stride):
    d = da.from_array(X, chunks=(4, 29, 3))
    got = kernelcli.pool(kernelcli.relu(d, 0.1), kind, size, stride)
    assert isinstance(got, da.Array)
    assert np.array_equal(got.compute(), kernelcli.pool(kernelcli.relu(X, 0.1), kind, size, stride))


def test_numpy_inputs_never_import_dask():
    code = ("import sys, numpy as np, kernelcli; kernelcli.convolve(np.ones((9, 9), np.float32), 'box:3'); "
            "kernelcli.pool(np.ones((4, 4)), 'max'); kernelcli.relu(np.ones((3, 3))); "
            "print([m for m in sys.modules if m.split('.')[0] == 'dask'])")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "[]"
