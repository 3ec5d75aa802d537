"""16-bit and float colour in and out, and --depth, through the installed
command, on files written by other tools (a plain PNG writer in
tests/reference.py, tifffile, Pillow, ImageMagick where present)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from kernelcli.io.inputs import read_image

from .reference import correlate_ref, png_bytes, png_pixels

tifffile = pytest.importorskip("tifffile")


def _every_16_bit_value(channels: int) -> np.ndarray:
    """An image holding every 16-bit value at least once, shuffled."""
    rng = np.random.default_rng(16)
    width = -(-65536 // (128 * channels))
    values = np.resize(np.arange(65536, dtype=np.uint16), 128 * width * channels)
    return rng.permutation(values).reshape(128, width, channels)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_every_16_bit_colour_value_survives_identity_through_png(tmp_path, run_installed, channels):
    px = _every_16_bit_value(channels)
    (tmp_path / "in.png").write_bytes(png_bytes(px))  # every row filter, as other writers use them
    proc = run_installed(["apply", "identity", tmp_path / "in.png", tmp_path / "out.png"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert np.array_equal(png_pixels((tmp_path / "out.png").read_bytes()), px)


@pytest.mark.parametrize("channels", [3, 4])
def test_every_16_bit_colour_value_survives_identity_through_tiff(tmp_path, run_installed, channels):
    px = _every_16_bit_value(channels)
    tifffile.imwrite(tmp_path / "in.tif", px, photometric="rgb",
                     extrasamples=("unassalpha",) if channels == 4 else None)
    for out in ("out.tif", "out.npy", "out.png"):
        proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / out])
        assert proc.returncode == 0, proc.stderr
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), px)
    assert np.array_equal(np.load(tmp_path / "out.npy"), px.astype(np.float32))
    assert np.array_equal(png_pixels((tmp_path / "out.png").read_bytes()), px)


def test_16_bit_colour_reads_as_16_bit_modes(tmp_path):
    px = _every_16_bit_value(3)[:8, :8]
    pic = read_image(png_bytes(px))
    assert (pic.mode, pic.pixels.dtype) == ("RGB;16", np.float32)
    assert pic.max_value == 65535.0
    assert np.array_equal(pic.pixels, px)


def test_a_16_bit_colour_blur_matches_a_plain_loop(tmp_path, run_installed):
    px = np.random.default_rng(3).integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    proc = run_installed(["apply", "box", tmp_path / "in.png", tmp_path / "out.png"])
    assert proc.returncode == 0, proc.stderr
    want = np.clip(np.floor(correlate_ref(px, np.ones((3, 3)) / 9, pads=((1, 1), (1, 1))) + 0.5), 0, 65535)
    got = png_pixels((tmp_path / "out.png").read_bytes()).astype(np.int64)
    assert np.abs(got - want).max() <= 1  # float32 sums against float64


def test_16_bit_colour_into_an_8_bit_format_says_so(tmp_path, run_installed):
    px = np.full((4, 5, 3), 65535, np.uint16)
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    proc = run_installed(["apply", "identity", tmp_path / "in.png", tmp_path / "out.jpg"])
    assert proc.returncode == 0, proc.stderr
    assert b"JPEG cannot store 16-bit pixels; written as 8-bit" in proc.stderr


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 3), (6, 7, 4)])
def test_float_tiff_is_read_and_written_as_float(tmp_path, run_installed, shape):
    values = np.random.default_rng(1).normal(0, 1000, shape).astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", values, photometric="rgb" if len(shape) == 3 else "minisblack",
                     extrasamples=("unassalpha",) if shape[-1] == 4 and len(shape) == 3 else None)
    proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / "out.tif"])
    assert proc.returncode == 0, proc.stderr
    got = tifffile.imread(tmp_path / "out.tif")
    assert got.dtype == np.float32
    assert np.array_equal(got, values)


def test_depth_float_keeps_an_edge_map_sign_and_range(tmp_path, run_installed, samples):
    gray = np.random.default_rng(2).integers(0, 256, (10, 12)).astype(np.uint8)
    (tmp_path / "in.png").write_bytes(png_bytes(gray))
    proc = run_installed(["apply", "sobel-x", tmp_path / "in.png", tmp_path / "gx.tif", "--depth", "float"])
    assert proc.returncode == 0, proc.stderr
    got = tifffile.imread(tmp_path / "gx.tif")
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    want = correlate_ref(gray, sobel, pads=((1, 1), (1, 1)))
    assert got.dtype == np.float32 and got.min() < 0 and got.max() > 255
    assert np.array_equal(got, want.astype(np.float32))


def test_depth_16_keeps_the_fractions_of_an_8_bit_blur(tmp_path, run_installed):
    gray = np.random.default_rng(4).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    (tmp_path / "in.png").write_bytes(png_bytes(gray))
    proc = run_installed(["apply", "box", tmp_path / "in.png", tmp_path / "out.png", "--depth", "16"])
    assert proc.returncode == 0, proc.stderr
    got = png_pixels((tmp_path / "out.png").read_bytes())
    want = np.floor(correlate_ref(gray, np.ones((3, 3)) / 9, pads=((1, 1), (1, 1))) * 257 + 0.5)
    assert got.dtype == np.uint16
    assert np.abs(got.astype(np.int64) - want).max() <= 1
    assert np.count_nonzero(got % 257)  # values between the 8-bit steps: the fractions are kept


def test_depth_8_cuts_16_bit_colour_to_8_bits(tmp_path, run_installed):
    px = _every_16_bit_value(3)[:16, :16]
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    proc = run_installed(["apply", "identity", tmp_path / "in.png", tmp_path / "out.png", "--depth", "8"])
    assert proc.returncode == 0, proc.stderr
    got = png_pixels((tmp_path / "out.png").read_bytes())
    assert got.dtype == np.uint8
    assert np.array_equal(got, np.floor(px / 257.0 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("depth, ext, holds", [("16", "jpg", "png, tif"), ("float", "png", "tif, exr")])
def test_a_depth_the_format_cannot_hold_is_a_usage_error(tmp_path, run_installed, samples, depth, ext, holds):
    proc = run_installed(["apply", "identity", samples / "gray.png", tmp_path / f"out.{ext}", "--depth", depth])
    assert proc.returncode == 2
    assert holds.encode() in proc.stderr and b"Traceback" not in proc.stderr
    assert not (tmp_path / f"out.{ext}").exists()


def _imagemagick():
    for name in ("magick", "convert"):
        exe = shutil.which(name)
        if exe:
            try:
                out = subprocess.run([exe, "-version"], capture_output=True, timeout=20).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if b"ImageMagick" in out:
                return exe
    return None


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_colour_written_by_imagemagick(tmp_path, run_installed, ext):
    exe = _imagemagick()
    if exe is None:
        pytest.skip("ImageMagick is not installed")
    made = subprocess.run([exe, "-size", "3x700", "gradient:#000100000000-#fffe4000ffff", "-depth", "16",
                           "-type", "TrueColor", f"{tmp_path}/in.{ext}"], capture_output=True, timeout=60)
    if made.returncode != 0:
        pytest.skip(f"ImageMagick cannot write 16-bit {ext}: {made.stderr[:200]!r}")
    want = subprocess.run([exe, f"{tmp_path}/in.{ext}", "-depth", "16", "-endian", "MSB", "rgb:-"], capture_output=True,
                          timeout=60).stdout
    want = np.frombuffer(want, ">u2").reshape(700, 3, 3)
    proc = run_installed(["apply", "identity", tmp_path / f"in.{ext}", tmp_path / "out.npy"])
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "out.npy"), want.astype(np.float32))
    assert len(np.unique(want)) > 256  # more values than 8 bits hold


@pytest.mark.parametrize("name", ["photo.jpg", "gray16.tif"])
def test_a_plain_apply_imports_no_optional_library(tmp_path, samples, name):
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kernelcli", "apply", "sharpen",
                           samples / name, tmp_path / f"out{samples.joinpath(name).suffix}"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "kernelcli" in imported
    assert not imported & {"tifffile", "pillow_heif", "pillow_jxl", "OpenEXR", "Imath", "zarr", "numcodecs"}


@pytest.mark.parametrize("name", ["out.png", "out.tif", "float.tif"])
def test_16_bit_and_float_colour_written_by_libvips(tmp_path, run_installed, name):
    vips = shutil.which("vips")
    if vips is None:
        pytest.skip("libvips is not installed")
    rng = np.random.default_rng(9)
    px = (rng.normal(0, 500, (7, 9, 3)).astype(np.float32) if name.startswith("float")
          else rng.integers(0, 65536, (7, 9, 3)).astype(np.uint16))
    tifffile.imwrite(tmp_path / "in.tif", px, photometric="rgb")
    made = subprocess.run([vips, "copy", tmp_path / "in.tif", tmp_path / name], capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    proc = run_installed(["apply", "identity", tmp_path / name, tmp_path / "back.npy"])
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "back.npy"), px.astype(np.float32))
