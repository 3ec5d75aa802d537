"""Output formats beyond PNG, JPEG, TIFF, WebP and BMP: AVIF and GIF through
Pillow; HEIC, JPEG XL and OpenEXR through the optional extra (skipped when
it is not installed), with an error naming the extra when it is missing.
Each output is read back by the format's own library."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from .reference import correlate_ref, png_bytes

BOX = np.ones((3, 3)) / 9
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)


def _gray(tmp_path, seed=0, shape=(12, 16)):
    px = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    return px


def _smooth(seed, shape):
    """A smooth colour picture (lossy encoders keep it closely; noise they do not)."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    return np.dstack([127.5 + 100 * np.sin(x / 7 + y / 11 + p) for p in phase]).round().astype(np.uint8)


def _box(px, pad_mode="zero"):
    return np.clip(np.floor(correlate_ref(px, BOX, pads=((1, 1), (1, 1)), pad_mode=pad_mode) + 0.5), 0, 255)


def test_gray_gif_holds_the_blur_exactly(tmp_path, run_installed):
    px = _gray(tmp_path)
    proc = run_installed(["apply", "box", tmp_path / "in.png", tmp_path / "out.gif"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "out.gif") as img:
        assert img.format == "GIF"
        got = np.asarray(img.convert("L")).astype(int)
    assert np.abs(got - _box(px)).max() <= 1  # float32 sums against float64, rounding at .5


def test_colour_gif_says_its_colours_were_reduced(tmp_path, run_installed, samples):
    proc = run_installed(["apply", "box", samples / "photo.png", tmp_path / "out.gif"])
    assert proc.returncode == 0, proc.stderr
    assert b"GIF holds at most 256 colours" in proc.stderr
    with Image.open(tmp_path / "out.gif") as img, Image.open(samples / "photo.png") as src:
        assert img.size == src.size and img.mode == "P"


def test_gif_keeps_the_clear_pixels_of_alpha(tmp_path, run_installed):
    """RGBA of more than 256 colours into GIF, one picture and frames:
    pixels of alpha below 128 are clear, the others opaque, with a note
    (Pillow's own reduction dropped the transparency of such a picture)."""
    rng = np.random.default_rng(5)
    frames = []
    for _ in range(2):
        px = rng.integers(0, 256, (12, 16, 4)).astype(np.uint8)
        px[..., 3] = rng.choice([0, 60, 127, 128, 200, 255], (12, 16))
        frames.append(px)
    Image.fromarray(frames[0]).save(tmp_path / "in.png")
    Image.fromarray(frames[0]).save(tmp_path / "anim.png", save_all=True, append_images=[Image.fromarray(frames[1])])
    for src, count in (("in.png", 1), ("anim.png", 2)):
        proc = run_installed(["apply", "identity", tmp_path / src, tmp_path / "out.gif"])
        assert proc.returncode == 0, proc.stderr
        assert b"alpha below 128 became clear, the rest opaque" in proc.stderr
        with Image.open(tmp_path / "out.gif") as img:
            assert getattr(img, "n_frames", 1) == count
            for i in range(count):
                img.seek(i)
                alpha = np.asarray(img.convert("RGBA"))[..., 3]
                assert np.array_equal(alpha == 0, frames[i][..., 3] < 128), (src, i)
                assert set(np.unique(alpha)) <= {0, 255}


def test_avif_output_is_close_to_the_blur(tmp_path, run_installed):
    if not _pillow_has("avif"):
        pytest.skip("this Pillow has no AVIF")
    px = _smooth(1, (32, 40))
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    proc = run_installed(["apply", "box", tmp_path / "in.png", tmp_path / "out.avif", "--quality", "100",
                          "--pad-mode", "edge"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "out.avif") as img:
        assert img.format == "AVIF" and img.size == (40, 32)
        got = np.asarray(img.convert("RGB")).astype(float)
    assert np.abs(got - _box(px, "edge")).mean() < 4  # lossy, but the same picture
    # read back by content, whatever its name
    (tmp_path / "avif.png").write_bytes((tmp_path / "out.avif").read_bytes())
    proc = run_installed(["apply", "identity", tmp_path / "avif.png", tmp_path / "back.npy"])
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "back.npy"), got.astype(np.float32))


def _pillow_has(feature):
    from PIL import features

    return features.check(feature)


def test_exr_holds_an_edge_map_as_float(tmp_path, run_installed):
    openexr = pytest.importorskip("OpenEXR")
    px = _gray(tmp_path, 2)
    proc = run_installed(["apply", "sobel-x", tmp_path / "in.png", tmp_path / "gx.exr"])
    assert proc.returncode == 0, proc.stderr
    assert b"EXR cannot store 8-bit pixels; written as float" in proc.stderr
    with openexr.File(str(tmp_path / "gx.exr"), separate_channels=True) as f:
        got = f.channels()["Y"].pixels
    assert got.dtype == np.float32
    assert np.array_equal(got, correlate_ref(px, SOBEL_X, pads=((1, 1), (1, 1))).astype(np.float32))
    proc = run_installed(["apply", "identity", tmp_path / "gx.exr", tmp_path / "back.npy"])
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "back.npy"), got)


def test_exr_of_colour_with_alpha(tmp_path, run_installed, samples):
    openexr = pytest.importorskip("OpenEXR")
    proc = run_installed(["apply", "identity", samples / "rgba.png", tmp_path / "out.exr"])
    assert proc.returncode == 0, proc.stderr
    with openexr.File(str(tmp_path / "out.exr"), separate_channels=True) as f:
        channels = f.channels()
        got = np.dstack([channels[c].pixels for c in "RGBA"])
    with Image.open(samples / "rgba.png") as img:
        assert np.array_equal(got, np.asarray(img).astype(np.float32))


@pytest.mark.parametrize("ext, module", [("heic", "pillow_heif"), ("jxl", "pillow_jxl")])
def test_heic_and_jpeg_xl_through_the_extra(tmp_path, run_installed, ext, module):
    plugin = pytest.importorskip(module)
    if module == "pillow_heif":
        plugin.register_heif_opener()
    px = _smooth(3, (24, 32))
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    proc = run_installed(["apply", "box", tmp_path / "in.png", tmp_path / f"out.{ext}", "--quality", "100",
                          "--pad-mode", "edge"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / f"out.{ext}") as img:
        assert img.size == (32, 24)
        got = np.asarray(img.convert("RGB")).astype(float)
    assert np.abs(got - _box(px, "edge")).mean() < 4
    proc = run_installed(["apply", "identity", tmp_path / f"out.{ext}", tmp_path / "back.npy"])
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "back.npy").shape == (24, 32, 3)


@pytest.mark.parametrize("ext, package", [("heic", "pillow-heif"), ("jxl", "pillow-jxl-plugin"),
                                          ("exr", "OpenEXR")])
def test_a_missing_extra_is_named(tmp_path, run_cli, samples, monkeypatch, ext, package):
    from kernelcli.io import _extra

    real = importlib.util.find_spec
    hidden = {module for module, _ in _extra.EXTRA_FORMATS.values()}
    monkeypatch.setattr(_extra.importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a))
    result = run_cli(["apply", "box", samples / "gray.png", tmp_path / f"out.{ext}"])
    assert result.exit_code == 2
    assert f"needs {package}" in result.stderr and "pip install 'kernelcli[formats]'" in result.stderr
    assert not (tmp_path / f"out.{ext}").exists()


@pytest.mark.parametrize("ext, fmt, module, package", [("heic", "HEIF", "pillow_heif", "pillow-heif"),
                                                       ("jxl", "JXL", "pillow_jxl", "pillow-jxl-plugin"),
                                                       ("exr", "EXR", "OpenEXR", "OpenEXR")])
def test_an_input_of_the_extra_in_info_and_without_the_extra(tmp_path, run_installed, run_cli, monkeypatch, samples,
                                                             ext, fmt, module, package):
    """info describes HEIC, JPEG XL and OpenEXR inputs through the extra;
    without it, reading one (info, apply) is an error naming the file and
    the extra, as for every input that cannot be read (exit 1)."""
    pytest.importorskip(module)
    made = run_installed(["apply", "identity", samples / "gray.png", tmp_path / f"in.{ext}"]
                         + (["--depth", "float"] if ext == "exr" else []))
    assert made.returncode == 0, made.stderr
    with Image.open(samples / "gray.png") as img:
        width, height = img.size
    info = run_installed(["info", tmp_path / f"in.{ext}"])
    assert info.returncode == 0, info.stderr
    assert f"in.{ext}: {fmt} {width}x{height}" in info.stdout.decode()
    monkeypatch.setitem(__import__("sys").modules, module, None)  # the extra not installed
    for args in (["info", tmp_path / f"in.{ext}"], ["apply", "identity", tmp_path / f"in.{ext}", tmp_path / "o.npy"]):
        result = run_cli(args)
        assert result.exit_code == 1, (args, result.stderr)
        assert f"in.{ext}: " in result.stderr and f"needs {package}, from the optional formats extra" in result.stderr
    assert not (tmp_path / "o.npy").exists()
