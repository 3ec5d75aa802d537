"""Colormaps for signed maps: the tables against plain interpolation, the
symmetric scale of ``diverging``, and ``--colormap`` through the installed
command (apply, a pipe into a picture, montage with scale bars)."""

import numpy as np
import pytest
from PIL import Image

from kernelcli.errors import UsageError
from kernelcli.io import colormaps
from kernelcli.io.picture import Picture
from kernelcli.io.pixels import to_array

from .reference import correlate_ref


def _lut_ref(name):
    """The table by hand: each entry interpolated between its two anchors."""
    stops = colormaps._ANCHORS[name]
    out = np.zeros((256, 3))
    for i in range(256):
        t = i / 255
        for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
            if p0 <= t <= p1:
                f = (t - p0) / (p1 - p0)
                out[i] = [a + f * (b - a) for a, b in zip(c0, c1)]
                break
    return np.rint(out).astype(np.uint8)


def _colorize_ref(values, name):
    lut = _lut_ref(name)
    finite = values[np.isfinite(values)]
    if name == "diverging":
        lo, hi = -np.abs(finite).max(), np.abs(finite).max()
    else:
        lo, hi = finite.min(), finite.max()
    out = np.zeros(values.shape + (3,), np.uint8)
    for idx in np.ndindex(values.shape):
        v = values[idx]
        if np.isnan(v):
            continue
        i = int(np.floor((v - lo) * 255 / (hi - lo) + 0.5))
        out[idx] = lut[min(255, max(0, i))]
    return out


@pytest.mark.parametrize("name", colormaps.COLORMAPS)
def test_tables(name):
    assert np.array_equal(colormaps.table(name), _lut_ref(name))


@pytest.mark.parametrize("name", ["diverging", "heat"])
def test_colorize_small_maps_use_their_extremes(name):
    x = (np.random.default_rng(1).standard_normal((9, 11)) * 50).astype(np.float32)
    x[2, 3] = np.nan
    assert np.array_equal(colormaps.colorize(x, name), _colorize_ref(x, name))


def test_diverging_is_symmetric_with_zero_neutral():
    x = np.array([[-2.0, 0.0, 1.0, 2.0]], np.float32)
    rgb = colormaps.colorize(x, "diverging")
    lut = colormaps.table("diverging")
    assert rgb[0, 1].tolist() == lut[128].tolist()  # 0 sits in the middle: light gray
    assert rgb[0, 0].tolist() == lut[0].tolist() and rgb[0, 3].tolist() == lut[255].tolist()
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[0, 3, 0] > rgb[0, 3, 2]  # blue below, red above
    # one-signed values still put 0 at the neutral middle
    assert colormaps.colorize(np.array([[0.0, 5.0]], np.float32), "diverging")[0, 0].tolist() == lut[128].tolist()


def test_large_maps_leave_out_the_extreme_tail():
    x = np.linspace(-1, 1, 100_000).astype(np.float32)
    x[0], x[-1] = -1000.0, 1000.0  # two outliers do not set the scale
    lo, hi = colormaps.value_range(x, "diverging")
    assert hi == -lo and abs(hi - np.percentile(np.abs(x.astype(np.float64)), 99.5)) < 1e-9
    lo, hi = colormaps.value_range(x, "heat")
    assert np.allclose([lo, hi], np.percentile(x.astype(np.float64), [0.5, 99.5]))


def test_to_array_refuses_colour_and_takes_abs_and_offset():
    rgb = Picture(np.zeros((4, 4, 3), np.float32), "RGB")
    with pytest.raises(UsageError, match="draws one channel"):
        to_array(rgb, "PNG", colormap="diverging")
    x = np.array([[-3.0, 1.0, 2.0]], np.float32)
    got = to_array(Picture(x, None), "PNG", scaling="abs", colormap="heat")
    assert np.array_equal(got, colormaps.colorize(np.abs(x), "heat"))
    with pytest.raises(UsageError, match="colormap must be one of"):
        colormaps.table("viridis")


def test_apply_and_pipe_draw_the_diverging_map(run_installed, tmp_path, samples):
    out = tmp_path / "d.png"
    done = run_installed(["apply", "sobel-x", samples / "gray.png", out, "--colormap", "diverging"])
    assert done.returncode == 0, done.stderr
    gray = np.asarray(Image.open(samples / "gray.png"), dtype=np.float64)
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    values = correlate_ref(gray, k, pads=((1, 1), (1, 1))).astype(np.float32)
    got = np.asarray(Image.open(out))
    assert got.shape == values.shape + (3,)
    assert np.array_equal(got, colormaps.colorize(values, "diverging"))
    lo, hi = colormaps.value_range(values, "diverging")
    assert lo == -hi > float(values.min()) - 1e-3  # symmetric
    piped = run_installed(["conv", "sobel-x", samples / "gray.png"])
    into = tmp_path / "p.png"
    done = run_installed(["relu", "-", into, "--leaky", "1", "--colormap", "diverging"], input=piped.stdout)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(into)), got)
    plain = tmp_path / "plain.png"
    assert run_installed(["apply", "sobel-x", samples / "gray.png", plain]).returncode == 0
    assert Image.open(plain).mode == "L"  # the default is unchanged


def test_colormap_errors_and_notes(run_installed, tmp_path, samples):
    done = run_installed(["apply", "edge", samples / "photo.png", tmp_path / "x.png", "--colormap", "heat"])
    assert done.returncode == 2 and b"draws one channel" in done.stderr
    done = run_installed(["apply", "edge", samples / "gray.png", tmp_path / "x.npy", "--colormap", "heat"])
    assert done.returncode == 0 and b"--colormap heat is for pictures" in done.stderr


def test_montage_colormap_scale_bars(run_installed, tmp_path):
    stack = np.zeros((8, 10, 2), np.float32)
    stack[:, :5, 0], stack[:, 5:, 0] = -4.0, 4.0
    stack[..., 1] = np.arange(10, dtype=np.float32)
    src, out = tmp_path / "s.npy", tmp_path / "m.png"
    np.save(src, stack)
    done = run_installed(["montage", src, out, "--colormap", "diverging", "--scale", "10", "--columns", "2"])
    assert done.returncode == 0, done.stderr
    sheet = np.asarray(Image.open(out).convert("RGB"))
    lut = colormaps.table("diverging")
    # the first tile: its left half at the blue end, its right half at the red end
    blue, red = (sheet == lut[0]).all(axis=2), (sheet == lut[255]).all(axis=2)
    assert blue.sum() >= 8 * 10 * 5 * 10 and red.sum() >= 8 * 10 * 5 * 10
    # the scale bars run through the whole table: a row holding most of its colours
    rows_with_ramp = [y for y in range(sheet.shape[0])
                      if len({tuple(p) for p in sheet[y]} & {tuple(c) for c in lut}) > 60]
    assert rows_with_ramp
    plain = tmp_path / "plain.png"
    assert run_installed(["montage", src, plain]).returncode == 0
    assert Image.open(plain).mode == "L"


def test_colormap_drops_the_input_profile_and_conv_writes_from_a_pipe(run_installed, tmp_path, samples):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "icc.png"
    Image.open(samples / "gray.png").crop((0, 0, 40, 30)).convert("RGB").save(src, icc_profile=profile)
    out = tmp_path / "o.png"
    done = run_installed(["apply", "sobel-x", src, out, "--gray", "--colormap", "diverging"])
    assert done.returncode == 0 and b"dropped the ICC profile" in done.stderr
    assert "icc_profile" not in Image.open(out).info
    piped = run_installed(["conv", "sobel-x", "-", tmp_path / "p.png", "--gray", "--colormap", "diverging"],
                          input=src.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), np.asarray(Image.open(out)))


def test_the_command_line_offers_every_colormap():
    from kernelcli.cli import options
    from kernelcli.cli.commands import cli

    assert options.COLORMAPS == colormaps.COLORMAPS
    for command in ("apply", "conv", "relu", "activate", "pool", "montage"):
        choice = next(p for p in cli.commands[command].params if p.name == "colormap").type
        assert tuple(choice.choices) == colormaps.COLORMAPS, command
    assert sum(p.name == "activation" for p in cli.commands["apply"].params) == 1
