"""Pictures in bands: a TIFF read a band of rows at a time (only the strips or
tiles a band touches) and written as strips or tiles as the bands come.

The banded output is compared bit for bit with the in-memory path (Pillow
reads the whole TIFF, the stages run over it, Pillow writes it), which is
itself tested against the plain-loop reference; one case goes straight to
the reference. Small pictures and bands of a few rows put seams everywhere.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from kernelcli import engine  # noqa: E402
from kernelcli.errors import ImageReadError, ImageWriteError, UsageError  # noqa: E402
from kernelcli.io.encode import OutputSpec  # noqa: E402
from kernelcli.io.tiff_rows import read_tiff_rows, open_tiff  # noqa: E402
from kernelcli.kernels import Kernel  # noqa: E402
from kernelcli.run import files, tiled  # noqa: E402
from kernelcli.stages import Pool, Stages, make_conv  # noqa: E402

from .reference import correlate_ref, pad_ref  # noqa: E402
from .terminal import run_on_a_terminal  # noqa: E402

RNG = np.random.default_rng(11)


def picture(shape, dtype=np.uint8):
    top = 65535 if dtype == np.uint16 else 255
    return RNG.integers(0, top + 1, shape).astype(dtype)


def write_tiff(path, pixels, **kw):
    photometric = "rgb" if pixels.ndim == 3 and pixels.shape[2] >= 3 else "minisblack"
    extras = ["unassalpha"] if pixels.ndim == 3 and pixels.shape[2] in (2, 4) else None
    tifffile.imwrite(path, pixels, photometric=photometric, extrasamples=extras, metadata=None, **kw)
    return path


def whole_and_banded(tmp_path, src, stages, rows, output=OutputSpec(), **tiff):
    whole, banded = tmp_path / "whole.tif", tmp_path / "banded.tif"
    files.apply_file(src, whole, stages, output)
    report = tiled.run(src, banded, stages, tile_rows=rows, output=output, **tiff)
    return tifffile.imread(whole), tifffile.imread(banded), report


# kernel, stride, padding, pad mode, dilation, pool
CASES = [
    ("sharpen", 1, "same", "zero", 1, None),
    ("box:4", 2, "same", "reflect", 1, None),
    ("gaussian:1.5", 1, "full", "wrap", 1, Pool("max", 3, 2)),
    ("edge", 3, "valid", "edge", 2, Pool("avg", 2, None)),
    ("box:5", 2, 3, "reflect101", 1, Pool("sum", 2, 1)),
    ("1,2;3,-4", (2, 1), (0, 2), "zero", (1, 2), Pool("max", (3, 1), (1, 2))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[1]}-{c[2]}-{c[3]}")
@pytest.mark.parametrize("layout", [dict(rowsperstrip=3), dict(tile=(16, 16), compression="zlib")],
                         ids=["strips", "deflate-tiles"])
def test_tiff_bands_equal_the_in_memory_path(tmp_path, case, layout):
    name, stride, padding, mode, dilation, pool = case
    src = write_tiff(tmp_path / "in.tif", picture((37, 29, 3)), **layout)
    conv, _ = make_conv(name, stride, padding, mode, dilation)
    for rows in (1, 4, None):
        whole, banded, report = whole_and_banded(tmp_path, src, Stages(conv, relu=True, pool=pool), rows)
        assert banded.dtype == whole.dtype == np.uint8
        assert np.array_equal(banded, whole), (rows, case)
        if rows:
            assert report.bands == -(-whole.shape[0] // rows)


@pytest.mark.parametrize("shape, dtype, steps", [
    ((33, 21), np.uint16, {}),  # 16-bit gray stays 16-bit
    ((26, 19, 4), np.uint8, {"alpha": "premultiply"}),  # RGBA: alpha filtered as the whole path does
    ((26, 19, 2), np.uint8, {}),  # gray with alpha
    ((31, 17, 3), np.uint8, {"gray": True}),
])
def test_bit_depths_alpha_and_gray(tmp_path, shape, dtype, steps):
    src = write_tiff(tmp_path / "in.tif", picture(shape, dtype), rowsperstrip=4)
    conv, _ = make_conv("gaussian:1", 1, "same", "reflect")
    whole, banded, _ = whole_and_banded(tmp_path, src, Stages(conv, **steps), 3)
    assert banded.dtype == whole.dtype == dtype
    assert np.array_equal(banded, whole)


def test_float_tiff_and_a_bank_into_npy(tmp_path):
    """A float TIFF (Pillow's F) in bands into a .npy: the float32 values of the whole path."""
    x = RNG.standard_normal((29, 22)).astype(np.float32)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, x, tile=(16, 16), compression="zlib")
    conv, _ = make_conv("sobel-x,sobel-y", 1, "same", "edge")
    files.apply_file(src, tmp_path / "whole.npy", Stages(conv))
    tiled.run(src, tmp_path / "banded.npy", Stages(conv), tile_rows=3)
    assert np.array_equal(np.load(tmp_path / "banded.npy"), np.load(tmp_path / "whole.npy"))


def test_against_the_plain_reference(tmp_path):
    """Independent of the in-memory engine: the reference loop, rounded and clipped to 8 bits."""
    x = picture((23, 31))
    k = RNG.integers(-3, 4, (3, 4)).astype(np.float32)
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="lzw")
    conv, _ = make_conv([Kernel("k", k)], (2, 1), "same", "reflect", 1)
    out = tmp_path / "out.tif"
    tiled.run(src, out, Stages(conv), tile_rows=2, tiff_tile=16, tiff_compression="deflate")
    pads, _ = engine.geometry(x.shape, k.shape, (2, 1), "same", 1)
    want = np.clip(np.floor(correlate_ref(x, k, (2, 1), pads, "reflect") + 0.5), 0, 255)
    assert np.array_equal(tifffile.imread(out), want.astype(np.uint8))
    assert pad_ref(x, pads, "reflect").shape[0] == x.shape[0] + sum(pads[0])


@pytest.mark.parametrize("tile, compression", [(None, None), (16, None), (None, "deflate"), (32, "zstd"),
                                               (16, "lzw")])
def test_output_layouts_hold_the_same_pixels(tmp_path, tile, compression):
    src = write_tiff(tmp_path / "in.tif", picture((45, 38, 3)), rowsperstrip=7)
    conv, _ = make_conv("sharpen")
    whole, banded, _ = whole_and_banded(tmp_path, src, Stages(conv), 5, tiff_tile=tile,
                                        tiff_compression=compression)
    assert np.array_equal(banded, whole)
    with tifffile.TiffFile(tmp_path / "banded.tif") as tif:
        page = tif.pages.first
        assert page.is_tiled == (tile is not None or compression is not None)
        assert (page.compression != 1) == (compression is not None)


def _count_decoded_tiles(monkeypatch) -> list:
    """The indices of the TIFF segments tifffile decodes from now on, in a list."""
    decoded = []
    real = tifffile.TiffPage.decode.func

    def counting(page):
        fn = real(page)

        def wrapped(data, index, **kw):
            decoded.append(index)
            return fn(data, index, **kw)
        return wrapped
    monkeypatch.setattr(tifffile.TiffPage, "decode", property(counting))
    return decoded


def test_reading_rows_decodes_only_the_segments_they_touch(tmp_path, monkeypatch):
    x = picture((64, 40, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    decoded = _count_decoded_tiles(monkeypatch)
    shape, dtype, _ = open_tiff(src, None)
    assert np.array_equal(read_tiff_rows(src, shape, dtype, 17, 30), x[17:30])
    assert sorted(decoded) == [3, 4, 5]  # tile row 1 of 4, three tiles across


def test_jpeg_compressed_and_planar_inputs(tmp_path):
    x = picture((40, 33, 3))
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(x, 2, 0).copy(), photometric="rgb", planarconfig="separate",
                     rowsperstrip=6)
    shape, dtype, meta = open_tiff(planar, None)
    assert shape == x.shape and meta.mode == "RGB"
    assert np.array_equal(read_tiff_rows(planar, shape, dtype, 5, 33), x[5:33])
    jpeg = tmp_path / "jpeg.tif"
    tifffile.imwrite(jpeg, x, photometric="rgb", compression="jpeg", tile=(16, 16))
    stored = tifffile.imread(jpeg)
    assert np.array_equal(read_tiff_rows(jpeg, *open_tiff(jpeg, None)[:2], 9, 40), stored[9:40])


def test_refusals(tmp_path):
    src = write_tiff(tmp_path / "in.tif", picture((30, 20, 3)), rowsperstrip=5)
    conv, _ = make_conv("sharpen")
    with pytest.raises(ImageReadError, match="over the limit of 500"):
        tiled.run(src, tmp_path / "o.tif", Stages(conv), tile_rows=4, max_pixels=500)
    with pytest.raises(UsageError, match="stretch"):
        tiled.run(src, tmp_path / "o.tif", Stages(conv), tile_rows=4, output=OutputSpec(scaling="stretch"))
    with pytest.raises(UsageError, match="OUTPUT must be"):
        tiled.run(src, tmp_path / "o.webp", Stages(conv), tile_rows=4)
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))


# --------------------------------------------------------------------------
# through the installed command


def test_command_tiff_in_bands_equals_whole(tmp_path, run_installed):
    src = write_tiff(tmp_path / "in.tif", picture((50, 41, 3)), tile=(16, 16), compression="zlib")
    whole = run_installed(["apply", "emboss", src, tmp_path / "whole.tif", "--pad-mode", "reflect"])
    assert whole.returncode == 0, whole.stderr
    banded = run_installed(["apply", "emboss", src, tmp_path / "banded.tif", "--pad-mode", "reflect",
                            "--tile-rows", "16", "--tiff-tile", "16", "--tiff-compression", "zstd"])
    assert banded.returncode == 0, banded.stderr
    assert b"bands of 16 rows" in banded.stderr
    assert np.array_equal(tifffile.imread(tmp_path / "banded.tif"), tifffile.imread(tmp_path / "whole.tif"))


@pytest.mark.parametrize("args, message", [
    (["{tif}", "{out}.webp", "--tile-rows", "4"], b"OUTPUT must be"),
    (["-", "{out}.tif", "--tile-rows", "4"], b"need a folder, a .npy, TIFF, PNG or JPEG file INPUT"),
    (["{png}", "{out}.npy", "--tile-rows", "4"], b"into a PNG or TIFF file"),
    (["{tif}", "{out}.tif", "--tile-rows", "4", "--tiff-tile", "20"], b"multiple of 16"),
    (["{tif}", "{out}.tif", "--tiff-compression", "zstd"], b"with --tile-rows"),
    (["{tif}", "{out}.tif", "--tile-rows", "4", "--max-pixels", "100"], b"over the limit of 100"),
])
def test_command_usage_errors(tmp_path, run_installed, args, message):
    tif = write_tiff(tmp_path / "in.tif", picture((20, 20)), rowsperstrip=4)
    png, jpg = tmp_path / "in.png", tmp_path / "in.jpg"
    from PIL import Image
    Image.fromarray(picture((8, 8))).save(png)
    Image.fromarray(picture((8, 8))).save(jpg)
    got = run_installed(["apply", "sharpen"] + [a.format(tif=tif, png=png, jpg=jpg, out=tmp_path / "out")
                                                for a in args])
    assert got.returncode in (1, 2) and message in got.stderr, got.stderr
    assert b"Traceback" not in got.stderr


@pytest.mark.parametrize("kind, extra, message", [
    ("plain", ["--linear"], b"not with --linear"),
    ("plain", ["--depth", "float"], b"not with --depth"),
    ("plain", ["--colormap", "heat", "--gray"], b"not with --colormap"),
    ("plain", ["--frame", "0"], b"not with --frame"),
    ("turned", [], b"is stored turned (EXIF orientation 6)"),
    ("pages", [], b"has 2 frames (pages)"),
])
def test_bands_take_a_picture_only_as_it_is_stored(tmp_path, run_installed, kind, extra, message):
    """What the whole-picture path alone does (linear light, sample types,
    colormaps, frames, turning upright) is refused with --tile-rows, and
    nothing is written."""
    pixels = picture((24, 20, 3), np.uint16)
    src = tmp_path / "in.tif"
    if kind == "turned":
        tifffile.imwrite(src, pixels, extratags=[(274, "H", 1, 6, True)])
    elif kind == "pages":
        tifffile.imwrite(src, np.stack([pixels, pixels]))
    else:
        tifffile.imwrite(src, pixels)
    got = run_installed(["apply", "sharpen", src, tmp_path / "out.tif", "--tile-rows", "4", *extra])
    assert got.returncode == 2 and message in got.stderr, got.stderr
    assert not (tmp_path / "out.tif").exists()


def test_a_turned_or_paged_tiff_too_big_for_memory_goes_whole(tmp_path, run_cli, monkeypatch):
    """Automatic bands are not used where they would differ from the whole
    picture's path: a turned TIFF comes out upright, a two-page one with
    both pages, as without the memory pressure."""
    from kernelcli import _memory

    pixels = picture((40, 30, 3))
    turned, pages = tmp_path / "turned.tif", tmp_path / "pages.tif"
    tifffile.imwrite(turned, pixels, extratags=[(274, "H", 1, 6, True)])
    tifffile.imwrite(pages, np.stack([pixels, pixels]))
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)
    for src in (turned, pages):
        got = run_cli(["apply", "sharpen", src, tmp_path / f"out-{src.name}"])
        assert got.exit_code == 0, got.output
        assert "bands of" not in got.stderr
    assert tifffile.imread(tmp_path / "out-turned.tif").shape == (30, 40, 3)
    assert tifffile.imread(tmp_path / "out-pages.tif").shape == (2, 40, 30, 3)


def test_16_bit_colour_in_bands_equals_whole(tmp_path, run_installed):
    src = write_tiff(tmp_path / "in.tif", picture((33, 21, 3), np.uint16), rowsperstrip=5)
    whole = run_installed(["apply", "gaussian:1", src, tmp_path / "whole.tif"])
    banded = run_installed(["apply", "gaussian:1", src, tmp_path / "banded.tif", "--tile-rows", "7"])
    assert whole.returncode == 0 and banded.returncode == 0, banded.stderr
    a, b = tifffile.imread(tmp_path / "banded.tif"), tifffile.imread(tmp_path / "whole.tif")
    assert a.dtype == b.dtype == np.uint16 and np.array_equal(a, b)


def test_a_plain_apply_never_imports_tifffile(tmp_path):
    from PIL import Image

    png = tmp_path / "in.png"
    Image.fromarray(picture((12, 12, 3))).save(png)
    code = ("import sys; from kernelcli.cli import main; "
            f"import click.testing as t; r = t.CliRunner().invoke(__import__('kernelcli.cli').cli.cli, "
            f"['apply', 'sharpen', {str(png)!r}, {str(tmp_path / 'o.jpg')!r}]); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tifffile', 'imagecodecs', 'zarr')))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "[]"


# --------------------------------------------------------------------------
# automatic bands, bombs, disk space, failures


def test_a_tiff_too_big_for_memory_goes_in_bands_by_itself(tmp_path, run_cli, monkeypatch):
    from kernelcli import _memory

    src = write_tiff(tmp_path / "in.tif", picture((40, 30, 3)), tile=(16, 16), compression="zlib")
    plain = run_cli(["apply", "sharpen", src, tmp_path / "whole.tif"])
    assert plain.exit_code == 0 and "bands of" not in plain.stderr
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)  # 3 float32 copies: 43 KiB
    auto = run_cli(["apply", "sharpen", src, tmp_path / "auto.tif"])
    assert auto.exit_code == 0, auto.output
    assert "bands of" in auto.stderr
    assert np.array_equal(tifffile.imread(tmp_path / "auto.tif"), tifffile.imread(tmp_path / "whole.tif"))


@pytest.mark.parametrize("extra", [[], ["--tile-rows", "8"]])
def test_a_small_file_claiming_a_huge_picture_is_refused(tmp_path, run_installed, extra):
    bomb = tmp_path / "bomb.tif"
    tifffile.imwrite(bomb, shape=(60000, 60000), dtype=np.uint8, photometric="minisblack")  # sparse
    assert bomb.stat().st_blocks * 512 < 2**20
    got = run_installed(["apply", "sharpen", bomb, tmp_path / "out.tif"] + extra, timeout=60)
    assert got.returncode == 1 and b"over the limit" in got.stderr and b"--max-pixels" in got.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tif"]


def test_full_disk_is_refused_before_any_band(tmp_path, monkeypatch):
    import shutil as _shutil

    src = write_tiff(tmp_path / "in.tif", picture((30, 20, 3)), rowsperstrip=5)
    real = _shutil.disk_usage
    monkeypatch.setattr(tiled.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    conv, _ = make_conv("box:3")
    with pytest.raises(ImageWriteError, match="needs .* GiB"):
        tiled.run(src, tmp_path / "out.tif", Stages(conv), tile_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_a_failing_band_leaves_no_output(tmp_path, monkeypatch):
    src = write_tiff(tmp_path / "in.tif", picture((40, 10)), rowsperstrip=5)
    out = tmp_path / "out.tif"
    out.write_bytes(b"old")
    real = tiled.compute_band

    def failing(job, f0, f1, lock=None, given=None):
        if f0 >= 20:
            raise OSError(5, "Input/output error")
        return real(job, f0, f1, lock, given)

    monkeypatch.setattr(tiled, "compute_band", failing)
    conv, _ = make_conv("box:3")
    with pytest.raises(ImageWriteError):
        tiled.run(src, out, Stages(conv), tile_rows=4, tiff_tile=16, tiff_compression="deflate")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


def test_progress_on_a_terminal_only(tmp_path, run_installed):
    src = write_tiff(tmp_path / "in.tif", picture((40, 30, 3)), rowsperstrip=4)
    status, shown, _, _ = run_on_a_terminal(["apply", "sharpen", src, tmp_path / "t.tif", "--tile-rows", "8"],
                                          tmp_path)
    assert status == 0
    assert b"40/40 rows" in shown and b"MB/s" in shown and b"s left" in shown
    piped = run_installed(["apply", "sharpen", src, tmp_path / "p.tif", "--tile-rows", "8"])
    assert piped.returncode == 0 and b"rows  " not in piped.stderr and b"\r" not in piped.stderr


def test_consecutive_bands_decode_each_tile_once(tmp_path, monkeypatch):
    x = picture((48, 40, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    decoded = _count_decoded_tiles(monkeypatch)
    shape, dtype, _ = open_tiff(src, None)
    got = np.concatenate([read_tiff_rows(src, shape, dtype, a, min(a + 5, 48)) for a in range(0, 48, 5)])
    assert np.array_equal(got, x)
    assert sorted(decoded) == list(range(9))  # 3 tile rows of 3 tiles, each decoded once


def test_peak_memory_stays_far_below_the_picture(tmp_path):
    """A 6000x6000 RGB TIFF (432 MB as one float32 copy) in bands, under an
    address-space limit: the process's peak resident memory stays below one
    float32 copy of the picture (the in-memory path needs several)."""
    import os
    import resource
    import shutil
    import threading

    exe = shutil.which("kernelcli")
    if exe is None:
        pytest.skip("kernelcli is not on PATH")
    y, x = np.mgrid[0:6000, 0:6000].astype(np.uint32)
    rgb = np.stack([(x + y) % 256, (3 * x) % 256, (5 * y) % 256], -1).astype(np.uint8)
    src = write_tiff(tmp_path / "big.tif", rgb, rowsperstrip=64)
    del x, y, rgb

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.Popen([exe, "-q", "apply", "sharpen", str(src), str(tmp_path / "out.tif"), "--tile-rows",
                             "auto"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=limit)
    timer = threading.Timer(300, proc.kill)  # a hung run fails the test instead of hanging it
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the other tests' children
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024
    assert proc.returncode == 0
    assert peak_mb < 432, f"peak {peak_mb:.0f} MB"
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages.first.shape == (6000, 6000, 3)
    os.remove(src)
