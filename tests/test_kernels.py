"""kernelcli.kernels: the named library, sized forms, inline / ImageMagick specs, kernel files."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from kernelcli import engine
from kernelcli import kernels as K
from kernelcli.errors import KernelcliError, KernelError

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------
# the named library

NAMED = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "edge": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "edge-cross": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "edge-diagonal": [[1, 0, -1], [0, 0, 0], [-1, 0, 1]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_integer_kernels_exact(name):
    k = K.get_kernel(name)
    assert k.array.dtype == np.float32
    assert k.shape == (3, 3)
    assert np.array_equal(k.array, np.array(NAMED[name], dtype=np.float32))


def test_named_box():
    k = K.get_kernel("box")
    assert k.array.dtype == np.float32
    assert np.array_equal(k.array, (np.ones((3, 3)) / 9).astype(np.float32))
    np.testing.assert_allclose(k.array, np.ones((3, 3), np.float32) / np.float32(9), rtol=1e-7)


def test_named_gaussian():
    k = K.get_kernel("gaussian")
    want = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / np.float32(16)
    assert k.array.dtype == np.float32
    assert np.array_equal(k.array, want)  # exact: powers of two
    assert k.scale_text == "1/16"
    assert math.isclose(float(k.array.sum()), 1.0)


def test_names_lists_every_library_file():
    stems = {p.stem for p in (ROOT / "kernels").glob("*.txt")}
    names = K.names()
    assert set(names) == stems
    assert len(names) == len(set(names))
    assert names == sorted(names)
    for required in ["identity", "edge", "edge-cross", "edge-diagonal", "sharpen", "box", "gaussian"]:
        assert required in names


@pytest.mark.parametrize("name", K.names())
def test_every_named_kernel_loads_and_has_description(name):
    k = K.get_kernel(name)
    assert k.description.strip(), name
    assert k.values.ndim == 2 and min(k.shape) >= 1
    assert np.all(np.isfinite(k.array))
    assert K.library()[name] is k


def test_name_lookup_ignores_case_and_spaces():
    assert np.array_equal(K.get_kernel("Sharpen").array, K.get_kernel("sharpen").array)
    assert np.array_equal(K.get_kernel("  edge  ").array, K.get_kernel("edge").array)


def test_unknown_name_suggests_closest_and_lists_known():
    with pytest.raises(KernelError) as info:
        K.get_kernel("sharpn")
    msg = str(info.value)
    assert "sharpen" in msg
    assert "sharpn" in msg
    for name in K.names():
        assert name in msg


def test_unknown_name_via_engine_is_kernel_error():
    with pytest.raises(KernelError):
        engine.convolve(np.ones((4, 4)), "blurr")


def test_missing_kernel_file():
    with pytest.raises(KernelError, match="not found"):
        K.get_kernel("no/such/kernel.txt")


# --------------------------------------------------------------------------
# sized forms


def test_box_n():
    k = K.get_kernel("box:5")
    assert k.shape == (5, 5)
    np.testing.assert_allclose(k.array, np.full((5, 5), 1 / 25, np.float32), rtol=1e-7)
    assert math.isclose(float(k.values.sum() * k.scale), 1.0)


def test_box_rows_cols():
    k = K.get_kernel("box:3,7")
    assert k.shape == (3, 7)  # rows, cols
    np.testing.assert_allclose(k.array, np.full((3, 7), 1 / 21, np.float32), rtol=1e-7)
    # as a convolution it is the mean over the window
    x = np.arange(70, dtype=np.float32).reshape(7, 10)
    got = engine.convolve(x, "box:3,7", padding="valid")
    want = np.array([[x[i:i + 3, j:j + 7].mean() for j in range(4)] for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _gauss_ref(sigma, size):
    c = (size - 1) / 2
    g = np.array([[math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma * sigma)) for j in range(size)]
                  for i in range(size)])
    return g / g.sum()


def test_gaussian_sigma_default_size():
    k = K.get_kernel("gaussian:1.5")
    size = 2 * math.ceil(3 * 1.5) + 1
    assert size == 11
    assert k.shape == (11, 11)
    v = k.values * k.scale
    assert math.isclose(v.sum(), 1.0, rel_tol=1e-12)
    assert math.isclose(float(k.array.sum(dtype=np.float64)), 1.0, rel_tol=1e-5)
    assert np.allclose(v, v.T) and np.allclose(v, v[::-1, :]) and np.allclose(v, v[:, ::-1])
    assert v[5, 5] == v.max()
    np.testing.assert_allclose(v, _gauss_ref(1.5, 11), rtol=1e-10)


def test_gaussian_sigma_and_size():
    k = K.get_kernel("gaussian:1,5")
    assert k.shape == (5, 5)
    v = k.values * k.scale
    assert math.isclose(v.sum(), 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(v, _gauss_ref(1.0, 5), rtol=1e-10)


@pytest.mark.parametrize("sigma,size", [(0.5, 5), (1, 7), (2, 13), (0.1, 3)])
def test_gaussian_sizes(sigma, size):
    assert K.get_kernel(f"gaussian:{sigma}").shape == (size, size)


@pytest.mark.parametrize("spec", ["gaussian:1e6", "gaussian:200", "box:2000", "box:3,5000", "gaussian:1,5000"])
def test_sized_too_large_refused(spec):
    with pytest.raises(KernelError) as info:
        K.get_kernel(spec)
    msg = str(info.value)
    assert "1025" in msg or "large" in msg or "wider" in msg


@pytest.mark.parametrize("spec", ["box:0", "box:2.5", "box:", "box:1,2,3", "gaussian:0", "gaussian:-1",
                                  "gaussian:abc", "gaussian:1,0", "gaussian:nan"])
def test_sized_bad_arguments(spec):
    with pytest.raises(KernelError):
        K.get_kernel(spec)


# --------------------------------------------------------------------------
# inline matrices and ImageMagick strings

BINOMIAL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)


@pytest.mark.parametrize(
    "spec,want",
    [
        ("1,0,1;0,1,0;1,0,1", [[1, 0, 1], [0, 1, 0], [1, 0, 1]]),
        ("1 2 1; 2 4 2; 1 2 1", BINOMIAL),
        ("1, 2, 1 ;2,4,2;  1 2 1", BINOMIAL),
        ("-1 0 1", [[-1, 0, 1]]),
        ("1;2;3", [[1], [2], [3]]),
        ("0.5 -0.25; 1e-1 2", [[0.5, -0.25], [0.1, 2]]),
        ("1/4 1/2 1/4", [[0.25, 0.5, 0.25]]),
    ],
)
def test_inline_matrices(spec, want):
    k = K.get_kernel(spec)
    assert k.array.dtype == np.float32
    assert np.array_equal(k.array, np.array(want, dtype=np.float32))


@pytest.mark.parametrize("spec,word", [("1,2;3", "ragged"), ("1,x;2,3", "not a number"),
                                       ("1;nan", "finite"), ("1,inf;2,3", "finite"), ("1 inf", "inf"), ("1 2;;3 4", "empty"),
                                       ("1/0", "not a number")])
def test_inline_malformed(spec, word):
    with pytest.raises(KernelError, match=word):
        K.get_kernel(spec)


@pytest.mark.parametrize("spec", ["3x3: 1,2,1 2,4,2 1,2,1", "3: 1,2,1 2,4,2 1,2,1", "3x3:1 2 1 2 4 2 1 2 1",
                                  "3x3+1+1: 1,2,1,2,4,2,1,2,1"])
def test_imagemagick(spec):
    assert np.array_equal(K.get_kernel(spec).array, BINOMIAL)


def test_imagemagick_width_by_height():
    k = K.get_kernel("3x2: 1,2,3 4,5,6")  # 3 wide, 2 tall
    assert k.shape == (2, 3)
    assert np.array_equal(k.array, np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_imagemagick_nan_taps_count_as_zero():
    k = K.get_kernel("3x3: nan,1,nan 1,1,1 nan,1,NaN")
    assert np.array_equal(k.array, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32))
    assert np.all(np.isfinite(k.array))


@pytest.mark.parametrize("spec,n", [("3x3: 1,2,1", 3), ("3: 1 2 3 4 5 6 7 8 9 10", 10), ("2x3: 1 2 3 4 5", 5)])
def test_imagemagick_wrong_count_refused(spec, n):
    with pytest.raises(KernelError) as info:
        K.get_kernel(spec)
    assert "values" in str(info.value) and str(n) in str(info.value)


def test_imagemagick_infinite_refused():
    with pytest.raises(KernelError):
        K.get_kernel("2x1: 1 inf")


# --------------------------------------------------------------------------
# text files


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_text_file_comments_blank_lines_commas_scale(tmp_path):
    p = write(tmp_path, "blur.txt", """
# a Gaussian, written by hand

description: my blur
scale: 1/16   # the sum
1, 2, 1
2  4  2   # middle row

1,2 ,1
""")
    for spec in (p, str(p)):
        k = K.get_kernel(spec)
        assert k.shape == (3, 3)
        assert np.array_equal(k.array, BINOMIAL / np.float32(16))
        assert k.scale_text == "1/16"
        assert k.description == "my blur"
    assert np.array_equal(K.load_file(p).values, BINOMIAL.astype(np.float64))


def test_text_file_fractions_and_decimals(tmp_path):
    p = write(tmp_path, "f.txt", "1/9 1/9 1/9\n0.5 -0.25 1e-2\n-3/4 2 0\n")
    k = K.load_file(p)
    np.testing.assert_array_equal(k.values, [[1 / 9, 1 / 9, 1 / 9], [0.5, -0.25, 0.01], [-0.75, 2, 0]])


def test_text_file_offset_setting(tmp_path):
    p = write(tmp_path, "o.txt", "offset: 128\n0 -1 0\n")
    k = K.load_file(p)
    assert k.offset == 128
    got = engine.convolve(np.full((3, 4), 7.0, np.float32), p, padding="same", pad_mode="edge")
    assert np.array_equal(got, np.full((3, 4), 121.0, np.float32))


def test_sample_example_filter_file():
    k = K.get_kernel(str(ROOT / "samples" / "example-filter.txt"))
    assert np.array_equal(k.array, np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32))


def _kernel_error(tmp_path, name, text):
    p = write(tmp_path, name, text)
    with pytest.raises(KernelError) as info:
        K.get_kernel(str(p))
    return str(info.value), p


def test_ragged_rows_names_file_and_line(tmp_path):
    msg, p = _kernel_error(tmp_path, "ragged.txt", "1 2 1\n2 4 2\n1 2\n")
    assert "ragged.txt" in msg
    assert "line 3" in msg
    assert "ragged" in msg


def test_ragged_rows_line_counts_comments_and_blanks(tmp_path):
    msg, _ = _kernel_error(tmp_path, "ragged2.txt", "# header\n\n1 2 1\n\n2 4\n1 2 1\n")
    assert "ragged2.txt" in msg and "line 5" in msg


@pytest.mark.parametrize(
    "text,word",
    [
        ("1 2 1\n2 x 2\n1 2 1\n", "not a number"),
        ("1 2 1\n2 four 2\n1 2 1\n", "not a number"),
        ("1 2 1\n2 nan 2\n1 2 1\n", "finite"),
        ("1 2 1\n2 inf 2\n1 2 1\n", "finite"),
        ("1 2 1\n2 -inf 2\n1 2 1\n", "finite"),
        ("1 2 1\n2 4 2\n1 2 1e999\n", "finite"),
        ("", "empty"),
        ("\n\n   \n", "empty"),
        ("# only a comment\ndescription: nothing\n", "empty"),
        ("bias: 3\n1 2 1\n", "unknown setting"),
        ("scale: one\n1 2 1\n", "not a number"),
        ("scale: 1/0\n1 2 1\n", "not a number"),
    ],
)
def test_malformed_text_files(tmp_path, text, word):
    msg, p = _kernel_error(tmp_path, "bad.txt", text)
    assert word in msg
    assert "bad.txt" in msg


def test_malformed_non_number_names_line(tmp_path):
    msg, _ = _kernel_error(tmp_path, "nn.txt", "1 2 1\n2 x 2\n1 2 1\n")
    assert "line 2" in msg and "'x'" in msg


def test_binary_garbage_refused(tmp_path):
    p = tmp_path / "garbage.bin"
    p.write_bytes(b"\xff\xfe\x00\x01\x80" * 20)
    with pytest.raises(KernelError):
        K.load_file(p)


def test_plain_text_kernel_that_looks_like_a_mat_header(tmp_path):
    """A .txt kernel in the plain text format must be read as written.

    The first row "3 2 1" also parses as a libvips header (width 3, height 2)
    and the remaining two rows happen to be 3 wide, but this is a 3x3 matrix.
    """
    p = write(tmp_path, "k.txt", "3 2 1\n1 2 3\n4 5 6\n")
    k = K.load_file(p)
    assert k.shape == (3, 3)
    assert np.array_equal(k.values, [[3, 2, 1], [1, 2, 3], [4, 5, 6]])


def test_plain_text_2x2_kernel_that_looks_like_a_mat_header(tmp_path):
    p = write(tmp_path, "k2.txt", "2 1\n1 1\n")
    k = K.load_file(p)
    assert k.shape == (2, 2)
    assert np.array_equal(k.values, [[2, 1], [1, 1]])


# --------------------------------------------------------------------------
# libvips .mat files


def test_vips_mat_scale_and_offset(tmp_path):
    p = write(tmp_path, "blur.mat", "3 3 9 10\n1 1 1\n1 1 1\n1 1 1\n")
    k = K.get_kernel(str(p))
    assert k.shape == (3, 3)
    np.testing.assert_allclose(k.array, np.full((3, 3), 1 / 9, np.float32), rtol=1e-7)
    assert k.offset == 10
    assert "scale: 1/9" in k.format() and "offset: 10" in k.format()
    # the engine adds the offset to every output
    x = np.full((5, 6), 4.0, np.float32)
    got = engine.convolve(x, p, pad_mode="edge")
    np.testing.assert_allclose(got, np.full((5, 6), 14.0), rtol=1e-6)
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 10, (6, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(engine.convolve(y, p, padding="valid"),
                               engine.convolve(y, "box", padding="valid") + 10, rtol=1e-6, atol=1e-5)


def test_vips_mat_scale_only_and_no_scale(tmp_path):
    p = write(tmp_path, "g.mat", "3 3 16\n1 2 1\n2 4 2\n1 2 1\n")
    k = K.load_file(p)
    assert np.array_equal(k.array, BINOMIAL / np.float32(16))
    assert k.offset == 0
    p = write(tmp_path, "plain.mat", "3 3\n-1 0 1\n-2 0 2\n-1 0 1\n")
    assert np.array_equal(K.load_file(p).array, K.get_kernel("sobel-x").array)


def test_vips_mat_width_then_height(tmp_path):
    p = write(tmp_path, "wide.mat", "3 2 1 0\n1 2 3\n4 5 6\n")
    k = K.load_file(p)
    assert k.shape == (2, 3)
    assert np.array_equal(k.array, np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_vips_mat_detected_by_content(tmp_path):
    p = write(tmp_path, "blur.kern", "3 3 9 10\n1 1 1\n1 1 1\n1 1 1\n")
    k = K.load_file(p)
    assert k.offset == 10 and k.shape == (3, 3)
    np.testing.assert_allclose(k.array, np.full((3, 3), 1 / 9, np.float32), rtol=1e-7)


def test_vips_mat_negative_scale(tmp_path):
    p = write(tmp_path, "neg.mat", "1 1 -2\n4\n")
    assert np.array_equal(K.load_file(p).array, np.array([[-2]], np.float32))


@pytest.mark.parametrize(
    "text,word",
    [
        ("3 3\n1 1 1\n1 1 1\n", "header"),
        ("3 3 0\n1 1 1\n1 1 1\n1 1 1\n", "scale"),
        ("3\n1 1 1\n", "WIDTH"),
        ("2.5 2\n1 1\n1 1\n", "WIDTH"),
        ("2 2\n1 1\n1 x\n", "not a number"),
        ("2 2\n1 1\n1\n", "ragged"),
        ("", "empty"),
    ],
)
def test_vips_mat_malformed(tmp_path, text, word):
    p = write(tmp_path, "bad.mat", text)
    with pytest.raises(KernelError) as info:
        K.load_file(p)
    assert word in str(info.value)


# --------------------------------------------------------------------------
# .npy kernel files


def test_npy_kernel(tmp_path):
    arr = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int16)
    p = tmp_path / "k.npy"
    np.save(p, arr)
    k = K.get_kernel(str(p))
    assert k.shape == (3, 2)
    assert np.array_equal(k.array, arr.astype(np.float32))
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    assert np.array_equal(engine.convolve(x, p, padding="valid"),
                          engine.convolve(x, arr, padding="valid"))


def test_npy_kernel_detected_without_suffix(tmp_path):
    p = tmp_path / "kernel.bin"
    with open(p, "wb") as f:
        np.save(f, np.eye(3))
    assert np.array_equal(K.load_file(p).array, np.eye(3, dtype=np.float32))


class _Touch:
    """Unpickling this would create a file: proves no pickle is ever loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_object_npy_refused(tmp_path):
    marker = tmp_path / "unpickled"
    p = tmp_path / "evil.npy"
    arr = np.empty((1, 2), dtype=object)
    arr[0, 0] = _Touch(marker)
    arr[0, 1] = 1
    np.save(p, arr, allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(KernelError):
        K.get_kernel(str(p))
    assert not marker.exists()
    p2 = tmp_path / "objects.npy"
    np.save(p2, np.array([[1, "a"], [None, 2.0]], dtype=object), allow_pickle=True)
    with pytest.raises(KernelError):
        K.load_file(p2)


@pytest.mark.parametrize(
    "arr,word",
    [
        (np.ones(3), "2-D"),
        (np.ones((2, 2, 2, 2)), "2-D"),
        (np.array([["a", "b"]]), "numeric"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "NaN"),
        (np.ones((0, 3)), "empty"),
    ],
)
def test_npy_bad_contents(tmp_path, arr, word):
    p = tmp_path / "bad.npy"
    np.save(p, arr)
    with pytest.raises(KernelError) as info:
        K.load_file(p)
    assert word in str(info.value)


def test_truncated_npy_refused(tmp_path):
    p = tmp_path / "t.npy"
    np.save(p, np.ones((4, 4)))
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(KernelcliError):
        K.load_file(p)


# --------------------------------------------------------------------------
# arrays and Kernel objects as specs


def test_array_and_kernel_specs():
    k = K.get_kernel([[1, 2], [3, 4]])
    assert np.array_equal(k.array, np.array([[1, 2], [3, 4]], np.float32))
    assert K.get_kernel(k) is k
    for bad in (np.ones(3), np.ones((2, 2, 2, 2)), np.array([["a"]]), np.array([[np.nan]]), np.ones((0, 2))):
        with pytest.raises(KernelError):
            K.get_kernel(bad)
    for bad in ("", "   "):
        with pytest.raises(KernelError):
            K.get_kernel(bad)


def test_flipped():
    k = K.get_kernel("1 2 3; 4 5 6")
    assert np.array_equal(k.flipped().array, np.array([[6, 5, 4], [3, 2, 1]], np.float32))


# --------------------------------------------------------------------------
# normalized() and format()


def test_normalized_box_unchanged_in_effect():
    box = K.get_kernel("box")
    norm, _changed = box.normalized()
    np.testing.assert_allclose(norm.array, box.array, rtol=1e-7)
    np.testing.assert_allclose(norm.array.sum(dtype=np.float64), 1.0, rtol=1e-6)


def test_normalized_row():
    k = K.get_kernel("1 2 1")
    norm, changed = k.normalized()
    assert changed is True
    assert np.array_equal(norm.array, np.array([[0.25, 0.5, 0.25]], np.float32))
    assert math.isclose(float(norm.array.sum()), 1.0)
    assert np.array_equal(k.array, np.array([[1, 2, 1]], np.float32))  # original untouched


def test_normalized_negative_sum():
    norm, changed = K.get_kernel("1 -3").normalized()
    assert changed is True
    assert np.array_equal(norm.array, np.array([[-0.5, 1.5]], np.float32))


@pytest.mark.parametrize("name", ["edge", "edge-cross", "edge-diagonal", "sobel-x", "prewitt-y"])
def test_normalized_zero_sum_unchanged(name):
    k = K.get_kernel(name)
    norm, changed = k.normalized()
    assert changed is False
    assert np.array_equal(norm.array, k.array)


def test_format_gaussian():
    text = K.get_kernel("gaussian").format()
    lines = text.splitlines()
    assert "scale: 1/16" in lines
    for row in ("1 2 1", "2 4 2"):
        assert row in lines
    assert lines[-3:] == ["1 2 1", "2 4 2", "1 2 1"]
    assert "gaussian" in lines[0] and "3x3" in lines[0]


def test_format_aligns_and_omits_unit_scale():
    text = K.get_kernel("edge").format()
    assert "scale" not in text
    assert text.splitlines()[-3:] == ["-1 -1 -1", "-1  8 -1", "-1 -1 -1"]
    frac = K.get_kernel("0.5 0.25").format()
    assert "0.5" in frac and "0.25" in frac


def test_npy_depth_kernel_is_accepted(tmp_path):
    p = tmp_path / "depth.npy"
    np.save(p, np.arange(18, dtype=np.float32).reshape(3, 3, 2))
    k = K.get_kernel(str(p))
    assert k.shape == (3, 3) and k.depth == 2
    assert "channel 1:" in k.format()


def test_a_kernel_is_an_array_where_numpy_expects_one():
    k = K.get_kernel("gaussian")
    expected = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16
    arr = np.asarray(k)
    assert arr.dtype == np.float32 and arr.shape == (3, 3)
    assert np.array_equal(arr, expected)
    assert np.allclose(k, expected)
    assert np.asarray(k, dtype=np.float64).dtype == np.float64
    arr[0, 0] = 99  # a new array each time: the kernel is not changed through it
    assert np.array_equal(np.asarray(k), expected)
    scaled = K.get_kernel("1,2;3,4")
    assert np.array_equal(np.asarray(scaled), scaled.array)
