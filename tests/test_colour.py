"""Colour: CMYK (and other non-RGB) inputs converted to sRGB through their
ICC profile, the output carrying an sRGB profile; --linear filters in linear
light. Oracles: ImageMagick's profile conversion (where installed), Pillow's
ImageCms, and the sRGB curve written out in plain NumPy."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from .reference import correlate_ref, png_bytes

CMYK_PROFILES = [Path("/usr/share/color/icc/ghostscript/default_cmyk.icc"),
                 Path("/usr/share/color/icc/ghostscript/ps_cmyk.icc")]
SRGB_PROFILES = [Path("/usr/share/color/icc/ghostscript/srgb.icc")]


def _first(paths):
    return next((p for p in paths if p.is_file()), None)


def _cmyk_jpeg(path, profile=None):
    y, x = np.mgrid[:24, :32]
    cmyk = np.dstack([(x * 8) % 256, (y * 10) % 256, ((x + y) * 4) % 256, (x * y) % 120]).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(path, quality=100, **({"icc_profile": profile} if profile else {}))


def test_a_cmyk_jpeg_is_converted_through_its_profile(tmp_path, run_installed):
    cmyk = _first(CMYK_PROFILES)
    if cmyk is None:
        pytest.skip("no CMYK ICC profile on this machine")
    _cmyk_jpeg(tmp_path / "in.jpg", cmyk.read_bytes())
    proc = run_installed(["apply", "identity", tmp_path / "in.jpg", tmp_path / "out.png"])
    assert proc.returncode == 0, proc.stderr
    assert b"CMYK image converted to sRGB through its ICC profile" in proc.stderr
    with Image.open(tmp_path / "out.png") as out:
        got = np.asarray(out).astype(int)
        profile = ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)  # the profile of the pixels, not the CMYK one
    with Image.open(tmp_path / "in.jpg") as src:
        naive = np.asarray(src.convert("RGB")).astype(int)
        want = np.asarray(ImageCms.profileToProfile(src, ImageCms.ImageCmsProfile(str(cmyk)),
                                                    ImageCms.createProfile("sRGB"), outputMode="RGB",
                                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC))
    assert np.array_equal(got, want)
    assert np.abs(got - naive).mean() > 5  # the plain formula is not what was done
    exe, srgb = shutil.which("convert"), _first(SRGB_PROFILES)
    if exe and srgb and b"ImageMagick" in subprocess.run([exe, "-version"], capture_output=True).stdout:
        subprocess.run([exe, tmp_path / "in.jpg", "-profile", srgb, tmp_path / "im.png"], check=True, timeout=60)
        with Image.open(tmp_path / "im.png") as im:
            other = np.asarray(im.convert("RGB")).astype(int)
        assert np.abs(got - other).mean() < 1.5  # another program, another sRGB profile: close


def test_a_cmyk_jpeg_without_a_profile_gets_none(tmp_path, run_installed):
    _cmyk_jpeg(tmp_path / "in.jpg")
    proc = run_installed(["apply", "identity", tmp_path / "in.jpg", tmp_path / "out.png"])
    assert proc.returncode == 0, proc.stderr
    assert b"CMYK image converted to RGB" in proc.stderr
    with Image.open(tmp_path / "out.png") as out, Image.open(tmp_path / "in.jpg") as src:
        assert "icc_profile" not in out.info
        assert np.array_equal(np.asarray(out), np.asarray(src.convert("RGB")))


def _to_linear(v):
    v = v / 255.0
    return 255.0 * np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _from_linear(v):
    v = v / 255.0
    a = np.abs(v)
    return 255.0 * np.sign(v) * np.where(a <= 0.0031308, a * 12.92, 1.055 * a ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize("kernel, weights", [("box", np.ones((3, 3)) / 9),
                                             ("sharpen", np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]))])
def test_linear_filters_in_linear_light_and_leaves_alpha(tmp_path, run_installed, kernel, weights):
    px = np.random.default_rng(5).integers(0, 256, (9, 12, 4)).astype(np.uint8)
    (tmp_path / "in.png").write_bytes(png_bytes(px))
    proc = run_installed(["apply", kernel, tmp_path / "in.png", tmp_path / "out.npy", "--linear"])
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npy")
    filtered = correlate_ref(_to_linear(px[..., :3].astype(float)), weights, pads=((1, 1), (1, 1)))
    assert np.allclose(got[..., :3], _from_linear(filtered), atol=0.05)
    assert np.array_equal(got[..., 3], px[..., 3].astype(np.float32))
    plain = correlate_ref(px[..., :3].astype(float), weights, pads=((1, 1), (1, 1)))
    assert np.abs(got[..., :3] - plain).max() > 5  # it did change the result


def test_linear_blur_of_black_and_white_is_the_light_average(tmp_path, run_installed):
    stripes = np.tile(np.array([0, 255], np.uint8), (6, 8))  # 6 x 16 alternating columns
    (tmp_path / "in.png").write_bytes(png_bytes(stripes))
    for args, name in (([], "gamma.png"), (["--linear"], "linear.png")):
        proc = run_installed(["apply", "1,1", tmp_path / "in.png", tmp_path / name, "--normalize",
                              "--padding", "valid", *args])
        assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "gamma.png") as g, Image.open(tmp_path / "linear.png") as lin:
        assert np.unique(np.asarray(g)).tolist() == [128]
        assert np.unique(np.asarray(lin)).tolist() == [188]  # half the light: sRGB 188, as displays show it


def test_linear_refuses_a_filter_bank(tmp_path, run_installed, samples):
    proc = run_installed(["apply", "edge,sobel-x", samples / "gray.png", tmp_path / "out.npy", "--linear"])
    assert proc.returncode == 2 and b"--linear needs one kernel" in proc.stderr


def test_linear_uses_the_profile_curve_of_an_adobe_rgb_picture(tmp_path, run_installed):
    a98 = _first([Path("/usr/share/color/icc/ghostscript/a98.icc")])
    if a98 is None:
        pytest.skip("no Adobe RGB (1998) profile on this machine")
    px = np.random.default_rng(0).integers(0, 256, (8, 10, 3)).astype(np.uint8)
    Image.fromarray(px).save(tmp_path / "in.png", icc_profile=a98.read_bytes())
    proc = run_installed(["apply", "box", tmp_path / "in.png", tmp_path / "out.npy", "--linear"])
    assert proc.returncode == 0, proc.stderr
    gamma = 563 / 256  # the profile's curve: gamma 2.2 as the u8.8 number 0x0233
    filtered = correlate_ref(255.0 * (px / 255.0) ** gamma, np.ones((3, 3)) / 9, pads=((1, 1), (1, 1)))
    want = 255.0 * (filtered / 255.0) ** (1 / gamma)
    got = np.load(tmp_path / "out.npy")
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(got - _from_linear(correlate_ref(_to_linear(px.astype(float)), np.ones((3, 3)) / 9,
                                                   pads=((1, 1), (1, 1))))).max() > 0.5  # not the sRGB curve
