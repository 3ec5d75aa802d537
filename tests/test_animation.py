"""``kernelcli explain --animate``: the frames are read back and checked
against the engine-independent reference (the window's place, the feature
map's colours) and against the frame count the steps call for."""

import numpy as np
import pytest
from PIL import Image, ImageSequence

from kernelcli import explain
from kernelcli.figures import animation
from kernelcli.io import colormaps
from kernelcli.errors import UsageError
from kernelcli.kernels import get_kernel

from .reference import correlate_ref, pool_ref

FILTER = "1,0,1;0,1,0;1,0,1"
IMAGE = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], np.float32)


def _frames(path):
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)], im.format


def _cell(lay, x, i, j):
    """A point inside cell (i, j) of the grid at ``x``, clear of the numbers."""
    return lay.top + i * lay.cell + 3, x + j * lay.cell + 3


def test_walkthrough_is_the_reference_convolution(tmp_path):
    np.save(tmp_path / "x.npy", IMAGE)
    walk = explain.walkthrough(get_kernel(FILTER), str(tmp_path / "x.npy"), relu=True, pool="max")
    expected = correlate_ref(IMAGE, np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]]))
    assert walk.feature.tolist() == expected.tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert np.array_equal(walk.pool.result, pool_ref(expected, "max", (2, 2)))


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_animation_frames_through_the_command(run_installed, tmp_path, suffix):
    np.save(tmp_path / "x.npy", IMAGE)
    out = tmp_path / f"conv{suffix}"
    done = run_installed(["explain", FILTER, tmp_path / "x.npy", "--animate", out])
    assert done.returncode == 0, done.stderr
    frames, fmt = _frames(out)
    assert fmt == {".gif": "GIF", ".png": "PNG", ".webp": "WEBP"}[suffix]
    assert len(frames) == 1 + 9 + 1  # the start, one per output position, the whole map
    assert len({f.shape for f in frames}) == 1 and frames[0].shape[1] >= 600  # legible at its size
    assert all(f.std() > 20 for f in frames)  # none blank
    walk = explain.walkthrough(get_kernel(FILTER), str(tmp_path / "x.npy"))
    lay = animation._Layout(walk)
    lut_span = (-4.0, 4.0)
    for n, frame in enumerate(frames[1:10]):
        oy, ox = divmod(n, 3)
        for i in range(5):
            for j in range(5):
                inside = oy <= i < oy + 3 and ox <= j < ox + 3
                px = frame[_cell(lay, lay.xa, i, j)]
                assert (np.abs(px.astype(int) - animation.WINDOW_FILL).max() <= 6) == inside, (n, i, j)
    last = frames[10]
    expected = colormaps.colorize(walk.feature, "diverging", lut_span)
    for i in range(3):
        for j in range(3):
            assert np.abs(last[_cell(lay, lay.xc, i, j)].astype(int) - expected[i, j]).max() <= 6


def test_relu_and_pool_steps_add_frames(tmp_path):
    x = np.arange(36, dtype=np.float32).reshape(6, 6) % 7 - 3
    np.save(tmp_path / "x.npy", x)
    walk = explain.walkthrough(get_kernel("sobel-x"), str(tmp_path / "x.npy"), padding="same", relu=True,
                               pool="avg")
    frames = animation.frames(walk)
    assert len(frames) == 1 + 36 + 1 + 1 + (9 + 1)
    assert frames[-1][1] == animation.LAST_MS and frames[1][1] == animation.STEP_MS
    lay = animation._Layout(walk)
    relu_frame = np.asarray(frames[38][0]())
    rectified = np.maximum(walk.feature, 0)
    span = (-float(np.abs(walk.feature).max()), float(np.abs(walk.feature).max()))
    expected = colormaps.colorize(rectified, "diverging", span)
    for (i, j), _ in np.ndenumerate(rectified):
        assert np.abs(relu_frame[_cell(lay, lay.xc, i, j)].astype(int) - expected[i, j]).max() == 0


def test_too_many_frames_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((16, 16), np.float32))
    walk = explain.walkthrough(get_kernel("box"), str(tmp_path / "x.npy"), padding="full")  # 18x18 positions
    assert len(animation.frames(walk)) == 2 + 18 * 18
    walk = explain.walkthrough(get_kernel("1"), str(tmp_path / "x.npy"), padding=(2, 2), relu=True,
                               pool="max", pool_stride=(1, 1))  # 20x20 positions, 19x19 windows
    with pytest.raises(UsageError, match="is more than 400"):
        animation.frames(walk)


def test_animate_refuses_other_formats(run_installed, tmp_path):
    done = run_installed(["explain", "box", "1,2;3,4", "--padding", "1", "--animate", tmp_path / "a.jpg"])
    assert done.returncode == 2 and b"animation is written to a .gif" in done.stderr
    assert not (tmp_path / "a.jpg").exists()


def test_border_value_and_origin_are_drawn(run_installed, tmp_path):
    np.save(tmp_path / "x.npy", IMAGE)
    out = tmp_path / "origin.png"
    args = ["explain", FILTER, tmp_path / "x.npy", "--padding", "same", "--border-value", "9", "--origin", "0,0"]
    done = run_installed(args + ["--animate", out])
    assert done.returncode == 0, done.stderr
    frames, _ = _frames(out)
    walk = explain.walkthrough(get_kernel(FILTER), str(tmp_path / "x.npy"), padding="same", cval=9.0,
                               origin=(0, 0))
    assert walk.padded[-1].tolist() == [9] * 7 and walk.feature[0, 4] == correlate_ref(walk.padded, np.array(
        [[1, 0, 1], [0, 1, 0], [1, 0, 1]]))[0, 4]
    title = animation._title(walk)
    assert "border value 9" in title and "origin 0,0" in title
    lay = animation._Layout(walk)

    def edge(frame, x, i, j):  # the top left corner of cell (i, j), where an outline is drawn
        return frame[lay.top + i * lay.cell + 1, x + j * lay.cell + 1].astype(int)

    for n, frame in enumerate(frames[1:1 + 25]):
        oy, ox = divmod(n, 5)
        assert np.abs(edge(frame, lay.xb, 0, 0) - animation.ORIGIN).max() <= 2  # the kernel's origin cell
        assert np.abs(edge(frame, lay.xa, oy, ox) - animation.ORIGIN).max() <= 2  # over the output pixel
        assert np.abs(edge(frame, lay.xb, 1, 1) - animation.ORIGIN).max() > 60  # not the centre
    plain = animation.frames(explain.walkthrough(get_kernel(FILTER), str(tmp_path / "x.npy"), padding="same"))
    centre = np.asarray(plain[1][0]())
    assert np.abs(edge(centre, lay.xb, 0, 0) - animation.ORIGIN).max() > 60  # no origin given: none marked
    assert "origin" not in animation._title(explain.walkthrough(get_kernel(FILTER), str(tmp_path / "x.npy")))


@pytest.mark.parametrize("kind, words", [("max", "the largest value"), ("avg", "the mean"), ("sum", "the sum")])
def test_last_pooling_frame_says_what_the_pooled_map_holds(kind, words):
    pool = animation.PoolStep(kind, (2, 2), (2, 2), pool_ref(np.arange(16.0).reshape(4, 4), kind, (2, 2)))
    assert animation.pool_summary(pool) == f"pooled map 2x2: {words} of each 2x2 window, stride 2,2"


@pytest.mark.parametrize("kernel, side, options", [
    ("curve-detector", 9, {"stride": (2, 2)}),  # a 2x2 map beside a 9x9 input: a label wider than its grid
    ("box", 2, {"padding": (1, 1), "relu": True, "pool": "sum", "pool_size": (1, 1)}),
])
def test_every_label_fits_its_panel_and_the_frame(tmp_path, kernel, side, options):
    from kernelcli.figures import draw

    np.save(tmp_path / "x.npy", np.arange(side * side, dtype=np.float32).reshape(side, side) % 3)
    walk = explain.walkthrough(get_kernel(kernel), str(tmp_path / "x.npy"), **options)
    lay = animation._Layout(walk)
    shape = "{0[0]}x{0[1]}".format
    panels = {lay.xa: [f"input, padded {shape(walk.padded.shape)}", f"feature map {shape(walk.feature.shape)}"],
              lay.xc: [f"feature map {shape(walk.feature.shape)}"]}
    if walk.pool is not None:
        panels[lay.xc] += [f"rectified map {shape(walk.rectified.shape)}",
                           f"pooled map {shape(walk.pool.result.shape)}"]
    for x, labels in panels.items():
        for label in labels:
            end = x + draw.text_width(label, animation.LABEL_SIZE)
            assert end <= lay.width - animation.PAD and (x != lay.xa or end < lay.xb), label
    assert np.asarray(animation.frames(walk)[-1][0]()).shape[1] == lay.width
