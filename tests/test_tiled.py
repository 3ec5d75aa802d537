"""A .npy processed in bands of rows gives exactly the in-memory result.

Small arrays and tiny bands (down to one row) put many seams everywhere; the
numbers are compared bit for bit with the in-memory pipeline, which is itself
tested against the plain-loop reference in ``reference.py``.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from kernelcli import _memory, engine, stages
from kernelcli.run import bands, files, tiled
from kernelcli.errors import ImageReadError, ImageWriteError, UsageError
from kernelcli.io.encode import PillowCanvas, format_for, write_image
from kernelcli.io.inputs import DEFAULT_MAX_PIXELS, read_image
from kernelcli.io.npy import NpyRows, npy_header
from kernelcli.io.picture import Picture
from kernelcli.io.pixels import clips_to_8bit, to_array
from kernelcli.kernels import Kernel
from kernelcli.io.encode import OutputSpec
from kernelcli.stages import Pool, Stages, make_conv

from .reference import correlate_ref

RNG = np.random.default_rng(7)


def in_memory(src, conv, relu=False, pool=None, gray=False, alpha="keep"):
    return stages.apply(read_image(src), conv, relu=relu, pool=pool, gray=gray, alpha=alpha)


def banded(tmp_path, src, conv, tile_rows, **kw):
    out = tmp_path / "out.npy"
    report = tiled.run(src, out, Stages(conv, **kw), tile_rows=tile_rows)
    return read_image(out), report


def save(tmp_path, arr, name="in.npy"):
    path = tmp_path / name
    np.save(path, arr)
    return path


CASES = [
    # kernel, stride, padding, pad_mode, dilation, pool
    ("sharpen", 1, "same", "zero", 1, None),
    ("box:4", 2, "same", "reflect", 1, None),
    ("box:2,5", 1, "same", "edge", 1, None),
    ("gaussian:1.5", 1, "full", "wrap", 1, Pool("max", 3, 2)),
    ("edge", 3, "valid", "edge", 2, Pool("avg", 2, None)),
    ("box:5", 2, 3, "reflect101", 1, Pool("sum", 2, 1)),
    ("1,2;3,4", (2, 1), (0, 2), "zero", (1, 2), Pool("max", (3, 1), (1, 2))),
    ("sobel-x,sobel-y", 1, "same", "wrap", 1, None),
    ("emboss", 1, "valid", "zero", 3, Pool("max", 2, 2)),
]


@pytest.mark.parametrize("shape", [(37, 23), (41, 19, 3), (16, 9, 4), (1, 30), (30, 1)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[1]}-{c[2]}-{c[3]}")
def test_bands_equal_in_memory_bit_for_bit(tmp_path, shape, case):
    name, stride, padding, mode, dilation, pool = case
    src = save(tmp_path, RNG.standard_normal(shape).astype(np.float32))
    conv, _ = make_conv(name, stride, padding, mode, dilation)
    try:
        want = in_memory(src, conv, relu=True, pool=pool)
    except UsageError as e:  # a kernel that does not fit: the banded run says the same
        with pytest.raises(UsageError) as got:
            banded(tmp_path, src, conv, 2, relu=True, pool=pool)
        assert str(got.value) == str(e)
        return
    for rows in (1, 2, 5, None):
        got, report = banded(tmp_path, src, conv, rows, relu=True, pool=pool)
        assert got.pixels.shape == want.pixels.shape
        assert np.array_equal(got.pixels, want.pixels), (rows, case)
        assert got.labels == want.labels
        if rows:
            assert report.bands == -(-want.pixels.shape[0] // rows)


def test_matches_the_plain_reference_at_seams(tmp_path):
    """Independent of the in-memory engine: the reference loop itself."""
    x = RNG.uniform(0, 255, (29, 17)).astype(np.float32)
    k = RNG.standard_normal((4, 3)).astype(np.float32)
    src = save(tmp_path, x)
    conv, _ = make_conv([Kernel("k", k)], (2, 1), "same", "zero", 1)
    got, _ = banded(tmp_path, src, conv, 3)
    pads, _ = engine.geometry(x.shape, k.shape, (2, 1), "same", 1)
    want = correlate_ref(x, k, stride=(2, 1), pads=pads)
    np.testing.assert_allclose(got.pixels, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("dtype", ["uint8", "<u2", ">u2", "int16", "float64", ">f4"])
def test_any_numeric_dtype_is_read_as_float32(tmp_path, dtype):
    x = RNG.integers(0, 200, (20, 11, 3)).astype(dtype)
    src = save(tmp_path, x)
    conv, _ = make_conv("box:3")
    got, _ = banded(tmp_path, src, conv, 4)
    assert np.array_equal(got.pixels, in_memory(src, conv).pixels)


@pytest.mark.parametrize("alpha", ["keep", "premultiply", "filter"])
def test_picture_metadata_alpha_and_gray_travel_through_bands(tmp_path, alpha):
    """A kernelcli stream (RGBA 16-bit, with its trailer) keeps mode and range."""
    rgba = Picture(RNG.uniform(0, 65535, (23, 14, 4)).astype(np.float32), "RGBA",
                          range_max=65535.0, info={"dpi": (300.0, 300.0)})
    src = tmp_path / "in.npy"
    write_image(src, rgba)
    conv, _ = make_conv("gaussian:1", padding="same", pad_mode="reflect")
    want = in_memory(src, conv, relu=True, pool=Pool("max", 2, None), alpha=alpha)
    got, _ = banded(tmp_path, src, conv, 3, relu=True, pool=Pool("max", 2, None), alpha=alpha)
    assert np.array_equal(got.pixels, want.pixels)
    assert got.mode == want.mode == "RGBA" and got.info.get("dpi") == (300.0, 300.0)
    gray_want = in_memory(src, conv, gray=True)
    gray_got, _ = banded(tmp_path, src, conv, 2, gray=True)
    assert gray_got.mode == gray_want.mode == "LA"
    assert np.array_equal(gray_got.pixels, gray_want.pixels)


def test_depth_kernel_sums_channels_in_bands(tmp_path):
    x = RNG.standard_normal((21, 13, 3)).astype(np.float32)
    src = save(tmp_path, x)
    conv, _ = make_conv([Kernel("k3", RNG.standard_normal((3, 3, 3)))], 1, "same", "edge")
    got, _ = banded(tmp_path, src, conv, 4)
    assert got.pixels.shape == (21, 13)
    assert np.array_equal(got.pixels, in_memory(src, conv).pixels)


def test_automatic_band_height_bounds_the_band(tmp_path, monkeypatch):
    monkeypatch.setattr(bands, "BAND_BYTES", 64 * 1024)
    x = RNG.standard_normal((300, 100)).astype(np.float32)  # 400 bytes a row
    src = save(tmp_path, x)
    conv, _ = make_conv("box:3")
    got, report = banded(tmp_path, src, conv, None)
    assert 1 < report.bands < 300 and report.rows_per_band * 400 <= 64 * 1024
    assert np.array_equal(got.pixels, in_memory(src, conv).pixels)


def test_too_big_for_memory_uses_the_header_only(tmp_path, monkeypatch):
    src = save(tmp_path, np.zeros((64, 64), np.float32))
    source = tiled.open_source(src)
    monkeypatch.setattr(_memory, "available_memory", lambda: 10 * 2**20)
    assert not tiled.too_big_for_memory(source)  # 3 x 16 KiB of 10 MiB
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)
    assert tiled.too_big_for_memory(source)


# --------------------------------------------------------------------------
# refusals


def test_truncated_npy_is_refused_before_any_output(tmp_path):
    src = save(tmp_path, np.zeros((50, 40), np.float32))
    data = src.read_bytes()
    src.write_bytes(data[:-100])
    conv, _ = make_conv("box:3")
    with pytest.raises(ImageReadError, match="truncated"):
        tiled.run(src, tmp_path / "out.npy", Stages(conv), tile_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_fortran_order_is_refused_with_the_fix(tmp_path):
    src = save(tmp_path, np.asfortranarray(np.zeros((10, 8), np.float32)))
    with pytest.raises(ImageReadError, match="Fortran"):
        tiled.open_source(src)


@pytest.mark.parametrize("arr", [np.zeros((4,), np.float32), np.zeros((2, 3, 4, 5), np.float32),
                                 np.array([["a"]]), np.zeros((0, 5), np.float32)])
def test_unusable_arrays_are_refused(tmp_path, arr):
    src = save(tmp_path, arr)
    with pytest.raises(ImageReadError):
        tiled.open_source(src)


def test_full_disk_is_refused_up_front(tmp_path, monkeypatch):
    import shutil as _shutil

    src = save(tmp_path, np.zeros((50, 40), np.float32))
    real = _shutil.disk_usage
    monkeypatch.setattr(tiled.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))
    conv, _ = make_conv("box:3")
    with pytest.raises(ImageWriteError, match="needs .* GiB"):
        tiled.run(src, tmp_path / "out.npy", Stages(conv), tile_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_a_failing_band_leaves_no_output(tmp_path, monkeypatch):
    src = save(tmp_path, RNG.standard_normal((40, 10)).astype(np.float32))
    out = tmp_path / "out.npy"
    out.write_bytes(b"old")
    real = bands.compute_band

    def failing(job, f0, f1, lock=None):
        if f0 >= 20:
            raise OSError(5, "Input/output error")
        return real(job, f0, f1, lock)

    monkeypatch.setattr(tiled, "compute_band", failing)
    conv, _ = make_conv("box:3")
    with pytest.raises(ImageWriteError):
        tiled.run(src, out, Stages(conv), tile_rows=4)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy"]


# --------------------------------------------------------------------------
# the command


@pytest.fixture
def kcli(run_installed):
    """``kcli("apply", ...)``: the installed command (see conftest.run_installed)."""
    return lambda *args, **kwargs: run_installed(list(args), **kwargs)


def test_command_tile_rows_equals_in_memory_run(tmp_path, kcli):
    src = save(tmp_path, RNG.uniform(0, 255, (90, 70, 3)).astype(np.float32))
    args = ["apply", "edge", src, None, "--stride", "2", "--pad-mode", "reflect", "--relu", "--pool", "max"]
    whole = kcli(*[tmp_path / "whole.npy" if a is None else a for a in args])
    bands = kcli(*[tmp_path / "bands.npy" if a is None else a for a in args], "--tile-rows", "4")
    auto = kcli(*[tmp_path / "auto.npy" if a is None else a for a in args], "--tile-rows", "auto")
    for proc in (whole, bands, auto):
        assert proc.returncode == 0, proc.stderr
    assert b"6 bands of 4 rows on local threads, 22x17x3" in bands.stderr  # 90 -> 45 -> 22 rows
    assert (tmp_path / "whole.npy").read_bytes() == (tmp_path / "bands.npy").read_bytes()
    assert (tmp_path / "whole.npy").read_bytes() == (tmp_path / "auto.npy").read_bytes()


@pytest.mark.parametrize("args, words", [
    (["{npy}", "{out}.webp", "--tile-rows", "4"], "OUTPUT must be"),
    (["{npy}", "-", "--tile-rows", "4"], "OUTPUT must be"),
    (["{png}", "{out}.npy", "--tile-rows", "4"], "into a PNG or TIFF file"),
    (["{folder}", "{out}", "--tile-rows", "4"], "not a folder"),
    (["{npy}", "{out}.npy", "--tile-rows", "0"], "at least 1"),
    (["{npy}", "{out}.npy", "--tile-rows", "many"], "number of rows or auto"),
])
def test_command_usage_errors(tmp_path, samples, args, words, kcli):
    npy = save(tmp_path, np.zeros((10, 10), np.float32))
    folder = tmp_path / "folder"
    folder.mkdir()
    names = {"npy": npy, "png": samples / "gray.png", "folder": folder, "out": tmp_path / "o"}
    proc = kcli("apply", "box:3", *[a.format(**names) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr.decode() and b"Traceback" not in proc.stderr
    assert not list(tmp_path.glob("o*"))


def test_command_without_tile_rows_stays_in_memory_for_small_files(tmp_path, kcli):
    src = save(tmp_path, np.ones((10, 10), np.float32))
    proc = kcli("apply", "box:3", src, tmp_path / "o.npy")
    assert proc.returncode == 0 and b"bands" not in proc.stderr


@pytest.mark.parametrize("rows", [1, 3])
def test_every_geometry_combination_on_one_small_array(tmp_path, rows):
    """A dense sweep (2-D, tiny bands): stride x padding x pad mode x pool."""
    x = RNG.standard_normal((13, 8)).astype(np.float32)
    src = save(tmp_path, x)
    k = RNG.standard_normal((3, 2)).astype(np.float32)
    for stride, padding, mode, pool in itertools.product(
            [1, 2, 3], ["same", "valid", "full", (2, 0)], engine.PAD_MODES,
            [None, Pool("max", 2, 1), Pool("avg", 3, 2)]):
        conv, _ = make_conv([Kernel("k", k)], stride, padding, mode)
        try:
            want = in_memory(src, conv, pool=pool)
        except UsageError:
            continue
        got, _ = banded(tmp_path, src, conv, rows, pool=pool)
        assert np.array_equal(got.pixels, want.pixels), (stride, padding, mode, pool)


def test_large_kernels_computed_by_fft_agree_within_float32_rounding(tmp_path):
    """The engine runs a large non-separable kernel by FFT in tiles that fall
    differently in a band than in the whole image: equal within rounding."""
    x = RNG.uniform(0, 255, (200, 150)).astype(np.float32)
    k = RNG.standard_normal((31, 31)).astype(np.float32)
    assert engine.method_for(k, x.shape) == "fft"
    src = save(tmp_path, x)
    conv, _ = make_conv([Kernel("k", k)], 1, "same", "reflect")
    got, _ = banded(tmp_path, src, conv, 16)
    want = in_memory(src, conv)
    scale = float(np.abs(k).sum() * 255)
    np.testing.assert_allclose(got.pixels, want.pixels, rtol=0, atol=1e-5 * scale)


# --------------------------------------------------------------------------
# an 8- or 16-bit image in memory, in bands (bands.apply_in_bands)

MODES = {"L": ((29, 31), np.uint8), "LA": ((23, 17, 2), np.uint8), "RGB": ((31, 26, 3), np.uint8),
         "RGBA": ((19, 24, 4), np.uint8), "I;16": ((27, 22), np.uint16)}


def picture_of(mode, seed=0):
    shape, dtype = MODES[mode]
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    return Picture(pixels, mode, "PNG")


def whole_then_converted(picture, conv, fmt, scaling="clip", offset=0.0, **steps):
    floats = picture.with_pixels(picture.pixels.astype(np.float32))
    return to_array(stages.apply(floats, conv, **steps), fmt, scaling, offset)


def in_bands(picture, conv, fmt, scaling="clip", offset=0.0, tile_rows=None, relu=False, pool=None,
             gray=False, alpha="keep"):
    return bands.apply_in_bands(picture, conv, relu, pool, gray, alpha, tile_rows=tile_rows,
                                convert=lambda band: to_array(band, fmt, scaling, offset),
                                clips_to_8bit=clips_to_8bit(picture, fmt, scaling, offset))


MEMORY_CASES = [c for c in CASES if "," not in c[0]] + [
    ("4,1,0,2;1,3,2,1;0,2,5,1;2,1,1,3", 1, "same", "reflect", 1, None),  # even-sized, not separable
    ("gaussian:2", 1, "same", "reflect101", 1, None),  # separable
]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", MEMORY_CASES, ids=lambda c: f"{c[0]}-s{c[1]}-{c[2]}-{c[3]}")
def test_image_in_bands_equals_whole_image_exactly(mode, case):
    name, stride, padding, pad_mode, dilation, pool = case
    picture = picture_of(mode, seed=len(name))
    conv, _ = make_conv(name, stride, padding, pad_mode, dilation)
    expected = whole_then_converted(picture, conv, "PNG", pool=pool)
    for rows in (1, 4, None):
        got = in_bands(picture, conv, "PNG", tile_rows=rows, pool=pool)
        assert got is not None and got.dtype == expected.dtype
        assert np.array_equal(got, expected), rows


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
@pytest.mark.parametrize("alpha", ["keep", "premultiply", "filter"])
@pytest.mark.parametrize("gray", [False, True])
def test_image_in_bands_alpha_gray_relu_scaling(mode, alpha, gray):
    picture = picture_of(mode, seed=3)
    conv, _ = make_conv("edge", 1, "same", "edge", 1)
    for scaling, offset, fmt in (("clip", 0.0, "PNG"), ("abs", 0.0, "PNG"), ("clip", 128.0, "TIFF"),
                                 ("abs", 10.0, "JPEG")):
        steps = dict(relu=scaling == "clip", pool=Pool("avg", 2, None), gray=gray, alpha=alpha)
        expected = whole_then_converted(picture, conv, fmt, scaling, offset, **steps)
        got = in_bands(picture, conv, fmt, scaling, offset, tile_rows=3, **steps)
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("mode", list(MODES))
def test_filter_bank_of_three_on_gray_in_bands(mode):
    picture = picture_of(mode, seed=9)
    conv, _ = make_conv("sobel-x,sobel-y,sharpen", 2, "same", "reflect", 1)
    for fmt in ("PNG", "TIFF"):
        expected = whole_then_converted(picture, conv, fmt, "abs", gray=True)
        assert expected.shape[2] == 3
        assert np.array_equal(in_bands(picture, conv, fmt, "abs", tile_rows=2, gray=True), expected)


def test_depth_kernel_on_an_rgb_image_in_bands(samples):
    picture = picture_of("RGB", seed=5)
    conv, _ = make_conv(str(samples / "layer2-3x3x3.npy"), 1, "same", "zero", 1)
    for fmt in ("PNG", "TIFF"):
        assert np.array_equal(in_bands(picture, conv, fmt, tile_rows=2), whole_then_converted(picture, conv, fmt))


def test_kernels_the_engine_would_run_by_fft_are_not_banded():
    rng = np.random.default_rng(1)
    picture = Picture(rng.integers(0, 256, (300, 280), dtype=np.uint8), "L", "PNG")
    big = Kernel("random31", rng.standard_normal((31, 31)))
    assert engine.method_for(big.array, (300, 280)) == "fft"  # the premise
    conv, _ = make_conv([big])
    assert in_bands(picture, conv, "PNG") is None
    small, _ = make_conv("sharpen")
    assert in_bands(picture, small, "PNG") is not None


def test_no_full_size_float_copy_is_made(monkeypatch):
    import tracemalloc  # NumPy reports its allocations to it

    monkeypatch.setattr(bands, "MEMORY_BAND_BYTES", 4 * 2**20)

    picture = picture_of("RGB")
    picture = picture.with_pixels(np.random.default_rng(0).integers(0, 256, (3000, 2000, 3), dtype=np.uint8))
    float_copy = picture.pixels.size * 4  # 72 MB
    conv, _ = make_conv("sharpen")
    tracemalloc.start()
    try:
        out = in_bands(picture, conv, "PNG")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == picture.pixels.shape and out.dtype == np.uint8
    # the uint8 output (18 MB) and two bands in flight (float32 rows in and
    # out, the engine's scratch): far from even one float32 copy of the image
    assert peak < out.nbytes + 4 * bands.MEMORY_BAND_BYTES < float_copy / 2, peak


def test_command_output_equals_the_whole_image_pipeline(tmp_path, samples, kcli):
    for name, kernel, ext in (("photo.png", "sharpen", "png"), ("rgba.png", "gaussian:1.5", "png"),
                              ("gray16.png", "edge", "png"), ("photo.jpg", "emboss", "jpg"),
                              ("gray.png", "box:3", "tif")):
        out = tmp_path / f"out-{name}.{ext}"
        proc = kcli("apply", kernel, samples / name, out, "--relu")
        assert proc.returncode == 0, proc.stderr
        picture = read_image(samples / name)
        conv, _ = make_conv(kernel)
        fmt = format_for(out)
        expected = tmp_path / f"expected-{name}.{ext}"
        write_image(expected, stages.apply(picture, conv, relu=True), fmt)
        assert out.read_bytes() == expected.read_bytes(), name


@pytest.fixture
def band_results(monkeypatch):
    """What each bands.apply_in_bands call returned: None when the picture went whole."""
    results = []
    real = bands.apply_in_bands

    def spy(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(bands, "apply_in_bands", spy)
    return results


@pytest.mark.parametrize("kernel, steps", [
    ("sharpen", {}),
    ("gaussian:1.5", {"relu": True}),  # separable
    ("sobel-x,sobel-y,box:3", {"gray": True}),  # a bank: labels in the .npy's metadata
    ("edge", {"pool": Pool("max", 2, None)}),
    ("4,1,0,2;1,3,2,1;0,2,5,1;2,1,1,3", {}),  # even-sized, not separable
])
@pytest.mark.parametrize("out_ext", ["npy", "png", "tif"])
def test_float_inputs_go_in_bands_to_the_whole_pipelines_bytes(tmp_path, kernel, steps, out_ext, band_results):
    # A .npy (float32, values beyond 0..255, NaN) runs in bands like 8-bit
    # images do, into a .npy or an image; the files are byte for byte those
    # of the whole-picture pipeline.
    arr = (np.random.default_rng(5).standard_normal((53, 37, 3)) * 90 + 120).astype(np.float32)
    arr[7, 11, 1] = np.nan
    src = save(tmp_path, arr)
    out = tmp_path / f"banded.{out_ext}"
    conv, _ = make_conv(kernel)
    size, notes = files.apply_file(src, out, Stages(conv, **steps), max_pixels=None)
    assert size == (53, 37)
    assert len(band_results) == 1 and band_results[0] is not None  # it did go in bands
    whole = stages.apply(read_image(src), conv, **steps)
    expected = tmp_path / f"whole.{out_ext}"
    want_notes = whole.notes + write_image(expected, whole, format_for(expected))
    assert out.read_bytes() == expected.read_bytes()
    assert notes == want_notes


@pytest.mark.parametrize("kernel, steps", [("gaussian:1.5", {}), ("edge", {"relu": True}),
                                            ("sobel-x,sobel-y,box:3", {"gray": True})])
@pytest.mark.parametrize("ext", ["png", "tif", "npy"])
def test_stretch_goes_in_bands_to_the_whole_pipelines_bytes(tmp_path, band_results, kernel, steps, ext):
    # Stretch needs every value before any is scaled: the bands fill one
    # float32 result, which is stretched as a whole (and not at all in a .npy).
    arr = (np.random.default_rng(2).standard_normal((40, 30, 3)) * 50).astype(np.float32)
    arr[3, 4, 0] = np.nan
    src = save(tmp_path, arr)
    conv, _ = make_conv(kernel)
    _, notes = files.apply_file(src, tmp_path / f"o.{ext}", Stages(conv, **steps), OutputSpec(scaling="stretch", offset=3))
    assert len(band_results) == 1 and band_results[0] is not None
    whole = stages.apply(read_image(src), conv, **steps)
    want_notes = whole.notes + write_image(tmp_path / f"w.{ext}", whole, scaling="stretch", offset=3)
    assert (tmp_path / f"o.{ext}").read_bytes() == (tmp_path / f"w.{ext}").read_bytes()
    assert notes == want_notes


@pytest.mark.parametrize("kernel, steps, bands_used", [
    ("sharpen", {}, True),
    ("edge", {"relu": True, "pool": Pool("max", 2, None)}, True),
    ("edge,sobel-x", {"gray": True, "pool": Pool("avg", 3, 2)}, True),
    ("31x31", {}, False),  # an FFT kernel goes whole
])
def test_a_npy_output_goes_out_band_by_band(tmp_path, monkeypatch, band_results, kernel, steps, bands_used):
    """Rows of a .npy output are written as their bands finish (into a stream
    too): the same bytes and notes as the whole pipeline's."""
    monkeypatch.setattr(bands, "MEMORY_BAND_BYTES", 2000)  # many bands
    rng = np.random.default_rng(4)
    arr = (rng.standard_normal((90, 70, 3)) * 50).astype(np.float32)
    arr[5, 6, 1] = np.nan
    src = save(tmp_path, arr)
    if kernel == "31x31":
        kernel = Kernel("random31", rng.standard_normal((31, 31)))
    conv, _ = make_conv(kernel)
    target = io.BytesIO()
    _, notes = files.apply_file(src, target, Stages(conv, **steps), OutputSpec(fmt="npy"))
    assert (band_results[0] is not None) == bands_used
    whole = stages.apply(read_image(src), conv, **steps)
    want = io.BytesIO()
    want_notes = whole.notes + write_image(want, whole, "NPY")
    assert target.getvalue() == want.getvalue()
    assert notes == want_notes


def test_npy_rows_go_out_in_order_whatever_order_they_come():
    import threading

    arr = np.arange(60 * 4, dtype=np.float32).reshape(60, 4)
    f = io.BytesIO()
    rows = NpyRows(f).allocate(arr.shape, np.float32)
    order = [(10, 20), (0, 1), (30, 60), (1, 10), (20, 30)]
    threads = [threading.Thread(target=rows.__setitem__, args=(slice(a, b), arr[a:b].copy())) for a, b in order]
    for t in threads:
        t.start()
        t.join()  # in this order: rows 10-20 wait for 0-10
    assert f.getvalue() == npy_header(arr.shape) + arr.tobytes()
    with pytest.raises(TypeError):
        NpyRows(io.BytesIO()).allocate((2, 2), np.uint8)


def test_the_stages_notes_are_kept_in_bands(tmp_path, samples, band_results):
    # A filter bank drops alpha and says so: in bands too (they had lost it).
    conv, _ = make_conv("edge,sharpen,box")
    for ext in ("png", "npy", "jpg"):
        _, notes = files.apply_file(samples / "rgba.png", tmp_path / f"o.{ext}", Stages(conv, gray=True))
        assert notes == ["alpha is not part of a stack of feature maps; dropped"], ext
    assert len(band_results) == 3 and all(r is not None for r in band_results)


@pytest.mark.parametrize("name, out_ext", [("photo.png", "npy"), ("rgba.png", "png"), ("example-5x5.npy", "npy")])
def test_the_conv_command_runs_in_bands(run_cli, samples, tmp_path, band_results, name, out_ext):
    out = tmp_path / f"out.{out_ext}"
    r = run_cli(["conv", "gaussian:1.5", samples / name, out])
    assert r.exit_code == 0, r.output
    assert len(band_results) == 1 and band_results[0] is not None
    conv, _ = make_conv("gaussian:1.5")
    expected = tmp_path / f"expected.{out_ext}"
    write_image(expected, stages.conv_stage(read_image(samples / name), conv))
    assert out.read_bytes() == expected.read_bytes()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "BMP", "WEBP"])
def test_bands_stored_straight_into_a_pillow_image(mode, fmt):
    picture = picture_of(mode, seed=11)
    conv, _ = make_conv("emboss", 1, "same", "edge", 1)
    expected = whole_then_converted(picture, conv, fmt, "abs", 3.0, relu=False, pool=Pool("max", 2, None))
    canvas = bands.apply_in_bands(picture, conv, False, Pool("max", 2, None), False, "keep", tile_rows=2,
                                  convert=lambda band: to_array(band, fmt, "abs", 3.0),
                                  allocate=PillowCanvas)
    assert isinstance(canvas, PillowCanvas)
    got = np.asarray(canvas)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


# integer kernels on 8-bit pictures: bands in int16 (bands.exact_band)

EXACT_CASES = [
    # kernel, stride, padding, pad_mode, dilation, flip
    ("sharpen", 1, "same", "zero", 1, False),
    ("edge", 2, "same", "reflect", 1, False),
    ("emboss", 1, "full", "wrap", 2, True),
    ("sobel-x", (2, 1), "valid", "edge", 1, False),
    ("1,-2;3,4", 1, (0, 2), "reflect101", (1, 2), True),  # even-sized
    ("0,0,0,1,0,0,0;0,0,0,-64,0,0,0;0,0,0,63,0,0,0", 3, "same", "zero", 1, False),  # |w| sums to 128
]


@pytest.fixture
def exact_calls(monkeypatch):
    calls = []
    original = bands.exact_band

    def counting(*args):
        calls.append(args[2:])
        return original(*args)

    monkeypatch.setattr(bands, "exact_band", counting)
    return calls


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda c: f"{c[0]}-s{c[1]}-{c[2]}-{c[3]}")
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("pool", [None, Pool("max", 2, None), Pool("max", 3, 2), Pool("max", (2, 3), (1, 2))],
                         ids=["no pool", "max 2", "max 3 stride 2", "max 2x3 stride 1x2"])
def test_integer_kernels_in_int16_bands_equal_the_float_pipeline(mode, case, relu, pool, exact_calls):
    name, stride, padding, pad_mode, dilation, flip = case
    picture = picture_of(mode, seed=len(name))
    conv, _ = make_conv(name, stride, padding, pad_mode, dilation, flip)
    expected = whole_then_converted(picture, conv, "PNG", relu=relu, pool=pool)
    for rows in (1, 4, None):
        exact_calls.clear()
        got = in_bands(picture, conv, "PNG", tile_rows=rows, relu=relu, pool=pool)
        assert exact_calls, "the int16 bands were not used"
        assert got.dtype == np.uint8 and np.array_equal(got, expected), rows


@pytest.mark.parametrize("why, mode, kernel, fmt, scaling, offset, steps", [
    ("not whole numbers", "RGB", "box:3", "PNG", "clip", 0.0, {}),
    ("16-bit pixels", "I;16", "sharpen", "PNG", "clip", 0.0, {}),
    ("alpha", "RGBA", "sharpen", "PNG", "clip", 0.0, {}),
    ("abs scaling", "RGB", "sharpen", "PNG", "abs", 0.0, {}),
    ("an offset", "L", "sharpen", "PNG", "clip", 3.0, {}),
    ("gray", "RGB", "sharpen", "TIFF", "clip", 0.0, {"gray": True}),
    ("average pooling", "RGB", "sharpen", "PNG", "clip", 0.0, {"pool": Pool("avg", 2, None)}),
    ("sum pooling", "L", "sharpen", "PNG", "clip", 0.0, {"pool": Pool("sum", 2, None)}),
    ("a filter bank", "L", "sobel-x,sobel-y,sharpen", "PNG", "clip", 0.0, {}),
    ("5x5: may run as 1-D passes", "L", "1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1", "PNG", "clip", 0.0, {}),
])
def test_other_jobs_keep_the_float_bands(why, mode, kernel, fmt, scaling, offset, steps, exact_calls):
    picture = picture_of(mode, seed=2)
    conv, _ = make_conv(kernel)
    got = in_bands(picture, conv, fmt, scaling, offset, tile_rows=5, **steps)
    assert not exact_calls, why
    assert np.array_equal(got, whole_then_converted(picture, conv, fmt, scaling, offset, **steps))


# --------------------------------------------------------------------------
# Numba loaded while a large image decodes (bands.load_numba_early)

_EARLY = """
import sys
import numpy as np
from kernelcli.run import bands, tiled
from kernelcli.kernels import Kernel
from kernelcli.stages import Pool, make_conv
kernel = {kernel}
conv, _ = make_conv([Kernel("k", np.array(kernel, dtype=np.float32))])
wait = bands.load_numba_early(conv, Pool("max", 2), {height}, 400, 3)
wait()
from_bands = "numba" in sys.modules
if from_bands:
    from kernelcli.engine import _jit
    compiled = sorted(f.__name__ for f in (_jit._rows_unit, _jit._rows_step, _jit.pool_rows) if f.signatures)
else:
    compiled = []
print(from_bands, compiled)
"""


@pytest.mark.parametrize("kernel, height, loads", [
    ("np.random.default_rng(1).random((9, 9))", 2_000_000, True),  # 9x9 x 2.4 G values: Numba
    ("np.random.default_rng(1).random((9, 9))", 2_000, False),  # 2.4 M values: NumPy
    ("[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]", 2_000_000, False),  # integers: int16 bands, no Numba
    ("np.random.default_rng(1).random((31, 31))", 2_000_000, False),  # whole, by FFT: no Numba
])
def test_numba_loads_early_only_for_large_float_work(kernel, height, loads):
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-c", _EARLY.format(kernel=kernel, height=height)],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    if loads:  # loaded, and the loops the bands call are ready (compiled or read from the cache)
        assert got.stdout.split()[0] == "True" and "_rows_unit" in got.stdout and "pool_rows" in got.stdout
    else:
        assert got.stdout.strip() == "False []"


def test_apply_file_waits_for_the_early_load_before_computing(tmp_path, monkeypatch):
    order = []

    def early(conv, pool, height, width, channels):
        order.append(("header", height, width, channels))
        return lambda: order.append("waited")

    def in_bands(picture, *args, **kw):
        order.append("bands")
        return real_bands(picture, *args, **kw)

    real_bands = bands.apply_in_bands
    monkeypatch.setattr(bands, "load_numba_early", early)
    monkeypatch.setattr(bands, "apply_in_bands", in_bands)
    rgb = (np.arange(30 * 40 * 3) % 256).astype(np.uint8).reshape(30, 40, 3)
    from PIL import Image

    Image.fromarray(rgb).save(tmp_path / "in.png")
    conv, _ = make_conv([Kernel("k", np.full((3, 3), 0.1, dtype=np.float32))])
    files.apply_file(str(tmp_path / "in.png"), str(tmp_path / "out.png"), Stages(conv))
    assert order == [("header", 30, 40, 3), "waited", "bands"]
    order.clear()
    files.apply_file(str(tmp_path / "in.png"), str(tmp_path / "gray.png"), Stages(conv, gray=True))
    assert order[0] == ("header", 30, 40, 1)
    order.clear()
    whole = (tmp_path / "in.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])  # the header, half the pixels
    with pytest.raises(ImageReadError):
        files.apply_file(str(tmp_path / "cut.png"), str(tmp_path / "cut-out.png"), Stages(conv))
    assert order == [("header", 30, 40, 3), "waited"]  # waited for, though decoding failed


# --------------------------------------------------------------------------
# a .npy file is never held to the pixel limit; a large one goes out of core


def test_a_npy_file_is_not_held_to_the_pixel_limit(kcli, tmp_path):
    arr = RNG.standard_normal((40, 30)).astype(np.float32)
    src = save(tmp_path, arr)
    proc = kcli("apply", "box", src, tmp_path / "o.npy", "--max-pixels", "100")
    assert proc.returncode == 0, proc.stderr.decode()
    assert np.array_equal(np.load(tmp_path / "o.npy"), engine.convolve(arr, "box"))
    # from a stream, whose claim nothing backs yet, the limit still holds
    proc = kcli("apply", "box", "-", tmp_path / "p.npy", "--max-pixels", "100", input=src.read_bytes())
    assert proc.returncode == 1 and b"--max-pixels" in proc.stderr


def test_a_large_npy_file_goes_out_of_core_in_bounded_memory(tmp_path):
    # Over the default pixel limit (178,956,970) and over OUT_OF_CORE_BYTES:
    # a sparse file, zero but for a few rows at the top, so the test writes
    # little. Read whole, it would take 716 MB and its result as much again.
    import subprocess
    import sys

    from .conftest import _installed_command

    h = w = 13400
    assert h * w > DEFAULT_MAX_PIXELS and h * w * 4 > tiled.OUT_OF_CORE_BYTES
    src = tmp_path / "big.npy"
    header = npy_header((h, w))
    with open(src, "wb") as f:
        f.write(header)
        f.truncate(len(header) + h * w * 4)
    top = RNG.standard_normal((8, w)).astype(np.float32) * 100
    mm = np.memmap(src, dtype=np.float32, mode="r+", offset=len(header), shape=(h, w))
    mm[:8] = top
    mm.flush()
    del mm
    out = tmp_path / "out.npy"
    # A fresh Python runs the command and reports its one child's peak.
    measure = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True)\n"
               "sys.stderr.buffer.write(r.stderr)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(r.returncode)\n")
    proc = subprocess.run([sys.executable, "-c", measure, *_installed_command(), "apply", "gaussian",
                           str(src), str(out)], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"bands" in proc.stderr
    peak_kb = int(proc.stdout)
    assert peak_kb < 2**20, f"peak {peak_kb / 2**10:.0f} MB"
    result = np.load(out, mmap_mode="r")
    assert result.shape == (h, w)
    expected = engine.convolve(np.vstack([top, np.zeros((8, w), np.float32)]), "gaussian")
    assert np.array_equal(result[:12], expected[:12])
    assert not result[20:30].any()
