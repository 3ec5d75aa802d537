"""No BLAS or LAPACK call computes kernelcli's numbers.

A BLAS product (``dot``, ``tensordot``, ``matmul``/``@``, ``einsum``,
``inner``) or a LAPACK routine (``np.linalg``) picks its kernel by CPU and
blocks by array shape: a band of rows and the whole image would round
differently, and so would two machines. Every path whose bytes are promised
equal to another's (bands and the whole image, a pipe and ``apply``, the
NumPy twins and the Numba loops) uses fixed-order element-wise float32
arithmetic instead. Two guards: the source holds no such call, and the band
and whole pipelines run with those functions replaced by ones that raise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import kernelcli
from kernelcli import stages
from kernelcli.run import bands, files, tiled
from kernelcli.io.encode import format_for, write_image
from kernelcli.io.inputs import read_image
from kernelcli.stages import Pool, Stages, make_conv

PACKAGE = Path(kernelcli.__file__).parent
BLAS_NAMES = {"dot", "tensordot", "einsum", "matmul", "inner", "vdot", "linalg", "kron"}


def _blas_uses(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
            yield node.lineno, "@"
        elif isinstance(node, ast.Attribute) and node.attr in BLAS_NAMES:
            yield node.lineno, node.attr
        elif isinstance(node, ast.alias) and node.name.split(".")[-1] in BLAS_NAMES:
            yield node.lineno, node.name


def test_the_scanner_finds_what_it_looks_for():
    code = "import numpy as np\nfrom numpy import linalg\na = b @ c\nd = np.tensordot(a, b)\ne = x.dot(y)\n"
    assert sorted(name for _, name in _blas_uses(ast.parse(code))) == ["@", "dot", "linalg", "tensordot"]


@pytest.mark.parametrize("module", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")))
def test_no_blas_call_in_the_package(module):
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    assert list(_blas_uses(tree)) == []


def _raiser(name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"np.{name} was called: its result depends on the CPU's BLAS kernel")
    return refuse


@pytest.fixture
def no_blas(monkeypatch):
    for name in ("dot", "tensordot", "einsum", "matmul", "inner", "vdot", "kron"):
        monkeypatch.setattr(np, name, _raiser(name))
    for name in ("svd", "lstsq", "solve", "inv", "qr", "eigh", "eig", "norm"):
        monkeypatch.setattr(np.linalg, name, _raiser(f"linalg.{name}"))


@pytest.mark.parametrize("kernel, steps", [
    ("sobel-x,sobel-y,box:3", {"gray": True}),
    ("gaussian:2.5", {"gray": True, "relu": True}),  # separable: the factors too
    ("edge", {"gray": True, "pool": Pool("max", 2, None)}),
    ("box:5", {}),
])
@pytest.mark.parametrize("out_ext", ["npy", "png"])
def test_bands_and_whole_image_run_without_blas(tmp_path, monkeypatch, no_blas, kernel, steps, out_ext):
    arr = (np.random.default_rng(11).standard_normal((61, 43, 3)) * 70 + 110).astype(np.float32)
    src = tmp_path / "in.npy"
    np.save(src, arr)
    conv, _ = make_conv(kernel)
    banded = tmp_path / f"banded.{out_ext}"
    if out_ext == "npy":
        tiled.run(src, banded, Stages(conv, **steps), tile_rows=5)
    else:  # a picture output: the command's own path, which goes in bands for a .npy input
        went_in_bands = []
        real = bands.apply_in_bands

        def spy(*args, **kwargs):
            result = real(*args, **kwargs)
            went_in_bands.append(result is not None)
            return result

        monkeypatch.setattr(bands, "apply_in_bands", spy)
        files.apply_file(src, banded, Stages(conv, **steps), max_pixels=None)
        assert went_in_bands == [True]
    whole = stages.apply(read_image(src), conv, **steps)
    expected = tmp_path / f"whole.{out_ext}"
    write_image(expected, whole, format_for(expected))
    assert banded.read_bytes() == expected.read_bytes()


def test_gray_is_the_fixed_order_float32_sum():
    px = np.random.default_rng(3).uniform(0, 255, (17, 13, 3)).astype(np.float32)
    r, g, b = (px[..., i] for i in range(3))
    expected = (r * np.float32(0.299) + g * np.float32(0.587)) + b * np.float32(0.114)
    assert np.array_equal(stages.luma_of(px), expected)
    # the same numbers row by row as for the whole array
    assert np.array_equal(np.concatenate([stages.luma_of(px[i:i + 1]) for i in range(17)]), expected)
