"""``kernelcli kernels show --image``: kernels drawn as coloured cells. The
colour of every cell is checked against the diverging table by hand, and
the numbers' presence by the ink inside the cells."""

import numpy as np
import pytest
from PIL import Image

from kernelcli.figures import draw, kernel_sheet
from kernelcli.io import colormaps
from kernelcli.kernels import get_kernels


def _expected_cell(w, m):
    lut = colormaps.table("diverging")
    i = 127.5 if m == 0 else (w + m) * 255 / (2 * m)
    return lut[int(np.floor(i + 0.5))]


def _cells(sheet, found, cols):
    """Each panel's grid read back: the cell corners' colours (a corner just
    inside each cell, where no number is written)."""
    cell = min(kernel_sheet.cell_size(p[2].shape) for p in found)
    grid_w = max(p[2].shape[1] for p in found) * cell
    text_w = max(max(draw.text_width(t, 13), draw.text_width(s, 11)) for t, s, *_ in found)
    panel_w = max(grid_w, text_w, 110)
    label_h = 13 + 11 + 8
    panel_h = label_h + max(p[2].shape[0] for p in found) * cell + 6 + draw.scale_bar_height()
    for n, (_, _, values, weights) in enumerate(found):
        r, c = divmod(n, cols)
        x0 = kernel_sheet.GAP + c * (panel_w + kernel_sheet.GAP) + (panel_w - values.shape[1] * cell) // 2
        y0 = kernel_sheet.GAP + r * (panel_h + kernel_sheet.GAP) + label_h
        yield values, weights, cell, [[sheet[y0 + i * cell + 2, x0 + j * cell + 2] for j in range(values.shape[1])]
                                      for i in range(values.shape[0])], (x0, y0)


@pytest.mark.parametrize("spec", ["edge,sobel-x,sobel-y,sharpen", "curve-detector", "gaussian:2"])
def test_cells_are_coloured_by_weight(spec):
    kernels = get_kernels(spec)
    found = kernel_sheet.panels(kernels)
    sheet = kernel_sheet.kernel_sheet(kernels).pixels.astype(np.uint8)
    cols = min(4, len(found))
    for values, weights, cell, corners, _ in _cells(sheet, found, cols):
        m = float(np.abs(weights).max())
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                assert corners[i][j].tolist() == _expected_cell(float(weights[i, j]), m).tolist(), (spec, i, j)


def test_small_kernels_carry_their_numbers_large_ones_do_not():
    for spec, written in (("sobel-x", True), ("gaussian:3", False)):
        kernels = get_kernels(spec)
        found = kernel_sheet.panels(kernels)
        sheet = kernel_sheet.kernel_sheet(kernels).pixels.astype(np.uint8)
        values, weights, cell, corners, (x0, y0) = next(_cells(sheet, found, 1))
        # the centre of the middle cell: ink (the number) differs from the cell's colour
        ci, cj = values.shape[0] // 2, values.shape[1] // 2
        centre = sheet[y0 + ci * cell + cell // 4:y0 + (ci + 1) * cell - cell // 4,
                       x0 + cj * cell + cell // 4:x0 + (cj + 1) * cell - cell // 4]
        inked = (centre != corners[ci][cj]).any(axis=2).sum()
        assert (inked > 5) == written, spec


def test_depth_kernel_channels_are_panels(samples):
    found = kernel_sheet.panels(get_kernels(str(samples / "layer2-3x3x3.npy")))
    assert [p[0].split("[")[-1] for p in found] == ["0]", "1]", "2]"]


def test_kernels_show_image_through_the_command(run_installed, tmp_path):
    out = tmp_path / "bank.png"
    done = run_installed(["kernels", "show", "edge,sobel-x,sobel-y", "--image", out])
    assert done.returncode == 0, done.stderr
    img = Image.open(out)
    expected = kernel_sheet.kernel_sheet(get_kernels("edge,sobel-x,sobel-y")).pixels.astype(np.uint8)
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), expected)
    assert img.width > 3 * 110  # three panels side by side
    text = run_installed(["kernels", "show", "box,edge"])
    assert text.returncode == 0 and b"box (3x3)" in text.stdout and b"edge (3x3)" in text.stdout
    bad = run_installed(["kernels", "show", "edge", "--image", tmp_path / "k.npy"])
    assert bad.returncode == 2 and b"writes a picture" in bad.stderr
    bad = run_installed(["kernels", "show", "edge", "--columns", "2"])
    assert bad.returncode == 2 and b"--columns goes with --image" in bad.stderr


def test_symmetric_span_is_the_largest_finite_size():
    assert draw.symmetric_span(np.array([[-3.0, 2.0], [np.nan, np.inf]])) == (-3.0, 3.0)
    assert draw.symmetric_span(np.array([np.nan, -np.inf])) == (0.0, 0.0)
    assert draw.symmetric_span(np.array([[0.5, 0.25]], np.float32)) == (-0.5, 0.5)
