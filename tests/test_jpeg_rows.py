"""JPEG in bands through libvips (the optional jpeg extra): rows decoded in
strips as Pillow decodes them whole, banded runs equal to the in-memory path
and to a plain NumPy reference, and what happens without the library."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kernelcli.io import jpeg_rows
from kernelcli.run import files, tiled
from kernelcli.stages import Pool, Stages, make_conv

from .reference import correlate_ref, pads_for

pytest.importorskip("pyvips")

RNG = np.random.default_rng(11)


def photo_like(shape) -> np.ndarray:
    """Gradients plus noise: compresses like a photograph, with detail at every scale."""
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 4 % 256], -1)
    px = np.clip(base + RNG.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return px if len(shape) == 3 else px[:, :, 0].copy()


def jpeg(path, shape=(37, 29, 3), **kw):
    Image.fromarray(photo_like(shape)).save(path, quality=kw.pop("quality", 85), **kw)
    return path


def read_in_strips(path, rows=5) -> np.ndarray:
    shape, _, _, usable = jpeg_rows.open_jpeg(path, None)
    assert usable
    reader = jpeg_rows.JpegReader(path, shape)
    try:
        return np.concatenate([reader.take(np.arange(a, min(a + rows, shape[0])), a)
                               for a in range(0, shape[0], rows)])
    finally:
        reader.close()


@pytest.mark.parametrize("shape, options", [
    ((37, 29, 3), {"subsampling": 2}),  # 4:2:0, odd sizes: half MCUs at the right and bottom
    ((37, 29, 3), {"subsampling": 1}),
    ((37, 29, 3), {"subsampling": 0, "quality": 100}),
    ((37, 29, 3), {"progressive": True}),
    ((41, 23), {}),
])
def test_libvips_decodes_pillows_jpegs_as_pillow_does(tmp_path, shape, options):
    path = jpeg(tmp_path / "in.jpg", shape, **options)
    assert np.array_equal(read_in_strips(path), np.asarray(Image.open(path)))


@pytest.mark.skipif(shutil.which("convert") is None, reason="ImageMagick is not installed")
@pytest.mark.parametrize("args", [["-sampling-factor", "4:2:0"], ["-sampling-factor", "4:4:4"],
                                  ["-interlace", "Plane"], ["-colorspace", "Gray"]])
def test_libvips_decodes_imagemagicks_jpegs_as_pillow_does(tmp_path, args):
    Image.fromarray(photo_like((33, 27, 3))).save(tmp_path / "in.png")
    subprocess.run(["convert", tmp_path / "in.png", "-quality", "80", *args, tmp_path / "in.jpg"], check=True,
                   timeout=60)
    assert np.array_equal(read_in_strips(tmp_path / "in.jpg"), np.asarray(Image.open(tmp_path / "in.jpg")))


def whole_and_banded(tmp_path, src, stages, rows, out="png"):
    whole, banded = tmp_path / f"whole.{out}", tmp_path / f"banded.{out}"
    files.apply_file(src, whole, stages)
    report = tiled.run(src, banded, stages, tile_rows=rows)
    return np.asarray(Image.open(whole)), np.asarray(Image.open(banded)), report


@pytest.mark.parametrize("kernel, shape, conv_args, pool, rows", [
    ("sharpen", (37, 29, 3), {"pad_mode": "zero"}, None, 4),
    ("box:5", (37, 29, 3), {"pad_mode": "reflect"}, None, 3),
    ("gaussian:1.5", (41, 23), {"pad_mode": "edge", "stride": 2}, None, 5),
    ("emboss", (37, 29, 3), {"pad_mode": "wrap", "dilation": 2}, None, 4),
    ("edge", (37, 29, 3), {"pad_mode": "reflect", "stride": (2, 1)}, Pool("max", 3, 2), 2),
    ("box:3", (41, 23), {"pad_mode": "wrap"}, Pool("avg", 2), 6),
])
def test_a_jpeg_in_bands_gives_the_in_memory_pixels(tmp_path, kernel, shape, conv_args, pool, rows):
    src = jpeg(tmp_path / "in.jpg", shape)
    conv, _ = make_conv(kernel, **conv_args)
    whole, banded, report = whole_and_banded(tmp_path, src, Stages(conv, pool=pool), rows,
                                             out="tif" if pool else "png")
    assert report.bands > 3 and report.rows_per_band == rows
    assert whole.shape == banded.shape and np.array_equal(whole, banded)


@pytest.mark.parametrize("pad_mode", ["reflect", "wrap"])
def test_a_jpeg_in_bands_follows_a_plain_numpy_reference(tmp_path, pad_mode):
    src = jpeg(tmp_path / "in.jpg", (26, 19, 3))
    k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float64)
    conv, _ = make_conv("sharpen", pad_mode=pad_mode, stride=(2, 1))
    tiled.run(src, tmp_path / "out.png", Stages(conv), tile_rows=2)
    decoded = read_in_strips(src, rows=7)
    want = np.clip(np.rint(correlate_ref(decoded, k, (2, 1), pads_for("same", (3, 3)), pad_mode)), 0, 255)
    got = np.asarray(Image.open(tmp_path / "out.png")).astype(np.float64)
    assert got.shape == want.shape
    assert np.abs(got - want).max() == 0


def test_the_command_runs_a_jpeg_in_bands_as_it_runs_it_whole(tmp_path, run_installed):
    src = jpeg(tmp_path / "in.jpg", (45, 31, 3))
    banded = run_installed(["apply", "sharpen", src, tmp_path / "banded.png", "--tile-rows", "4",
                            "--pad-mode", "reflect"])
    whole = run_installed(["apply", "sharpen", src, tmp_path / "whole.png", "--pad-mode", "reflect"])
    assert banded.returncode == whole.returncode == 0, banded.stderr + whole.stderr
    assert b"12 bands of 4 rows" in banded.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "banded.png")),
                          np.asarray(Image.open(tmp_path / "whole.png")))


def test_a_jpeg_too_big_for_memory_goes_in_bands_by_itself(tmp_path, run_cli, monkeypatch):
    from kernelcli import _memory

    src = jpeg(tmp_path / "in.jpg", (40, 30, 3))
    plain = run_cli(["apply", "sharpen", src, tmp_path / "whole.png"])
    assert plain.exit_code == 0 and "bands of" not in plain.stderr
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)  # 3 float32 copies: 43 KiB
    auto = run_cli(["apply", "sharpen", src, tmp_path / "auto.png"])
    assert auto.exit_code == 0, auto.output
    assert "bands of" in auto.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "auto.png")),
                          np.asarray(Image.open(tmp_path / "whole.png")))


def test_without_libvips_a_jpeg_goes_whole_and_bands_asked_for_are_refused(tmp_path, run_cli, monkeypatch):
    from kernelcli import _memory

    src = jpeg(tmp_path / "in.jpg", (40, 30, 3))
    monkeypatch.setattr(jpeg_rows, "available", lambda: False)
    asked = run_cli(["apply", "sharpen", src, tmp_path / "asked.png", "--tile-rows", "4"])
    assert asked.exit_code == 2 and "kernelcli[jpeg]" in asked.stderr
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)
    auto = run_cli(["apply", "sharpen", src, tmp_path / "auto.png"])
    assert auto.exit_code == 0, auto.output
    assert "bands of" not in auto.stderr and (tmp_path / "auto.png").exists()
    assert not (tmp_path / "asked.png").exists()


def test_a_cmyk_jpeg_stays_whole(tmp_path, run_installed):
    Image.fromarray(photo_like((20, 16, 3))).convert("CMYK").save(tmp_path / "in.jpg")
    asked = run_installed(["apply", "sharpen", tmp_path / "in.jpg", tmp_path / "out.png", "--tile-rows", "4"])
    assert asked.returncode == 2 and b"CMYK JPEG" in asked.stderr
    whole = run_installed(["apply", "sharpen", tmp_path / "in.jpg", tmp_path / "out.png"])
    assert whole.returncode == 0 and (tmp_path / "out.png").exists()


def test_a_damaged_jpeg_in_bands_fails_and_leaves_no_output(tmp_path, run_installed):
    data = jpeg(tmp_path / "full.jpg", (64, 48, 3)).read_bytes()
    (tmp_path / "in.jpg").write_bytes(data[:len(data) // 2])
    got = run_installed(["apply", "sharpen", tmp_path / "in.jpg", tmp_path / "out.png", "--tile-rows", "4"])
    assert got.returncode == 1 and b"in.jpg: cannot decode JPEG" in got.stderr
    assert b"Traceback" not in got.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_plain_jpeg_run_does_not_load_libvips(tmp_path, samples):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kernelcli", "apply", "sharpen",
                           samples / "photo.jpg", tmp_path / "out.jpg"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "kernelcli" in imported and "pyvips" not in imported


# --------------------------------------------------------------------------
# JPEG written in bands


def inputs_of_every_kind(tmp_path, shape=(45, 31, 3)):
    import tifffile

    px = photo_like(shape)
    Image.fromarray(px).save(tmp_path / "in.png")
    tifffile.imwrite(tmp_path / "in.tif", px, rowsperstrip=8, photometric="rgb" if px.ndim == 3 else None)
    np.save(tmp_path / "in.npy", px.astype(np.float32))
    icc = Image.open(tmp_path / "in.png").info.get("icc_profile")
    exif = Image.Exif()
    exif[0x010E] = "a test picture"  # ImageDescription
    Image.fromarray(px).save(tmp_path / "in.jpg", quality=90, dpi=(300, 300), exif=exif.tobytes(),
                             icc_profile=icc or _srgb())
    return {kind: tmp_path / f"in.{kind}" for kind in ("jpg", "png", "tif", "npy")}


def _srgb() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("kind", ["jpg", "png", "tif", "npy"])
def test_a_jpeg_written_in_bands_is_the_whole_paths_file_byte_for_byte(tmp_path, run_installed, kind):
    src = inputs_of_every_kind(tmp_path)[kind]
    banded = run_installed(["apply", "emboss", src, tmp_path / "banded.jpg", "--tile-rows", "4", "--quality", "83"])
    whole = run_installed(["apply", "emboss", src, tmp_path / "whole.jpg", "--quality", "83"])
    assert banded.returncode == whole.returncode == 0, banded.stderr + whole.stderr
    assert b"bands of 4 rows" in banded.stderr
    data = (tmp_path / "banded.jpg").read_bytes()
    assert data == (tmp_path / "whole.jpg").read_bytes()
    out = Image.open(tmp_path / "banded.jpg")
    assert out.size == (31, 45) and out.mode == "RGB"
    if kind == "jpg":  # the metadata came along: dpi, EXIF, ICC profile
        assert out.info["dpi"] == (300, 300) and out.getexif()[0x010E] == "a test picture"
        assert out.info["icc_profile"] == Image.open(src).info["icc_profile"]


def test_the_quality_comes_from_the_environment_too(tmp_path, run_installed):
    import os

    src = inputs_of_every_kind(tmp_path)["png"]
    env = dict(os.environ, KERNELCLI_QUALITY="40")
    got = subprocess.run(["kernelcli", "apply", "sharpen", src, tmp_path / "low.jpg", "--tile-rows", "8"], env=env,
                         capture_output=True, timeout=120)
    assert got.returncode == 0, got.stderr
    high = run_installed(["apply", "sharpen", src, tmp_path / "high.jpg", "--tile-rows", "8"])
    assert high.returncode == 0
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpg").stat().st_size
    whole = run_installed(["apply", "sharpen", src, tmp_path / "whole.jpg", "--quality", "40"])
    assert whole.returncode == 0
    assert (tmp_path / "low.jpg").read_bytes() == (tmp_path / "whole.jpg").read_bytes()


def test_a_gray_jpeg_of_quality_100_holds_the_computed_pixels_within_two_levels(tmp_path):
    src = jpeg(tmp_path / "in.jpg", (43, 37))
    conv, _ = make_conv("sharpen", pad_mode="edge")
    tiled.run(src, tmp_path / "exact.png", Stages(conv), tile_rows=5)
    from kernelcli.io.encode import OutputSpec

    tiled.run(src, tmp_path / "out.jpg", Stages(conv), tile_rows=5, output=OutputSpec(quality=100))
    exact = np.asarray(Image.open(tmp_path / "exact.png")).astype(int)
    got = np.asarray(Image.open(tmp_path / "out.jpg")).astype(int)
    assert got.shape == exact.shape and np.abs(got - exact).max() <= 2


def test_a_failure_midway_leaves_no_jpeg(tmp_path, monkeypatch):
    from kernelcli.errors import ImageWriteError

    src = inputs_of_every_kind(tmp_path)["png"]
    out = tmp_path / "out.jpg"
    out.write_bytes(b"old")
    real = tiled.compute_band

    def failing(job, f0, f1, lock=None, given=None):
        if f0 >= 20:
            raise OSError(5, "Input/output error")
        return real(job, f0, f1, lock, given)

    monkeypatch.setattr(tiled, "compute_band", failing)
    conv, _ = make_conv("box:3")
    with pytest.raises((ImageWriteError, OSError)):
        tiled.run(src, out, Stages(conv), tile_rows=4)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jpg", "in.npy", "in.png", "in.tif", "out.jpg"]


def test_without_libvips_a_jpeg_output_in_bands_is_refused_and_goes_whole_by_itself(tmp_path, run_cli,
                                                                                    monkeypatch):
    from kernelcli import _memory

    src = inputs_of_every_kind(tmp_path)["tif"]
    monkeypatch.setattr(jpeg_rows, "available", lambda: False)
    asked = run_cli(["apply", "sharpen", src, tmp_path / "asked.jpg", "--tile-rows", "4"])
    assert asked.exit_code == 2 and "a JPEG written in bands needs libvips" in asked.stderr
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)
    auto = run_cli(["apply", "sharpen", src, tmp_path / "auto.jpg"])
    assert auto.exit_code == 0 and "bands of" not in auto.stderr and (tmp_path / "auto.jpg").exists()


@pytest.mark.parametrize("shape, strip_bytes, band", [((45, 31, 3), 200, 4), ((37, 29), 64, 7), ((9, 8, 3), 10**6, 9)])
def test_the_rows_reach_libvips_across_strips_and_bands(tmp_path, monkeypatch, shape, strip_bytes, band):
    """Strips of the stream libvips reads straddle the bands handed over
    (and a strip may be one row, or the whole picture): the encoded file is
    Pillow's, byte for byte."""
    import io

    monkeypatch.setattr(jpeg_rows, "STRIP_BYTES", strip_bytes)
    px = photo_like(shape)
    sink = jpeg_rows.JpegRows(tmp_path / "out.jpg", shape, {"dpi": (72, 72)}, 88)
    for a in range(0, shape[0], band):
        sink.write(px[a:a + band])
    sink.close()
    want = io.BytesIO()
    Image.fromarray(px).save(want, "JPEG", quality=88, dpi=(72, 72))
    assert (tmp_path / "out.jpg").read_bytes() == want.getvalue()
