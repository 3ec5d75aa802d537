"""Named filter banks, --combine, and the sized kernels log:, dog:, unsharp:,
each against an independent reference (scipy.ndimage, or a plain loop)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kernelcli.io.inputs import read_image
from kernelcli.kernels import BANKS, get_kernel, get_kernels

RNG = np.random.default_rng(24)
GRAY = (RNG.random((23, 19)) * 255).astype(np.float32)
RGB = (RNG.random((17, 21, 3)) * 255).astype(np.float32)

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
SCHARR_X = np.array([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]], dtype=np.float64)
KIRSCH_N = np.array([[5, 5, 5], [-3, 0, -3], [-3, -3, -3]], dtype=np.float64)
RING = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]  # clockwise from the top left


def correlate(x, k, cval=0.0):
    """Cross-correlation with constant padding, as kernelcli's same padding
    places an odd kernel (float64, per channel)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        return np.dstack([correlate(x[..., i], k, cval) for i in range(x.shape[2])])
    return ndimage.correlate(x, np.asarray(k, dtype=np.float64), mode="constant", cval=cval)


def turned(k, steps):
    """A 3x3 kernel with its outer ring moved ``steps`` places clockwise (a plain loop)."""
    out = k.copy()
    for i, (r, c) in enumerate(RING):
        out[RING[(i + steps) % 8]] = k[r, c]
    return out


# --------------------------------------------------------------------------
# the named kernels and banks


def test_scharr_and_kirsch_weights():
    np.testing.assert_array_equal(get_kernel("scharr-x").array, SCHARR_X)
    np.testing.assert_array_equal(get_kernel("scharr-y").array, SCHARR_X.T)
    for steps, name in enumerate(BANKS["kirsch"]):
        np.testing.assert_array_equal(get_kernel(name).array, turned(KIRSCH_N, steps), err_msg=name)


@pytest.mark.parametrize("bank, names", [("sobel", ["sobel-x", "sobel-y"]), ("scharr", ["scharr-x", "scharr-y"]),
                                         ("prewitt", ["prewitt-x", "prewitt-y"]),
                                         ("kirsch", [f"kirsch-{d}" for d in "n ne e se s sw w nw".split()])])
def test_bank_names_stand_for_their_kernels(bank, names):
    assert [k.name for k in get_kernels(bank)] == names
    assert [k.name for k in get_kernels(f"edge,{bank.upper()},box")] == ["edge", *names, "box"]


def test_a_bank_name_where_one_kernel_is_wanted_says_so(run_cli):
    result = run_cli(["explain", "sobel", "1,2,3;4,5,6;7,8,9"])
    assert result.exit_code == 2
    assert "'sobel' is a filter bank (sobel-x,sobel-y)" in result.stderr


def test_kernels_show_prints_every_kernel_of_a_named_bank(run_cli):
    result = run_cli(["kernels", "show", "sobel"])
    assert result.exit_code == 0
    assert [block.splitlines()[0] for block in result.stdout.strip().split("\n\n")] == [
        "sobel-x (3x3)", "sobel-y (3x3)"]


# --------------------------------------------------------------------------
# --combine


def _reduce(maps, how):
    stack = np.stack(maps)
    return {"magnitude": lambda: np.sqrt((stack ** 2).sum(0)), "max": lambda: stack.max(0),
            "min": lambda: stack.min(0), "sum": lambda: stack.sum(0), "mean": lambda: stack.mean(0)}[how]()


@pytest.mark.parametrize("how", ["magnitude", "max", "min", "sum", "mean"])
def test_combine_reduces_the_maps_per_channel(run_cli, tmp_path, how):
    src = tmp_path / "in.npy"
    np.save(src, RGB)
    out = tmp_path / "out.npy"
    result = run_cli(["conv", "sobel,edge", src, out, "--combine", how])
    assert result.exit_code == 0, result.stderr
    expected = _reduce([correlate(RGB, SOBEL_X), correlate(RGB, SOBEL_X.T), correlate(RGB, get_kernel("edge").array)],
                       how)
    got = read_image(str(out))
    np.testing.assert_allclose(got.pixels, expected, rtol=1e-5, atol=2e-3)
    assert got.labels == [f"{how}(sobel-x,sobel-y,edge):{c}" for c in "012"]


def test_kirsch_max_with_relu_and_pool_after_it(run_installed, tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    out = tmp_path / "out.npy"
    done = run_installed(["apply", "kirsch", src, out, "--combine", "max", "--relu", "--pool", "max"])
    assert done.returncode == 0, done.stderr
    maps = [correlate(GRAY, turned(KIRSCH_N, s)) for s in range(8)]
    combined = np.maximum(np.max(maps, axis=0), 0)
    pooled = combined[:22, :18].reshape(11, 2, 9, 2).max(axis=(1, 3))
    np.testing.assert_allclose(np.load(out), pooled, rtol=1e-6, atol=1e-3)


def test_combine_magnitude_writes_a_picture_of_the_input_mode(run_installed, tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(RGB.astype(np.uint8), "RGB").save(src)
    done = run_installed(["apply", "sobel", src, tmp_path / "edges.png", "--combine", "magnitude"])
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "edges.png") as im:
        assert im.mode == "RGB"
        got = np.asarray(im)
    pixels = RGB.astype(np.uint8).astype(np.float64)
    expected = np.hypot(correlate(pixels, SOBEL_X), correlate(pixels, SOBEL_X.T))
    np.testing.assert_array_equal(got, np.clip(np.round(expected), 0, 255).astype(np.uint8))


def test_combine_in_bands_of_a_npy_file_equals_the_whole(run_cli, tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, RGB)
    whole, banded = tmp_path / "whole.npy", tmp_path / "banded.npy"
    assert run_cli(["apply", "scharr", src, whole, "--combine", "magnitude"]).exit_code == 0
    result = run_cli(["apply", "scharr", src, banded, "--combine", "magnitude", "--tile-rows", "4"])
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(np.load(banded), np.load(whole))


def test_combine_needs_a_bank(run_cli, tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    result = run_cli(["apply", "sobel-x", src, tmp_path / "o.npy", "--combine", "sum"])
    assert result.exit_code == 2
    assert "--combine sum needs a filter bank of two or more kernels" in result.stderr


# --------------------------------------------------------------------------
# log:, dog:, unsharp:


@pytest.mark.parametrize("sigma", [0.8, 1.5])
def test_log_is_zero_sum_and_matches_gaussian_laplace(sigma):
    k = get_kernel(f"log:{sigma}")
    radius = (k.shape[0] - 1) // 2
    assert k.shape == (2 * int(np.ceil(4 * sigma)) + 1,) * 2
    assert abs(k.values.sum()) < 1e-12
    ours = correlate(GRAY, k.values)
    theirs = ndimage.gaussian_laplace(GRAY.astype(np.float64), sigma, mode="constant", truncate=radius / sigma)
    # the one difference: the mean taken off to make the sum exactly 0
    assert np.max(np.abs(ours - theirs)) <= 0.005 * np.max(np.abs(theirs))


def test_dog_is_the_difference_of_two_gaussian_blurs():
    k = get_kernel("dog:1,2")
    assert k.shape == (13, 13)
    assert abs(k.values.sum()) < 1e-12
    blur = [ndimage.gaussian_filter(GRAY.astype(np.float64), s, mode="constant", truncate=6 / s) for s in (1, 2)]
    np.testing.assert_allclose(correlate(GRAY, k.values), blur[0] - blur[1], atol=1e-9)


@pytest.mark.parametrize("spec", ["dog:2,1", "dog:1", "log:0", "unsharp:1,0", "unsharp:1,1,1.5"])
def test_sized_forms_refuse_what_cannot_be_meant(spec):
    from kernelcli.errors import KernelError

    with pytest.raises(KernelError):
        get_kernel(spec)


def _unsharp_reference(x, sigma, amount, threshold, top=255.0):
    """ImageMagick's rule by hand (UnsharpMaskImage): out = x + amount * (x - blur)
    where 2 |x - blur| >= threshold * range, else x."""
    size = 2 * int(np.ceil(3 * sigma)) + 1
    r = np.arange(size) - size // 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    g2 = np.outer(g, g) / np.outer(g, g).sum()
    padded = np.pad(np.asarray(x, np.float64), size // 2)
    blur = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            blur[i, j] = (padded[i:i + size, j:j + size] * g2).sum()
    diff = x - blur
    return np.where(2 * np.abs(diff) >= threshold * top, x + amount * diff, x)


@pytest.mark.parametrize("threshold", [0, 0.1])
def test_unsharp_with_amount_and_threshold_matches_a_plain_loop(run_cli, tmp_path, threshold):
    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    result = run_cli(["apply", f"unsharp:1.2,1.5,{threshold}", src, tmp_path / "o.npy"])
    assert result.exit_code == 0, result.stderr
    got = np.load(tmp_path / "o.npy")
    expected = _unsharp_reference(GRAY.astype(np.float64), 1.2, 1.5, threshold)
    if threshold:
        kept = got == GRAY
        assert 0.05 < kept.mean() < 0.95  # the threshold keeps some inputs and sharpens the rest
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_unsharp_with_edge_padding_is_imagemagick_s_edge_replicating_blur(run_installed, tmp_path):
    """--pad-mode edge gives x + A (x - blur) with the blur replicating edge
    pixels (scipy's mode="nearest", as ImageMagick); zero padding brightens
    the edge of a flat picture, which edge padding leaves flat."""
    src = tmp_path / "in.npy"
    flat = np.full((9, 19), 200.0, np.float32)
    picture = np.vstack([GRAY, flat])
    np.save(src, picture)
    done = run_installed(["conv", "unsharp:1.2,1.5", src, tmp_path / "edge.npy", "--pad-mode", "edge"])
    assert done.returncode == 0, done.stderr
    x = picture.astype(np.float64)
    blur = ndimage.gaussian_filter(x, 1.2, mode="nearest", truncate=3.0)  # 9 taps, as 2*ceil(3*1.2)+1
    np.testing.assert_allclose(np.load(tmp_path / "edge.npy"), x + 1.5 * (x - blur), rtol=1e-5, atol=1e-3)
    np.save(src, flat)
    for mode in ("edge", "zero"):
        assert run_installed(["conv", "unsharp:1.2,1.5", src, tmp_path / f"{mode}.npy", "--pad-mode", mode]
                             ).returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "edge.npy"), flat, atol=1e-3)
    assert np.load(tmp_path / "zero.npy")[0].min() > 250  # the bright frame the docs warn of


def test_docs_tell_how_to_avoid_the_bright_frame_and_keep_one_sized_forms_table():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "kernels.md").read_text(encoding="utf-8")
    table = text[text.index("| form | kernel |"):].split("\n\n")[0]
    assert "| `sep:V1,V2,...` |" in table and "| `unsharp:RADIUS[,AMOUNT[,THRESHOLD]]` |" in table
    unsharp_row = next(line for line in table.splitlines() if line.startswith("| `unsharp:"))
    assert "--pad-mode edge" in unsharp_row and "THRESHOLD × range × AMOUNT / 2" in unsharp_row
    assert "edges.png --combine magnitude --pad-mode reflect" in text


def test_the_banks_table_in_docs_is_the_library_s():
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "kernels.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z]+)` \| `([a-z,-]+)` \|$", text, re.M))
    assert rows == {name: ",".join(kernels) for name, kernels in BANKS.items()}


def test_kernels_lists_the_banks_and_sized_forms(run_installed):
    done = run_installed(["kernels"])
    assert done.returncode == 0
    assert b"sobel = sobel-x,sobel-y" in done.stdout and b"log:SIGMA, dog:S1,S2" in done.stdout
    assert b"sep:V1,V2,... [scale:S]" in done.stdout


# --------------------------------------------------------------------------
# separable kernels: sep:MASK and rows:/cols: files


def _passes(x, across, down):
    """The 1-D mask ``across`` along every row, then ``down`` down every column (scipy, zero padding)."""
    x = np.asarray(x, np.float64)
    along = ndimage.correlate1d(x, np.asarray(across, np.float64), axis=1, mode="constant")
    return ndimage.correlate1d(along, np.asarray(down, np.float64), axis=0, mode="constant")


def test_sep_is_the_mask_along_rows_then_columns(run_installed, tmp_path):
    from kernelcli import engine

    k = get_kernel("sep:1,4,6,4,1 scale:1/16")
    np.testing.assert_array_equal(k.array, get_kernel("gaussian-5x5").array)
    square = (RNG.random((64, 64)) * 255).astype(np.float32)
    assert engine.method_for(k.array, square.shape) == "separable"
    src = tmp_path / "in.npy"
    np.save(src, square)
    done = run_installed(["apply", "sep:1,4,6,4,1 scale:1/16,sep:1,0,0,0,-1", src, tmp_path / "o.npy"])
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "o.npy")
    mask = np.array([1, 4, 6, 4, 1]) / 16
    np.testing.assert_allclose(got[..., 0], _passes(square, mask, mask), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got[..., 1], _passes(square, [1, 0, 0, 0, -1], [1, 0, 0, 0, -1]), rtol=1e-5, atol=1e-3)


def test_a_kernel_file_of_rows_and_cols_masks(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("# 7 across, 3 down\nscale: 1/256\nrows: 1 6 15 20 15 6 1\ncols: 1, 2, 1\n")
    k = get_kernel(str(path))
    assert k.shape == (3, 7)
    expected = np.array([[c * r for r in (1, 6, 15, 20, 15, 6, 1)] for c in (1, 2, 1)]) / 256
    np.testing.assert_allclose(k.array, expected, rtol=1e-7)
    np.testing.assert_allclose(correlate(GRAY, k.array), _passes(GRAY, [1, 6, 15, 20, 15, 6, 1], [1, 2, 1]) / 256,
                               rtol=1e-5, atol=1e-3)


def test_a_separable_file_takes_no_matrix_rows(tmp_path):
    from kernelcli.errors import KernelError

    path = tmp_path / "k.txt"
    path.write_text("rows: 1 2 1\n1 2 1\n")
    with pytest.raises(KernelError, match="has no matrix rows"):
        get_kernel(str(path))


# --------------------------------------------------------------------------
# --rotate: banks of turned kernels


def test_90_degree_turns_of_a_square_kernel_against_a_loop():
    from kernelcli.kernel_forms import turns

    k = RNG.integers(-9, 9, (4, 4)).astype(np.float64)
    got = turns(get_kernel(k), 90)
    expected = [k]
    for _ in range(3):  # clockwise: row i becomes column n-1-i
        prev, nxt = expected[-1], np.empty_like(k)
        for i in range(4):
            for j in range(4):
                nxt[j, 3 - i] = prev[i, j]
        expected.append(nxt)
    for kernel, want in zip(got, expected):
        np.testing.assert_array_equal(kernel.values, want)
    assert [kernel.name for kernel in got] == ["array", "array@90", "array@180", "array@270"]
    turned = turns(get_kernel("3x3+0+0: 1,2,3 4,5,6 7,8,9"), 90, 2)[1]  # the origin turns with its cell
    assert turned.origin == (0, 2) and turned.values[0, 2] == 1


def test_rotate_45_makes_the_compass_bank(run_installed, tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    done = run_installed(["conv", "kirsch-n", src, tmp_path / "o.npy", "--rotate", "45", "--rotations", "3"])
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "o.npy")
    for step in range(3):
        np.testing.assert_allclose(got[..., step], correlate(GRAY, turned(KIRSCH_N, step)), rtol=1e-6, atol=1e-3)
    assert read_image(str(tmp_path / "o.npy")).labels == ["kirsch-n", "kirsch-n@45", "kirsch-n@90"]


@pytest.mark.parametrize("args, message", [
    (["box:5", "--rotate", "45"], "45-degree turns move the outer ring of a 3x3 kernel"),
    (["1,2;3,4;5,6", "--rotate", "90"], "90-degree turns need a square kernel"),
    (["edge", "--rotations", "2"], "--rotations needs --rotate 45 or 90"),
    (["edge", "--rotate", "90", "--rotations", "5"], "give 1 to 4"),
])
def test_rotate_refusals(run_cli, args, message):
    result = run_cli(["conv", args[0], "-", "-", *args[1:]])
    assert result.exit_code == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("args, message", [
    (["conv", "3x3+0+0: 1,0,0 0,0,0 0,0,0", "--rotate", "90"], "the kernels of a bank have different origins"),
    (["conv", "edge", "--rotate", "90", "--rotations", "6"], "6 turns of 90 degrees: give 1 to 4"),
    (["conv", "sep:"], "write sep:V1,V2,... (a 1-D mask), optionally followed by scale:S"),
])
def test_kernel_option_errors_are_one_line_and_in_the_errors_page(run_cli, tmp_path, args, message):
    from pathlib import Path

    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    result = run_cli([*args, src, tmp_path / "o.npy"])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.npy").exists()
    assert message in (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")


def test_sobel_magnitude_with_reflect_padding_has_no_frame_and_matches_scipy(run_installed, tmp_path):
    """The edge map the docs suggest for photos: --pad-mode reflect gives
    scipy's Sobel magnitude (mode="reflect"), with no frame; zero padding
    puts a bright frame round a flat picture."""
    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    done = run_installed(["conv", "sobel", src, tmp_path / "r.npy", "--combine", "magnitude", "--pad-mode", "reflect"])
    assert done.returncode == 0, done.stderr
    x = GRAY.astype(np.float64)
    gx = ndimage.correlate(x, SOBEL_X, mode="reflect")
    gy = ndimage.correlate(x, SOBEL_X.T, mode="reflect")
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), np.hypot(gx, gy), rtol=1e-5, atol=1e-3)
    np.save(src, np.full((6, 7), 100.0, np.float32))
    for mode in ("reflect", "zero"):
        assert run_installed(["conv", "sobel", src, tmp_path / f"{mode}.npy", "--combine", "magnitude",
                              "--pad-mode", mode]).returncode == 0
    assert np.abs(np.load(tmp_path / "reflect.npy")).max() < 1e-3
    assert np.load(tmp_path / "zero.npy")[0].min() > 100  # the frame
