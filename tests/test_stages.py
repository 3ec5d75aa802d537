"""The layer around the engine: kernelcli.stages (gray -> conv -> relu -> pool, alpha modes)."""

from __future__ import annotations

import numpy as np
import pytest

from kernelcli import engine, stages
from kernelcli.errors import UsageError
from kernelcli.io.inputs import read_image
from kernelcli.io.picture import Picture
from kernelcli.kernels import get_kernel
from kernelcli.stages import Pool, apply, make_conv

try:  # written by another helper; fall back to a local plain loop if absent
    from reference import correlate_ref as _correlate_ref
except ImportError:  # pragma: no cover
    _correlate_ref = None


def correlate_same_zero(x, k):
    """Plain-loop cross-correlation, 'same' zero padding, odd kernel, stride 1 (float64)."""
    k = np.asarray(k, dtype=np.float64)
    kh, kw = k.shape
    pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    if _correlate_ref is not None:
        return _correlate_ref(x, k, pads=pads)
    x = np.asarray(x, dtype=np.float64)
    p = np.pad(x, list(pads) + [(0, 0)] * (x.ndim - 2))
    out = np.zeros_like(x)
    for y in range(x.shape[0]):
        for xx in range(x.shape[1]):
            out[y, xx] = np.tensordot(k, p[y:y + kh, xx:xx + kw], axes=([0, 1], [0, 1]))
    return out


@pytest.fixture(scope="module")
def gray(samples):
    return read_image(samples / "gray.png")


@pytest.fixture(scope="module")
def rgb(samples):
    pic = read_image(samples / "photo.png")
    return pic.with_pixels(np.ascontiguousarray(pic.pixels[100:160, 150:230]))


@pytest.fixture(scope="module")
def rgba(samples):
    """A crop of rgba.png whose alpha goes from 0 (corner) to 255."""
    pic = read_image(samples / "rgba.png")
    small = pic.with_pixels(np.ascontiguousarray(pic.pixels[:90, :130]))
    a = small.pixels[..., 3]
    assert a.min() == 0 and a.max() == 255
    return small


@pytest.fixture(scope="module")
def opaque_rgba(rgb):
    a = np.full(rgb.pixels.shape[:2] + (1,), 255, np.float32)
    return Picture(np.ascontiguousarray(np.dstack([rgb.pixels, a])), "RGBA", "PNG")


def conv(spec, **kw):
    c, notes = make_conv(spec, **kw)
    assert notes == []
    return c


# --------------------------------------------------------------------------


def test_identity_on_gray_returns_the_input(gray):
    out = apply(gray, conv("identity"))
    assert out.mode == "L"
    assert out.pixels.dtype == np.float32
    assert np.array_equal(out.pixels, gray.pixels)
    assert out is not gray


def test_apply_keeps_mode_and_metadata(gray):
    out = apply(gray, conv("sharpen"))
    assert out.mode == gray.mode
    assert out.info == gray.info
    assert out.source_format == gray.source_format


def test_rgb_is_filtered_per_channel(rgb):
    c = conv("sobel-x")
    out = apply(rgb, c)
    assert out.mode == "RGB" and out.pixels.shape == rgb.pixels.shape
    for ch in range(3):
        single = engine.convolve(np.ascontiguousarray(rgb.pixels[..., ch]), "sobel-x")
        assert np.array_equal(out.pixels[..., ch], single)
    assert np.array_equal(out.pixels, engine.convolve(rgb.pixels, "sobel-x"))


def test_rgb_matches_a_plain_loop_reference(rgb):
    k = get_kernel("sharpen").array
    x = rgb.pixels[:20, :25]
    out = apply(rgb.with_pixels(np.ascontiguousarray(x)), conv("sharpen"))
    assert np.allclose(out.pixels, correlate_same_zero(x, k), atol=1e-3)


# alpha ----------------------------------------------------------------------


def test_alpha_keep_leaves_alpha_alone(rgba):
    out = apply(rgba, conv("edge"))
    assert out.mode == "RGBA"
    assert np.array_equal(out.pixels[..., 3], rgba.pixels[..., 3])
    colour = engine.convolve(np.ascontiguousarray(rgba.pixels[..., :3]), "edge")
    assert np.array_equal(out.pixels[..., :3], colour)


def test_alpha_keep_follows_stride_geometry(rgba):
    out = apply(rgba, conv("edge", stride=2))
    a = rgba.pixels[..., 3]
    assert out.pixels.shape == ((a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2, 4)
    assert np.array_equal(out.pixels[..., 3], a[::2, ::2])
    colour = engine.convolve(np.ascontiguousarray(rgba.pixels[..., :3]), "edge", stride=2)
    assert np.array_equal(out.pixels[..., :3], colour)


def test_alpha_keep_follows_valid_padding(rgba):
    out = apply(rgba, conv("edge", padding="valid"))
    assert np.array_equal(out.pixels[..., 3], rgba.pixels[1:-1, 1:-1, 3])


def test_alpha_keep_with_pooling(rgba):
    for kind, alpha_kind in (("max", "max"), ("avg", "avg"), ("sum", "avg")):
        out = apply(rgba, conv("edge"), pool=Pool(kind, 2))
        a = rgba.pixels[..., 3]
        assert np.allclose(out.pixels[..., 3], engine.pool(a, alpha_kind, 2))
        colour = engine.pool(engine.convolve(np.ascontiguousarray(rgba.pixels[..., :3]), "edge"), kind, 2)
        assert np.array_equal(out.pixels[..., :3], colour)


def test_alpha_filter_filters_alpha_like_colour(rgba):
    out = apply(rgba, conv("edge"), alpha="filter")
    assert out.mode == "RGBA"
    assert np.array_equal(out.pixels, engine.convolve(rgba.pixels, "edge"))
    assert not np.array_equal(out.pixels[..., 3], rgba.pixels[..., 3])


def test_alpha_premultiply_on_opaque_image_equals_keep(opaque_rgba):
    c = conv("gaussian", pad_mode="edge")
    keep = apply(opaque_rgba, c, alpha="keep")
    pre = apply(opaque_rgba, c, alpha="premultiply")
    assert pre.pixels.shape == keep.pixels.shape
    assert np.allclose(pre.pixels[..., :3], keep.pixels[..., :3], rtol=1e-5, atol=1e-3)
    assert np.allclose(pre.pixels[..., 3], 255, atol=1e-3)


def test_alpha_premultiply_interior_of_opaque_image_equals_keep(opaque_rgba):
    """With zero padding only the border sees transparent padding; the interior is unchanged."""
    c = conv("box")
    keep = apply(opaque_rgba, c, alpha="keep").pixels[1:-1, 1:-1, :3]
    pre = apply(opaque_rgba, c, alpha="premultiply").pixels[1:-1, 1:-1, :3]
    assert np.allclose(pre, keep, rtol=1e-5, atol=1e-3)


def test_alpha_premultiply_weights_colour_by_alpha(rgba):
    c = conv("box")
    out = apply(rgba, c, alpha="premultiply")
    px = rgba.pixels.astype(np.float64)
    w = px[..., 3:] / 255
    pre = correlate_same_zero(np.dstack([px[..., :3] * w, px[..., 3:]]), c.kernel.array)
    fa = pre[..., 3]
    expected = np.where(fa[..., None] > 0, pre[..., :3] * 255 / np.where(fa > 0, fa, 1)[..., None], 0)
    assert np.allclose(out.pixels[..., 3], fa, atol=1e-2)
    assert np.allclose(out.pixels[..., :3], expected, rtol=1e-3, atol=0.05)
    # fully transparent everywhere under the window -> colour 0
    fully_clear = fa == 0
    if fully_clear.any():
        assert np.all(out.pixels[fully_clear][:, :3] == 0)


def test_unknown_alpha_mode_is_refused(rgba):
    with pytest.raises(UsageError):
        apply(rgba, conv("box"), alpha="ignore")


# gray -----------------------------------------------------------------------


def test_gray_gives_one_luma_channel(rgb):
    out = apply(rgb, conv("identity"), gray=True)
    assert out.mode == "L"
    assert out.pixels.ndim == 2
    r, g, b = (rgb.pixels[..., i].astype(np.float64) for i in range(3))
    assert np.allclose(out.pixels, 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-3)


def test_gray_is_applied_before_filtering(rgb):
    out = apply(rgb, conv("sharpen"), gray=True)
    luma = stages.to_gray(rgb).pixels
    assert np.array_equal(out.pixels, engine.convolve(luma, "sharpen"))


def test_gray_with_alpha_gives_la(rgba):
    out = apply(rgba, conv("identity"), gray=True)
    assert out.mode == "LA"
    assert out.pixels.shape == rgba.pixels.shape[:2] + (2,)
    r, g, b, a = (rgba.pixels[..., i].astype(np.float64) for i in range(4))
    assert np.allclose(out.pixels[..., 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-3)
    assert np.array_equal(out.pixels[..., 1], rgba.pixels[..., 3])


def test_gray_on_gray_is_a_no_op(gray):
    assert np.array_equal(apply(gray, conv("identity"), gray=True).pixels, gray.pixels)


# relu and pool ----------------------------------------------------------------


def test_relu_then_pool_in_that_order(gray):
    c = conv("edge")
    out = apply(gray, c, relu=True, pool=Pool("avg", 3, 2))
    expected = engine.pool(engine.relu(engine.convolve(gray.pixels, "edge")), "avg", 3, 2)
    assert np.array_equal(out.pixels, expected)
    wrong_order = engine.relu(engine.pool(engine.convolve(gray.pixels, "edge"), "avg", 3, 2))
    assert not np.array_equal(out.pixels, wrong_order)


def test_relu_removes_negatives(gray):
    plain = apply(gray, conv("edge")).pixels
    out = apply(gray, conv("edge"), relu=True).pixels
    assert plain.min() < 0
    assert out.min() == 0
    assert np.array_equal(out, np.maximum(plain, 0))


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
def test_pool_kinds(gray, kind):
    out = apply(gray, conv("sharpen"), pool=Pool(kind, (2, 3), (1, 2)))
    expected = engine.pool(engine.convolve(gray.pixels, "sharpen"), kind, (2, 3), (1, 2))
    assert np.array_equal(out.pixels, expected)
    h, w = gray.pixels.shape
    assert out.pixels.shape == (h - 1, (w - 3) // 2 + 1)


# make_conv ------------------------------------------------------------------


def test_make_conv_normalize_sums_to_one():
    c, notes = make_conv("1,2,1", normalize=True)
    assert notes == []
    assert np.isclose(c.kernel.array.sum(), 1.0)
    assert np.allclose(c.kernel.array, [[0.25, 0.5, 0.25]])


def test_make_conv_normalize_zero_sum_kernel_notes_it():
    c, notes = make_conv("edge", normalize=True)
    assert len(notes) == 1
    assert "sum" in notes[0] and "0" in notes[0]
    assert np.array_equal(c.kernel.array, get_kernel("edge").array)


def test_make_conv_passes_settings_through(gray):
    c, notes = make_conv("sobel-x", stride=(2, 1), padding="valid", pad_mode="reflect",
                         dilation=(1, 2), flip=True)
    assert notes == []
    out = apply(gray, c).pixels
    expected = engine.convolve(gray.pixels, "sobel-x", stride=(2, 1), padding="valid",
                               pad_mode="reflect", dilation=(1, 2), flip=True)
    assert np.array_equal(out, expected)
