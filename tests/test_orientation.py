"""Pictures are turned upright from their EXIF orientation before filtering
(the output's tag says 1); --no-auto-orient keeps the stored pixels and tag.
Oracles: Pillow's ImageOps.exif_transpose and NumPy rotations."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageOps

from .reference import correlate_ref

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)


def _with_orientation(path, pixels, orientation, **kwargs):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_turned_upright(tmp_path, run_installed, orientation):
    px = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3)).astype(np.uint8)
    _with_orientation(tmp_path / "in.png", px, orientation)
    proc = run_installed(["apply", "identity", tmp_path / "in.png", tmp_path / "out.png"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "in.png") as img:
        want = np.asarray(ImageOps.exif_transpose(img))
    with Image.open(tmp_path / "out.png") as out:
        assert np.array_equal(np.asarray(out), want)
        assert out.getexif().get(0x0112) == 1


def test_a_camera_jpeg_is_filtered_as_displayed(tmp_path, run_installed):
    px = np.random.default_rng(6).integers(0, 256, (6, 10)).astype(np.uint8)
    _with_orientation(tmp_path / "cam.jpg", px, 6, quality=95)
    with Image.open(tmp_path / "cam.jpg") as img:
        stored = np.asarray(img).astype(np.float64)
    proc = run_installed(["apply", "sobel-x", tmp_path / "cam.jpg", tmp_path / "gx.npy"])
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "gx.npy")
    upright = np.rot90(stored, -1)  # orientation 6: turned 90 degrees clockwise to display
    assert got.shape == (10, 6)
    assert np.allclose(got, correlate_ref(upright, SOBEL_X, pads=((1, 1), (1, 1))), atol=1e-3)
    proc = run_installed(["apply", "sobel-x", tmp_path / "cam.jpg", tmp_path / "gx.jpg"])
    with Image.open(tmp_path / "gx.jpg") as out:
        assert out.size == (6, 10) and out.getexif().get(0x0112) == 1


def test_no_auto_orient_keeps_the_stored_pixels_and_tag(tmp_path, run_installed):
    px = np.random.default_rng(8).integers(0, 256, (5, 8, 3)).astype(np.uint8)
    _with_orientation(tmp_path / "in.png", px, 8)
    proc = run_installed(["apply", "identity", tmp_path / "in.png", tmp_path / "out.png", "--no-auto-orient"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert np.array_equal(np.asarray(out), px)
        assert out.getexif().get(0x0112) == 8


@pytest.mark.parametrize("orientation", [3, 6])
def test_16_bit_colour_tiff_is_turned_upright(tmp_path, run_installed, orientation):
    tifffile = pytest.importorskip("tifffile")
    px = np.random.default_rng(0).integers(0, 65536, (4, 7, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", px, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / "out.npy"])
    assert proc.returncode == 0, proc.stderr
    want = np.rot90(px, 2) if orientation == 3 else np.rot90(px, -1)
    assert np.array_equal(np.load(tmp_path / "out.npy"), want.astype(np.float32))


@pytest.mark.parametrize("orientation", [6, 7])
def test_8_bit_tiff_upright_and_as_stored(tmp_path, run_installed, orientation):
    """Pillow turns an 8-bit TIFF upright itself as it loads it: the picture
    is read upright once (its dpi swapped with the axes, its place tags,
    which describe the stored grid, dropped), and --no-auto-orient gives the
    stored pixels and dpi back."""
    tifffile = pytest.importorskip("tifffile")
    px = np.random.default_rng(orientation).integers(0, 256, (4, 7, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", px, photometric="rgb", resolution=(300, 100), resolutionunit="INCH",
                     extratags=[(274, 3, 1, orientation, True), (33550, 12, 3, (2.0, 1.0, 0.0), True)])
    with Image.open(tmp_path / "in.tif") as img:
        assert img.getexif().get(0x0112) == orientation  # (Pillow reads the tag before it loads)
    want = np.rot90(px, -1) if orientation == 6 else np.rot90(px, 2).swapaxes(0, 1)
    for flags, pixels, dpi in (([], want, (100, 300)), (["--no-auto-orient"], px, (300, 100))):
        proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / "out.npy", *flags])
        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(np.load(tmp_path / "out.npy"), pixels.astype(np.float32)), flags
        proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / "out.tif", *flags])
        assert proc.returncode == 0, proc.stderr
        with tifffile.TiffFile(tmp_path / "out.tif") as tif:
            tags = tif.pages.first.tags
            assert (tags[282].value[0] / tags[282].value[1], tags[283].value[0] / tags[283].value[1]) == dpi
            assert (33550 in tags) == bool(flags), flags


def test_a_jpeg_oriented_by_imagemagick(tmp_path, run_installed):
    exe = shutil.which("convert")
    if exe is None or b"ImageMagick" not in subprocess.run([exe, "-version"], capture_output=True).stdout:
        pytest.skip("ImageMagick is not installed")
    px = np.random.default_rng(1).integers(0, 256, (6, 9, 3)).astype(np.uint8)
    _with_orientation(tmp_path / "in.jpg", px, 1, quality=95)  # ImageMagick 6 sets the tag of an EXIF block
    made = subprocess.run([exe, tmp_path / "in.jpg", "-quality", "95", "-orient", "RightTop", tmp_path / "cam.jpg"],
                          capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    proc = run_installed(["apply", "identity", tmp_path / "cam.jpg", tmp_path / "out.npy"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "cam.jpg") as img:
        assert img.getexif().get(0x0112) == 6
        want = np.asarray(ImageOps.exif_transpose(img)).astype(np.float32)
    assert np.array_equal(np.load(tmp_path / "out.npy"), want)
