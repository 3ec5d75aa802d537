"""The handwritten-digit sample: what it is, that its script redraws it, and
the README's two-layer pipeline on it against a plain loop."""

import io

import numpy as np
from PIL import Image

from .reference import correlate_ref, pool_ref


def test_the_digit_is_a_28x28_gray_mnist_like_picture(samples):
    im = Image.open(samples / "digit-8.png")
    assert im.size == (28, 28) and im.mode == "L"
    px = np.asarray(im)
    assert px.max() == 255 and (px[:2].max(), px[-2:].max(), px[:, :2].max(), px[:, -2:].max()) == (0, 0, 0, 0)
    assert 0.12 < (px > 128).mean() < 0.35  # strokes, not a blob or a speck


def test_the_script_redraws_it(samples, tmp_path):
    import runpy

    runpy.run_path(str(samples / "make_digit.py"), run_name="digit")["main"](["make_digit.py", str(tmp_path)])
    drawn = np.asarray(Image.open(tmp_path / "digit-8.png"), dtype=int)
    shipped = np.asarray(Image.open(samples / "digit-8.png"), dtype=int)
    assert np.abs(drawn - shipped).max() <= 2  # (resampling may round differently in another Pillow)


def test_two_layers_on_the_digit(run_installed, samples):
    first = run_installed(["apply", "edge,sobel-x,sobel-y", samples / "digit-8.png", "-", "--relu", "--pool", "max"])
    assert first.returncode == 0, first.stderr
    second = run_installed(["apply", samples / "layer2-3x3x3.npy", "-", "-", "--relu", "--pool", "max"],
                           input=first.stdout)
    assert second.returncode == 0, second.stderr
    got = np.load(io.BytesIO(second.stdout))
    x = np.asarray(Image.open(samples / "digit-8.png"), dtype=np.float64)
    bank = {"edge": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
            "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]}
    maps = [pool_ref(np.maximum(correlate_ref(x, np.array(k, float), pads=((1, 1), (1, 1))), 0), "max", (2, 2))
            for k in bank.values()]
    layer2 = np.load(samples / "layer2-3x3x3.npy").astype(np.float64)
    summed = sum(correlate_ref(m, layer2[..., c], pads=((1, 1), (1, 1))) for c, m in enumerate(maps))
    expected = pool_ref(np.maximum(summed, 0), "max", (2, 2))
    assert got.shape == (7, 7) and expected.max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
