"""Activations beside ReLU (leaky, tanh, sigmoid): the engine against a plain
loop, the parameter forms, the ``activate`` command and ``--activation``."""

import io
from pathlib import Path

import numpy as np
import pytest

from kernelcli import engine, stages
from kernelcli.errors import UsageError
from kernelcli.io.picture import Picture

from .reference import activation_ref, correlate_ref, relu_ref

FORMS = [("relu", None), ("leaky", None), ("leaky", 0.2), ("tanh", None), ("tanh", 1 / 255),
         ("sigmoid", None), ("sigmoid", 0.05), ("tanh", -2.0)]


def _values(seed=3, shape=(7, 9)):
    return (np.random.default_rng(seed).standard_normal(shape) * 200).astype(np.float32)


@pytest.mark.parametrize("kind,param", FORMS)
def test_activate_matches_a_plain_loop(kind, param):
    x = _values()
    got = engine.activate(x, kind, param)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, activation_ref(x, kind, param), rtol=2e-6, atol=2e-7)


def test_relu_and_leaky_are_the_relu_function():
    x = _values(shape=(5, 6, 3))
    assert np.array_equal(engine.activate(x, "relu"), engine.relu(x))
    assert np.array_equal(engine.activate(x, "leaky", 0.3), engine.relu(x, 0.3))
    np.testing.assert_allclose(engine.activate(x, "leaky", 0.3), relu_ref(x, 0.3), rtol=1e-6)


def test_activate_saturates_without_overflow_and_keeps_nan():
    x = np.array([[-1e30, -100.0, 0.0, 100.0, 1e30, np.inf, -np.inf, np.nan]], np.float32)
    with np.errstate(all="raise"):  # no warning turned into an error
        sig = engine.activate(x, "sigmoid", 1000.0)
        th = engine.activate(x, "tanh")
    assert sig[0, :7].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
    assert th[0, :7].tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0, 1.0, -1.0]
    assert np.isnan(sig[0, 7]) and np.isnan(th[0, 7])


def test_activate_inplace_reuses_the_buffer():
    x = _values()
    expected = activation_ref(x, "tanh", 0.01)
    y = engine.activate(x, "tanh", 0.01, inplace=True)
    assert y is x
    np.testing.assert_allclose(x, expected, rtol=2e-6, atol=2e-7)


def test_activate_refuses_unknown_kinds():
    with pytest.raises(UsageError, match="activation must be one of"):
        engine.activate(np.zeros((2, 2), np.float32), "softplus")


@pytest.mark.parametrize("text,kind,param", [
    ("relu", "relu", None), ("LEAKY", "leaky", None), ("leaky:0.1", "leaky", 0.1),
    ("tanh:1/255", "tanh", 1 / 255), ("sigmoid:2", "sigmoid", 2.0), (" tanh ", "tanh", None),
])
def test_parse_activation(text, kind, param):
    assert stages.parse_activation(text) == stages.Activation(kind, param)


@pytest.mark.parametrize("text,message", [
    ("softmax", "unknown activation"), ("relu:2", "relu takes no parameter"),
    ("tanh:x", "must be a number or a fraction"), ("sigmoid:1/0", "must be a number or a fraction"),
    ("tanh:inf", "finite"),
])
def test_parse_activation_errors(text, message):
    with pytest.raises(UsageError, match=message):
        stages.parse_activation(text)


def test_activation_stage_leaves_alpha_alone():
    px = np.dstack([_values(shape=(4, 5)), np.full((4, 5), 200.0, np.float32)])
    out = stages.activation_stage(Picture(px, "LA"), stages.Activation("sigmoid", 0.01))
    assert np.array_equal(out.pixels[..., 1], px[..., 1])
    np.testing.assert_allclose(out.pixels[..., 0], activation_ref(px[..., 0], "sigmoid", 0.01), rtol=2e-6)


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


def test_activate_command_on_a_stream(run_installed, tmp_path):
    x = _values(seed=5, shape=(6, 8))
    src = tmp_path / "x.npy"
    np.save(src, x)
    done = run_installed(["activate", "tanh:1/255", src])
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(_npy(done.stdout), activation_ref(x, "tanh", 1 / 255), rtol=2e-6, atol=2e-7)
    piped = run_installed(["activate", "sigmoid:0.02"], input=src.read_bytes())
    assert piped.returncode == 0, piped.stderr
    np.testing.assert_allclose(_npy(piped.stdout), activation_ref(x, "sigmoid", 0.02), rtol=2e-6, atol=2e-7)


def test_apply_activation_is_conv_then_activate(run_installed, tmp_path, samples):
    src = samples / "gray.png"
    out = tmp_path / "a.npy"
    done = run_installed(["apply", "edge", src, out, "--activation", "tanh:1/255", "--pool", "max"])
    assert done.returncode == 0, done.stderr
    from PIL import Image

    gray = np.asarray(Image.open(src), dtype=np.float64)
    edge = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float64)
    conv = correlate_ref(gray, edge, pads=((1, 1), (1, 1)))
    expected = activation_ref(conv, "tanh", 1 / 255)
    h, w = expected.shape[0] // 2 * 2, expected.shape[1] // 2 * 2
    expected = expected[:h, :w].reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))
    np.testing.assert_allclose(np.load(out), expected, rtol=2e-6, atol=2e-6)
    conv_run = run_installed(["conv", "edge", src, "--activation", "tanh:1/255"])
    assert conv_run.returncode == 0, conv_run.stderr
    np.testing.assert_allclose(_npy(conv_run.stdout), activation_ref(conv, "tanh", 1 / 255), rtol=2e-6,
                               atol=2e-6)


def test_activation_relu_is_the_relu_flag(run_installed, tmp_path, samples):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run_installed(["apply", "sobel-x", samples / "gray.png", a, "--relu"]).returncode == 0
    assert run_installed(["apply", "sobel-x", samples / "gray.png", b, "--activation", "relu"]).returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_sigmoid_on_8bit_pixels_is_not_the_integer_path(run_installed, tmp_path, samples):
    """An integer kernel on 8-bit pixels into an 8-bit picture may run in int16;
    a sigmoid's values (0..1) must still be what is written."""
    out = tmp_path / "s.png"
    done = run_installed(["apply", "sharpen", samples / "gray.png", out, "--activation", "sigmoid"])
    assert done.returncode == 0, done.stderr
    from PIL import Image

    px = np.asarray(Image.open(out))
    assert px.max() == 1 and px.min() == 0


@pytest.mark.parametrize("args,message", [
    (["apply", "edge", "IN", "OUT", "--relu", "--activation", "tanh"], "two activations"),
    (["activate", "swish", "IN"], "unknown activation"),
    (["conv", "edge", "IN", "--activation", "relu:3"], "relu takes no parameter"),
])
def test_activation_usage_errors(run_installed, tmp_path, samples, args, message):
    args = [samples / "gray.png" if a == "IN" else tmp_path / "o.png" if a == "OUT" else a for a in args]
    done = run_installed(args)
    assert done.returncode == 2
    assert message in done.stderr.decode() and "Traceback" not in done.stderr.decode()


def test_small_values_into_a_picture_get_a_note(run_installed, tmp_path, samples):
    png = run_installed(["apply", "edge", samples / "gray.png", tmp_path / "t.png", "--activation", "tanh:1/255"])
    assert png.returncode == 0 and b"round to the pixels 0 and 1" in png.stderr
    for args in (["apply", "edge", samples / "gray.png", tmp_path / "t.npy", "--activation", "tanh:1/255"],
                 ["activate", "sigmoid", samples / "gray.png", tmp_path / "s.png", "--scaling", "stretch"],
                 ["activate", "tanh:1/255", samples / "gray.png", tmp_path / "f.tif", "--depth", "float"],
                 ["apply", "edge", samples / "gray.png", tmp_path / "f2.tif", "--activation", "tanh:1/255",
                  "--depth", "float"]):
        done = run_installed(args)
        assert done.returncode == 0 and b"round to the pixels" not in done.stderr


@pytest.mark.parametrize("args,message", [
    (["activate", "tanh:inf", "IN", "OUT"], "'tanh:inf': the parameter after ':' must be a finite number"),
    (["apply", "sobel-x", "IN", "OUT", "--colormap", "diverging", "--depth", "16"],
     "--colormap diverging draws 8-bit colours; --depth 16 goes without it"),
])
def test_figure_option_refusals_are_on_the_errors_page(run_installed, tmp_path, samples, args, message):
    args = [samples / "gray.png" if a == "IN" else tmp_path / "o.png" if a == "OUT" else a for a in args]
    done = run_installed(args)
    assert done.returncode == 2 and message in done.stderr.decode(), done.stderr
    assert not (tmp_path / "o.png").exists()
    assert message in (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
