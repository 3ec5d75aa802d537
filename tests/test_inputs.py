"""Inputs that are not plain files, or not what they claim, against the installed ``kernelcli``.

Every input is read once (pipes, FIFOs and ``<(...)`` work wherever a path
does), stdin is judged by its first bytes and read within a bound, only
raster formats reach Pillow, and kernel files are read once and bounded too.
Commands that could exhaust memory run under an address-space limit and a
timeout, so a regression fails instead of taking the machine down.
"""

from __future__ import annotations

import io
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLES = Path(__file__).parent.parent / "samples"
PHOTO = SAMPLES / "photo.png"
EXAMPLE = SAMPLES / "example-5x5.npy"
#: Address space for a command (Numba and LLVM need about 1-2 GiB of it).
MEMORY_LIMIT = 4 * 2**30
#: Seconds a command may take here before it counts as hanging.
TIMEOUT = 120
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\nshowpage\n"

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _command() -> list[str]:
    exe = shutil.which("kernelcli")
    return [exe] if exe else [sys.executable, "-m", "kernelcli"]


def _env() -> dict:
    env = dict(os.environ)
    env.pop("KERNELCLI_DEBUG", None)
    return env


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(args, stdin=subprocess.DEVNULL, input=None, cwd=None):
    """The installed command, under the memory limit and the timeout."""
    kwargs = {"input": input} if input is not None else {"stdin": stdin}
    return subprocess.run(_command() + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=_env(), cwd=cwd, timeout=TIMEOUT, preexec_fn=_limit_memory, **kwargs)


def shell(script: str, cwd=None):
    """A bash script (the installed command is ``$K``), under the memory limit
    and the timeout; on the timeout, the script's whole process group is killed."""
    env = dict(_env(), K=" ".join(shlex.quote(c) for c in _command()))
    proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, preexec_fn=_limit_memory,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def error_of(proc, status: int) -> str:
    """The one-line error of a failed command (checked: status, one line, no traceback)."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == status, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kernelcli: error: "), err
    return lines[0]


def succeeded(proc) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


class Feeder:
    """Writes ``data`` into a FIFO from a thread (opening it waits for the reader)."""

    def __init__(self, fifo: Path, data: bytes):
        self.fifo, self.data, self.error = fifo, data, None
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self):
        try:
            with open(self.fifo, "wb") as f:
                f.write(self.data)
        except BrokenPipeError:  # the reader stopped early: its exit status tells
            pass
        except OSError as e:
            self.error = e

    def finish(self):
        if self.thread.is_alive():  # the command never opened the FIFO: unblock the thread
            try:
                fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        self.thread.join(10)


def fifo_with(tmp_path: Path, name: str, data: bytes) -> tuple[Path, Feeder]:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    return fifo, Feeder(fifo, data)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# --------------------------------------------------------------------------
# stdin: judged by its first bytes, read within a bound


@pytest.mark.parametrize("source", [
    "$K relu - o.npy < /dev/zero",
    "head -c 1000000000 /dev/zero | $K relu - o.npy",
    "yes | $K apply sharpen - o.png",
    "yes | $K conv box - o.npy",
])
def test_endless_garbage_on_stdin_is_refused_at_once(tmp_path, source):
    proc = shell(source + '; statuses=("${PIPESTATUS[@]}"); echo "${statuses[0]}"; exit "${statuses[-1]}"',
                 cwd=tmp_path)
    line = error_of(proc, 1)
    assert "<stdin>" in line and "not a recognised image or .npy file" in line
    assert os.listdir(tmp_path) == []
    if source.startswith("head"):  # it could not write its 1 GB: the command stopped reading at once (SIGPIPE)
        assert proc.stdout.split() == [str(128 + signal.SIGPIPE).encode()]


@pytest.mark.parametrize("limit, words", [
    ("--max-pixels 1000", ["16,785,216 bytes", "1,000 pixels", "--max-pixels"]),
    ("", ["1,448,432,976 bytes", "178,956,970 pixels", "--max-pixels"]),
])
def test_endless_stream_after_an_image_signature_stops_at_a_bound_from_max_pixels(tmp_path, limit, words):
    proc = shell(rf"(printf '\x89PNG\r\n\x1a\n'; cat /dev/zero) | $K relu {limit} - o.npy", cwd=tmp_path)
    line = error_of(proc, 1)
    assert "<stdin>" in line and "stopped reading" in line
    for word in words:
        assert word in line
    assert os.listdir(tmp_path) == []


def _png_up_to_its_data(size: tuple, mode: str = "L") -> bytes:
    """A PNG's signature and chunks up to the start of its pixel data."""
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    data = buf.getvalue()
    return data[:data.index(b"IDAT") + 4]


@pytest.mark.parametrize("size, words", [
    ((64, 64), ["stopped reading after 16,842,752 bytes", "its 64x64 image"]),
    ((20000, 20000), ["image claims 20000x20000 = 400,000,000 pixels", "--max-pixels"]),
])
def test_endless_stream_after_an_image_header_stops_at_the_size_it_declares(tmp_path, size, words):
    (tmp_path / "head.png").write_bytes(_png_up_to_its_data(size, "L" if size[0] < 100 else "1"))
    proc = shell("(cat head.png; cat /dev/zero) | $K relu - o.npy", cwd=tmp_path)
    line = error_of(proc, 1)
    assert "<stdin>" in line
    for word in words:
        assert word in line
    assert os.listdir(tmp_path) == ["head.png"]


def test_pictures_on_stdin_are_read_whole(tmp_path):
    # more than the first look at a header takes: a 1600x1200 noise PNG of about 5.8 MB
    noise = np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png", compress_level=0)
    assert (tmp_path / "noise.png").stat().st_size > 4 << 20
    with open(tmp_path / "noise.png", "rb") as f:
        succeeded(run(["apply", "identity", "-", tmp_path / "o.png"], stdin=f))
    with Image.open(tmp_path / "o.png") as im:
        np.testing.assert_array_equal(np.asarray(im), noise)


def test_npy_on_stdin_is_read_to_its_declared_size_and_no_further(tmp_path):
    # a 20x30 array, then endless zeros: the header says where the data ends
    arr = np.arange(600, dtype=np.float32).reshape(20, 30) - 300
    head = tmp_path / "head.npy"
    head.write_bytes(npy_bytes(arr))
    proc = shell(f"(cat head.npy; cat /dev/zero) | $K relu - o.npy", cwd=tmp_path)
    succeeded(proc)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.maximum(arr, 0))


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_reading_an_endless_stdin_stops_at_a_signal(tmp_path, sig, status):
    proc = subprocess.Popen(_command() + ["apply", "sharpen", "-", str(tmp_path / "o.png")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), preexec_fn=_limit_memory)
    written = 0
    try:
        proc.stdin.write(b"\x89PNG\r\n\x1a\n")
        block = bytes(1 << 16)
        # More than a pipe holds has gone in: the command is reading, its handlers are set.
        while written < 4 << 20:
            proc.stdin.write(block)
            written += len(block)
        proc.send_signal(sig)
        try:
            while True:  # keep it busy reading until it stops
                proc.stdin.write(block)
        except (BrokenPipeError, OSError):
            pass
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = err.decode(errors="replace")
    assert proc.returncode == status, err
    assert "Traceback" not in err
    if sig == signal.SIGINT:
        assert "interrupted" in err
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# FIFOs and process substitution: read once, wherever a path works


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict:
    """Outputs of the same commands on regular files."""
    folder = tmp_path_factory.mktemp("expected")
    stack = folder / "stack.npy"
    results = {}
    for key, args in [("apply", ["apply", "sharpen", PHOTO, folder / "apply.png"]),
                      ("conv", ["conv", "edge", PHOTO, folder / "conv.npy"]),
                      ("relu", ["relu", EXAMPLE, folder / "relu.npy"]),
                      ("pool", ["pool", "max", EXAMPLE, folder / "pool.npy"]),
                      ("stack", ["conv", "edge,box", PHOTO, stack]),
                      ("montage", ["montage", stack, folder / "montage.png"])]:
        succeeded(run(args))
    for name in ("apply.png", "conv.npy", "relu.npy", "pool.npy", "montage.png"):
        results[name] = (folder / name).read_bytes()
    results["stack"] = stack.read_bytes()
    return results


@pytest.mark.parametrize("command, source, output", [
    (["apply", "sharpen"], "photo", "apply.png"),
    (["conv", "edge"], "photo", "conv.npy"),
    (["relu"], "example", "relu.npy"),
    (["pool", "max"], "example", "pool.npy"),
    (["montage"], "stack", "montage.png"),
])
def test_fifo_input_is_read_once(tmp_path, expected, command, source, output):
    data = {"photo": PHOTO.read_bytes(), "example": EXAMPLE.read_bytes(), "stack": expected["stack"]}[source]
    fifo, feeder = fifo_with(tmp_path, "in.png", data)
    try:
        proc = run(command + [fifo, tmp_path / output])
    finally:
        feeder.finish()
    succeeded(proc)
    assert (tmp_path / output).read_bytes() == expected[output]


def test_fifo_input_for_explain(tmp_path):
    fifo, feeder = fifo_with(tmp_path, "small.npy", EXAMPLE.read_bytes())
    try:
        proc = run(["explain", "box", fifo])
    finally:
        feeder.finish()
    succeeded(proc)
    assert proc.stdout == run(["explain", "box", EXAMPLE]).stdout


@pytest.mark.parametrize("command, source, output", [
    ("apply sharpen", PHOTO, "apply.png"),
    ("conv edge", PHOTO, "conv.npy"),
    ("relu", EXAMPLE, "relu.npy"),
    ("pool max", EXAMPLE, "pool.npy"),
])
def test_process_substitution_input(tmp_path, expected, command, source, output):
    proc = shell(f"$K {command} <(cat {shlex.quote(str(source))}) {output}", cwd=tmp_path)
    succeeded(proc)
    assert (tmp_path / output).read_bytes() == expected[output]


def test_folder_run_skips_fifos_and_sockets_with_a_note(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(PHOTO, src / "a.png")
    os.mkfifo(src / "b.png")  # nobody ever writes to it: reading it would wait forever
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(src / "c.png"))
    except OSError:  # a path too long for a socket address
        sock.close()
        sock = None
    try:
        proc = run(["apply", "sharpen", src, out, "--jobs", "1"])
    finally:
        if sock is not None:
            sock.close()
    err = succeeded(proc)
    assert f"{src / 'b.png'}: skipped, a FIFO, not a regular file" in err
    if sock is not None:
        assert f"{src / 'c.png'}: skipped, a socket, not a regular file" in err
    assert "1 done" in err
    assert sorted(os.listdir(out)) == ["a.png"]


# --------------------------------------------------------------------------
# raster formats only: EPS, PostScript and PDF never reach an interpreter


@pytest.mark.parametrize("name, data", [
    ("loop.png", EPS), ("loop.eps", EPS),
    ("dos.eps", b"\xc5\xd0\xd3\xc6" + bytes(26) + EPS),  # DOS EPS binary header
    ("doc.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n"),
])
def test_documents_are_refused_by_name_not_rendered(tmp_path, name, data):
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "o" / "out.png"
    out.parent.mkdir()
    line = error_of(run(["apply", "sharpen", src, out]), 1)
    assert name in line
    assert ("EPS" if "eps" in name or data is EPS else "PDF") in line
    assert "not a raster image" in line
    assert "Ghostscript" not in line  # refused by kernelcli, not by a missing interpreter
    assert os.listdir(out.parent) == []
    line = error_of(run(["relu", "-", "-"], input=data), 1)
    assert "<stdin>" in line and "not a raster image" in line


def test_eps_in_a_folder_fails_alone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(PHOTO, src / "a.png")
    (src / "loop.png").write_bytes(EPS)
    proc = run(["apply", "sharpen", src, out, "--jobs", "1"])
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err
    assert "loop.png" in err and "EPS" in err and "Ghostscript" not in err
    assert "1 done" in err and "1 failed" in err
    assert sorted(os.listdir(out)) == ["a.png"]


def test_pillow_is_given_an_allow_list_of_raster_decoders(monkeypatch):
    from PIL import Image as PILImage

    from kernelcli.io.decode import RASTER_FORMATS
    from kernelcli.io.inputs import read_image

    assert not {"EPS", "PS", "PDF"} & set(RASTER_FORMATS)
    seen = []
    real_open = PILImage.open

    def spy(fp, mode="r", formats=None):
        seen.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(PILImage, "open", spy)
    buf = io.BytesIO()
    Image.new("L", (4, 3), 7).save(buf, "GIF")
    assert read_image(buf.getvalue()).pixels.shape[:2] == (3, 4)
    assert seen == [RASTER_FORMATS]


# --------------------------------------------------------------------------
# kernel files


def test_kernel_file_with_a_byte_order_mark(tmp_path):
    plain, marked = tmp_path / "k.txt", tmp_path / "bom.txt"
    plain.write_text("0 -1 0\n-1 5 -1\n0 -1 0\n")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    succeeded(run(["apply", plain, PHOTO, tmp_path / "a.png"]))
    succeeded(run(["apply", marked, PHOTO, tmp_path / "b.png"]))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_kernel_file_from_a_fifo_and_from_process_substitution(tmp_path):
    text = b"0 -1 0\n-1 5 -1\n0 -1 0\n"
    succeeded(run(["apply", "sharpen", PHOTO, tmp_path / "named.png"]))
    fifo, feeder = fifo_with(tmp_path, "k.txt", text)
    try:
        proc = run(["apply", fifo, PHOTO, tmp_path / "fifo.png"])
    finally:
        feeder.finish()
    succeeded(proc)
    succeeded(shell(f"$K apply <(printf '0 -1 0\\n-1 5 -1\\n0 -1 0\\n') {shlex.quote(str(PHOTO))} subst.png",
                    cwd=tmp_path))
    named = (tmp_path / "named.png").read_bytes()
    assert (tmp_path / "fifo.png").read_bytes() == named
    assert (tmp_path / "subst.png").read_bytes() == named


def test_endless_kernel_file_is_refused(tmp_path):
    line = error_of(run(["apply", "/dev/zero", PHOTO, tmp_path / "o.png"]), 2)
    assert "/dev/zero" in line and "too large for a kernel file" in line
    assert os.listdir(tmp_path) == []


def test_folder_as_kernel_says_so(tmp_path):
    folder = tmp_path / "kernels"
    folder.mkdir()
    line = error_of(run(["apply", folder, PHOTO, tmp_path / "o.png"]), 2)
    assert f"{folder}: is a folder, not a kernel file" in line
    assert "unknown kernel" not in line


# --------------------------------------------------------------------------
# inline kernels that start with a minus sign


def test_negative_inline_kernel_as_the_table_prints_it(tmp_path):
    succeeded(run(["apply", "sobel-x", PHOTO, tmp_path / "named.png", "--offset", "128"]))
    succeeded(run(["apply", "-1,0,1;-2,0,2;-1,0,1", PHOTO, tmp_path / "inline.png", "--offset", "128"]))
    # an option's negative value stays the option's, before the kernel too
    succeeded(run(["apply", "--offset", "128", "-1,0,1;-2,0,2;-1,0,1", PHOTO, tmp_path / "first.png"]))
    named = (tmp_path / "named.png").read_bytes()
    assert (tmp_path / "inline.png").read_bytes() == named
    assert (tmp_path / "first.png").read_bytes() == named
    succeeded(run(["apply", "-1,0,1;-2,0,2;-1,0,1", PHOTO, tmp_path / "minus.png", "--offset", "-128"]))
    assert (tmp_path / "minus.png").read_bytes() != named


def test_negative_inline_kernel_in_every_command_that_takes_one(tmp_path):
    out = run(["kernels", "show", "-1,0,1;-2,0,2;-1,0,1"])
    succeeded(out)
    assert out.stdout.decode().splitlines()[1:] == ["-1  0  1", "-2  0  2", "-1  0  1"]
    succeeded(run(["conv", "-1 0 1", EXAMPLE, tmp_path / "c.npy"]))
    np.testing.assert_allclose(np.load(tmp_path / "c.npy").shape, (5, 5))
    out = run(["explain", "-1,0;0,1", "-1,2;3,4"])
    succeeded(out)
    assert "-1*-1 + 2*0 + 3*0 + 4*1 = 5" in out.stdout.decode()
    succeeded(run(["apply", "--", "-1,0,1;-2,0,2;-1,0,1", PHOTO, tmp_path / "dashes.png"]))


def test_malformed_negative_inline_kernel_gets_the_kernel_message(tmp_path):
    line = error_of(run(["apply", "-1,0,1;x", PHOTO, tmp_path / "o.png"]), 2)
    assert "'x' is not a number" in line
    assert "No such option" not in line
