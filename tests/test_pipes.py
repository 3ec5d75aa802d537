"""kernelcli commands chained in real shell pipelines (bash -o pipefail)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from kernelcli import engine
from kernelcli.kernels import get_kernel
from tests.reference import correlate_ref, pool_ref, same_pads

KCLI = shutil.which("kernelcli") or "kernelcli"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def sh(script: str, cwd, stdin=None, timeout=180):
    """Run a bash pipeline; the installed kernelcli is called as $K."""
    env = dict(os.environ, K=KCLI)
    env.pop("KERNELCLI_DEBUG", None)
    return subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result


def test_conv_relu_pool_pipe_equals_apply_bit_for_bit(tmp_path, samples):
    photo = samples / "photo.jpg"
    ok(sh(f'"$K" conv edge {photo} | "$K" relu | "$K" pool max > piped.npy', tmp_path))
    ok(sh(f'"$K" apply edge {photo} applied.npy --relu --pool max', tmp_path))
    piped, applied = np.load(tmp_path / "piped.npy"), np.load(tmp_path / "applied.npy")
    assert piped.dtype == np.float32 and piped.shape == (150, 225, 3)
    assert piped.tobytes() == applied.tobytes()


@pytest.mark.parametrize("name", ["rgba.png", "gray16.png", "gray.png"])
def test_pipe_ending_in_png_gives_the_same_picture_as_apply(tmp_path, samples, name):
    src = samples / name
    ok(sh(f'"$K" conv sobel-x {src} | "$K" relu | "$K" pool avg - piped.png', tmp_path))
    ok(sh(f'"$K" conv sobel-x {src} | "$K" relu | "$K" pool avg --format png > piped2.png', tmp_path))
    ok(sh(f'"$K" apply sobel-x {src} applied.png --relu --pool avg', tmp_path))
    a = Image.open(tmp_path / "applied.png")
    for other in ("piped.png", "piped2.png"):
        b = Image.open(tmp_path / other)
        assert b.mode == a.mode == Image.open(src).mode
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_two_layer_lenet_style_chain(tmp_path, samples):
    """conv bank -> relu -> pool -> conv with a depth kernel -> relu -> pool."""
    gray = samples / "gray.png"
    layer2 = samples / "layer2-3x3x3.npy"
    ok(sh(f'"$K" conv edge,sobel-x,sobel-y {gray} | "$K" relu | "$K" pool max '
          f'| "$K" conv {layer2} | "$K" relu | "$K" pool max > out.npy', tmp_path))
    got = np.load(tmp_path / "out.npy")
    # The same two layers from the plain-loop reference.
    x = np.asarray(Image.open(gray), dtype=np.float64)
    maps = []
    for name in ("edge", "sobel-x", "sobel-y"):
        k = get_kernel(name).array.astype(np.float64)
        maps.append(correlate_ref(x, k, pads=same_pads(k.shape)))
    layer1 = pool_ref(np.maximum(np.stack(maps, axis=-1), 0), "max", (2, 2), (2, 2))
    k2 = np.load(layer2).astype(np.float64)
    summed = sum(correlate_ref(layer1[..., c], k2[..., c], pads=same_pads(k2.shape[:2])) for c in range(3))
    want = pool_ref(np.maximum(summed, 0), "max", (2, 2), (2, 2))
    assert got.shape == want.shape == (42, 64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_filter_bank_channel_order_and_labels(tmp_path, samples):
    photo = samples / "photo.png"
    ok(sh(f'"$K" conv edge,sharpen,box {photo} > bank.npy', tmp_path))
    bank = np.load(tmp_path / "bank.npy")
    assert bank.shape == (300, 451, 9)
    x = np.asarray(Image.open(photo), dtype=np.float32)
    for i, name in enumerate(("edge", "sharpen", "box")):
        for c in range(3):  # kernel-major: k1:R k1:G k1:B k2:R ...
            np.testing.assert_array_equal(bank[..., 3 * i + c], engine.convolve(x[..., c], name))
    ok(sh('"$K" montage bank.npy sheet.png', tmp_path))
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.mode == "L" and sheet.width > 3 * 451


def test_negative_values_survive_the_pipe(tmp_path, samples):
    ok(sh(f'"$K" conv edge {samples / "gray.png"} | "$K" pool avg > out.npy', tmp_path))
    out = np.load(tmp_path / "out.npy")
    assert out.min() < -50 and out.max() > 50  # an 8-bit stream would have clipped these
    ok(sh(f'"$K" conv edge {samples / "gray.png"} | "$K" relu > relu.npy', tmp_path))
    assert np.load(tmp_path / "relu.npy").min() == 0


def test_leaky_relu(tmp_path, samples):
    ok(sh(f'"$K" conv edge {samples / "gray.png"} > a.npy && "$K" relu --leaky 0.1 a.npy b.npy', tmp_path))
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_allclose(b, np.where(a >= 0, a, a * np.float32(0.1)))


def test_closed_downstream_pipe_ends_quietly(tmp_path, samples):
    r = sh(f'"$K" conv box:9 {samples / "photo.png"} | head -c 100 > /dev/null', tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""


@pytest.mark.parametrize("stage", ["relu", "pool max", "conv box:3"])
def test_closed_downstream_pipe_ends_a_streaming_stage_quietly(tmp_path, stage):
    # a stage that writes band by band meets the closed pipe part way
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(0).normal(0, 50, (600, 500, 3)).astype(np.float32))
    r = sh(f'"$K" {stage} {big} | head -c 100 > /dev/null', tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""


def test_garbage_and_nothing_on_stdin_are_clear_errors(tmp_path):
    r = sh('head -c 3000 /dev/urandom | "$K" relu > out.npy', tmp_path)
    assert r.returncode == 1
    assert b"kernelcli: error:" in r.stderr and b"<stdin>" in r.stderr and b"Traceback" not in r.stderr
    r = sh('"$K" relu < /dev/null > out.npy', tmp_path)
    assert r.returncode == 1 and b"empty input" in r.stderr


def test_binary_is_never_written_to_a_terminal(tmp_path, samples):
    pty = pytest.importorskip("pty")
    import select

    pid, fd = pty.fork()
    if pid == 0:  # child: stdout is the pty
        os.execvp(KCLI, [KCLI, "conv", "edge", str(samples / "gray.png")])
    output = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert b"terminal" in output and b"NUMPY" not in output


def test_stream_reads_images_by_content_not_name(tmp_path, samples):
    png = (samples / "gray.png").read_bytes()
    r = ok(sh('"$K" conv identity | "$K" relu --format png', tmp_path, stdin=png))
    assert r.stdout.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.stdout))), np.asarray(Image.open(samples / "gray.png")))
