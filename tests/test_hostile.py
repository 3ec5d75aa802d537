"""Hostile inputs, options, outputs and streams, against the installed ``kernelcli``.

Every case runs the real console script in its own process and checks what a
user sees: the exit status (1: the input could not be processed, 2: usage
error, 130: Ctrl-C), a one- or two-line ``kernelcli: error: ...`` on stderr
that names the problem and the file (and the line, for kernel files), never a
Python traceback, and no output file or ``.part`` temporary left behind.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

SAMPLES = Path(__file__).parent.parent / "samples"
EXAMPLE = SAMPLES / "example-5x5.npy"
PHOTO = SAMPLES / "photo.png"


def _command() -> list[str]:
    exe = shutil.which("kernelcli")
    return [exe] if exe else [sys.executable, "-m", "kernelcli"]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("KERNELCLI_DEBUG", None)
    env.update(extra)
    return env


# --------------------------------------------------------------------------
# helpers


def part_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".part"))


def stderr_text(proc) -> str:
    return proc.stderr.decode("utf-8", "replace")


def assert_error(proc, code: int, words=(), outputs=(), folders=()):
    """``proc`` failed with ``code`` and a short ``kernelcli: error:`` message
    containing every item of ``words`` (a string, or a tuple of alternatives,
    compared case-insensitively); none of ``outputs`` exists and no ``.part``
    file is left in ``folders`` (default: the outputs' folders)."""
    err = stderr_text(proc)
    assert proc.returncode == code, f"exit status {proc.returncode}, expected {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    # errors.py: anything that is not a KernelcliError is a bug
    assert "internal error" not in err, f"an unexpected exception escaped:\n{err}"
    low = err.lower()
    for word in words:
        options = (word,) if isinstance(word, str) else tuple(word)
        assert any(str(o).lower() in low for o in options), f"none of {options!r} in:\n{err}"
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, f"expected a one- or two-line message, got {len(lines)} lines:\n{err}"
    assert err.startswith("kernelcli: error:"), err
    for out in outputs:
        assert not Path(out).exists(), f"{out} was left behind"
    for folder in set(folders) | {Path(o).parent for o in outputs}:
        if Path(folder).is_dir():
            assert part_files(Path(folder)) == [], f".part files left in {folder}"


def assert_ok(proc, output: Path | None = None):
    err = stderr_text(proc)
    assert proc.returncode == 0, f"exit status {proc.returncode}; stderr:\n{err}"
    assert "error" not in err.lower(), err
    assert "Traceback" not in err, err
    if output is not None:
        assert output.is_file() and output.stat().st_size > 0
        assert part_files(output.parent) == []


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------
# image files


def test_empty_image_file(run_installed, tmp_path, out_dir):
    src = tmp_path / "empty.png"
    src.write_bytes(b"")
    out = out_dir / "out.png"
    proc = run_installed(["apply", "box", src, out])
    assert_error(proc, 1, ["empty", "empty.png"], [out])


def test_truncated_png(run_installed, tmp_path, out_dir):
    data = PHOTO.read_bytes()
    src = tmp_path / "half.png"
    src.write_bytes(data[: len(data) // 2])
    out = out_dir / "out.png"
    proc = run_installed(["apply", "box", src, out])
    assert_error(proc, 1, [("truncated", "cannot decode", "corrupt"), "half.png"], [out])


def test_scrambled_bytes_named_png(run_installed, tmp_path, out_dir):
    src = tmp_path / "noise.png"
    src.write_bytes(np.random.default_rng(7).bytes(4096))
    out = out_dir / "out.png"
    proc = run_installed(["apply", "box", src, out])
    assert_error(proc, 1, [("not a recognised", "not a recognized", "unknown format"), "noise.png"], [out])


def test_png_named_jpg_is_read_by_content(run_installed, tmp_path, out_dir):
    src = tmp_path / "really-a-png.jpg"
    shutil.copyfile(PHOTO, src)
    out = out_dir / "out.png"
    ref = out_dir / "ref.png"
    assert_ok(run_installed(["apply", "box", src, out]), out)
    assert_ok(run_installed(["apply", "box", PHOTO, ref]), ref)
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("mode", ["CMYK", "LAB"])
def test_converted_modes_say_so(run_installed, tmp_path, out_dir, mode):
    src = tmp_path / f"{mode.lower()}.tif"
    Image.new(mode, (8, 6)).save(src)
    out = out_dir / "out.png"
    proc = run_installed(["apply", "identity", src, out])
    assert_ok(proc, out)
    err = stderr_text(proc)
    assert "kernelcli: note:" in err and mode in err and "RGB" in err, err
    assert Image.open(out).mode == "RGB"


def test_signed_16_bit_tiff_with_negative_pixels_is_refused(run_installed, tmp_path, out_dir):
    # Recent Pillow has no I;16S / BGR;16 modes any more (Image.new refuses
    # them): a signed 16-bit TIFF (SampleFormat 2) is opened as 32-bit "I", and
    # negative pixels cannot be kept in kernelcli's unsigned 16-bit range.
    raw = np.array([[0, 1, 65535], [32768, 2, 3]], dtype=np.uint16)  # 65535 = -1 when signed
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[339] = 2  # SampleFormat: signed integer
    src = tmp_path / "signed16.tif"
    Image.fromarray(raw).save(src, tiffinfo=ifd)
    assert Image.open(src).mode == "I"
    out = out_dir / "out.png"
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, [("not supported", "unsupported"), "signed16.tif"], [out])


def test_decompression_bomb_is_refused_with_size(run_installed, tmp_path, out_dir):
    src = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(src)
    assert src.stat().st_size < 100_000
    out = out_dir / "out.png"
    start = time.monotonic()
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, ["20000x20000", "--max-pixels", "bomb.png"], [out])
    assert time.monotonic() - start < 20, "refused only after decoding?"


def test_max_pixels_refuses_and_accepts(run_installed, tmp_path, out_dir):
    src = tmp_path / "big1bit.png"
    Image.new("1", (3000, 3000)).save(src)
    out = out_dir / "out.png"
    proc = run_installed(["apply", "identity", src, out, "--max-pixels", "1000000"])
    assert_error(proc, 1, ["3000x3000", "--max-pixels", "big1bit.png"], [out])
    proc = run_installed(["apply", "identity", src, out, "--max-pixels", "10000000"])
    assert_ok(proc, out)
    assert "1-bit" in stderr_text(proc)
    assert Image.open(out).size == (3000, 3000)


def test_animated_gif_keeps_every_frame(run_installed, tmp_path, out_dir):
    frames = [Image.new("L", (16, 12), v) for v in (10, 100, 200)]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(src).n_frames == 3
    out = out_dir / "out.png"
    proc = run_installed(["apply", "identity", src, out])
    assert_ok(proc, out)
    with Image.open(out) as img:
        assert img.n_frames == 3
        values = []
        for i in range(3):
            img.seek(i)
            values.append(int(np.asarray(img.convert("L")).max()))
    assert values == [10, 100, 200]


def _multiframe(fmt: str) -> bytes:
    frames = [Image.new("L", (4, 4), v) for v in (1, 2, 3)]
    return png_bytes(frames[0], fmt, save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("fmt,cut", [("GIF", 0.5), ("TIFF", 0.5), ("TIFF", 0.35)])
def test_truncated_multiframe_image(run_installed, tmp_path, out_dir, fmt, cut):
    """Beyond the catalogue: a cut-off animated GIF / multi-page TIFF."""
    data = _multiframe(fmt)
    src = tmp_path / f"cut.{fmt.lower()}"
    src.write_bytes(data[: int(len(data) * cut)])
    out = out_dir / "out.png"
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, [src.name, ("truncated", "cannot decode", "damaged", "corrupt")], [out])


# --------------------------------------------------------------------------
# .npy files


class _Marker:
    """Unpickling this creates the marker file (via ``open(path, 'w')``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_npy_object_array_is_never_unpickled(run_installed, tmp_path, out_dir):
    marker = tmp_path / "UNPICKLED"
    arr = np.empty((2, 2), dtype=object)
    arr[...] = 1
    arr[0, 0] = _Marker(marker)
    src = tmp_path / "objects.npy"
    np.save(src, arr, allow_pickle=True)
    assert not marker.exists()
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, ["object", "objects.npy"], [out])
    assert not marker.exists(), "the .npy was unpickled"
    # stdin too
    proc = run_installed(["apply", "identity", "-", out], input=src.read_bytes())
    assert_error(proc, 1, ["object", "<stdin>"], [out])
    assert not marker.exists(), "the .npy was unpickled"


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5)], ids=["1-D", "4-D"])
def test_npy_wrong_dimensions(run_installed, tmp_path, out_dir, shape):
    src = tmp_path / "arr.npy"
    np.save(src, np.zeros(shape, dtype=np.float32))
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, ["shape", "arr.npy"], [out])


def test_npy_string_dtype(run_installed, tmp_path, out_dir):
    src = tmp_path / "words.npy"
    np.save(src, np.array([["a", "b"], ["c", "d"]]))
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, ["numeric", "words.npy"], [out])


def test_npy_nan_and_inf_are_processed_with_a_note(run_installed, tmp_path, out_dir):
    arr = np.ones((5, 5), dtype=np.float32)
    arr[0, 0] = np.nan
    arr[4, 4] = np.inf
    src = tmp_path / "holes.npy"
    np.save(src, arr)
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "identity", src, out])
    assert_ok(proc, out)
    err = stderr_text(proc)
    assert "kernelcli: note:" in err and "holes.npy" in err and "NaN" in err, err
    assert "propagate" in err or "become" in err, "the note should say what happens to them"
    got = np.load(out)
    assert np.isnan(got[0, 0]) and np.isinf(got[4, 4]) and got[2, 2] == 1
    # to a picture: they become 0, as the note says
    png = out_dir / "out.png"
    assert_ok(run_installed(["apply", "identity", src, png]), png)
    assert np.asarray(Image.open(png))[0, 0] == 0


def _npy_header(shape, descr="<f4") -> bytes:
    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npy_gigantic_header_is_refused_up_front(run_installed, tmp_path, out_dir):
    src = tmp_path / "liar.npy"
    src.write_bytes(_npy_header((100000, 100000)) + b"\0" * 64)
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "identity", src, out])
    # a .npy file's size is its claim: not the pixel limit, its length refuses it
    assert_error(proc, 1, ["truncated", "liar.npy"], [out])
    # a stream's claim is not backed by anything yet: the pixel limit holds it
    proc = run_installed(["apply", "identity", "-", out], input=src.read_bytes())
    assert_error(proc, 1, ["100000x100000", "--max-pixels", "stdin"], [out])
    # past the pixel limit, the memory check must refuse it (not the OOM killer)
    src.write_bytes(_npy_header((100000, 100000), "<f8") + b"\0" * 64)
    proc = run_installed(["apply", "identity", src, out, "--max-pixels", str(10**10)])
    assert_error(proc, 1, [("GiB", "truncated"), "liar.npy"], [out])


def test_npy_truncated(run_installed, tmp_path, out_dir):
    data = EXAMPLE.read_bytes()
    src = tmp_path / "cut.npy"
    src.write_bytes(data[:-20])
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "identity", src, out])
    assert_error(proc, 1, ["truncated", "cut.npy"], [out])


def test_npy_stream_with_malformed_metadata(run_installed, tmp_path, out_dir):
    """Beyond the catalogue: kernelcli's JSON trailer after the array, malformed."""
    from kernelcli.io.npy import META_MAGIC

    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 3), dtype=np.float32))
    out = out_dir / "out.npy"
    for trailer in (b'{"mode": []}', b"[" * 100_000, b'{"labels": {"a": 1}, "dpi": "x"}'):
        proc = run_installed(["relu", "-", out], input=buf.getvalue() + META_MAGIC + trailer)
        if proc.returncode == 0:  # ignoring bad metadata (with a note) is fine too
            assert out.is_file() and "Traceback" not in stderr_text(proc)
            out.unlink()
            continue
        assert_error(proc, 1, ["<stdin>", "metadata"], [out])


# --------------------------------------------------------------------------
# kernels


BAD_KERNEL_FILES = [
    ("empty", "", ["empty"]),
    ("comments-only", "# nothing here\n\n", ["empty"]),
    ("ragged", "1 2 3\n4 5\n", ["ragged", "line 2"]),
    ("word", "1 2 3\n4 five 6\n7 8 9\n", ["'five'", "line 2"]),
    ("nan", "1 2 3\n4 nan 6\n7 8 9\n", ["'nan'", "finite", "line 2"]),
    ("inf", "1 2 3\n4 5 6\n7 8 inf\n", ["'inf'", "finite", "line 3"]),
    # beyond the catalogue: values that overflow (as a fraction, as float32 weights, times the scale)
    ("overflowing-fraction", "1 2 3\n4 1e400/1 6\n7 8 9\n", ["line 2"]),
    ("float32-overflow", "0 0 0\n0 1e39 0\n0 0 0\n", ["line 2"]),
    ("scale-overflow", "scale: 1e300\n1 1 1\n1 1e300 1\n1 1 1\n", [("line 1", "scale", "line 3")]),
]


@pytest.mark.parametrize("name,text,words", BAD_KERNEL_FILES, ids=[c[0] for c in BAD_KERNEL_FILES])
def test_bad_kernel_file(run_installed, tmp_path, out_dir, name, text, words):
    kfile = tmp_path / "weights.txt"  # a neutral name: the words must come from the message
    kfile.write_text(text)
    out = out_dir / "out.npy"
    proc = run_installed(["apply", kfile, EXAMPLE, out])
    assert_error(proc, 2, ["weights.txt", *words], [out])


def test_kernel_file_with_huge_fraction_exponent_does_not_hang(tmp_path, out_dir):
    """``1e99999999/2`` makes Fraction build a 100-million-digit integer."""
    kfile = tmp_path / "slow.txt"
    kfile.write_text("1 1 1\n1 1e99999999/2 1\n1 1 1\n")
    out = out_dir / "out.npy"
    proc = subprocess.Popen(_command() + ["apply", str(kfile), str(EXAMPLE), str(out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env())
    try:
        stdout, stderr = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("kernelcli apply slow.txt ... still parsing the kernel after 10 s")
    assert_error(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), 2,
                 ["slow.txt", "line 2"], [out])


def test_npy_kernel_with_gigantic_header(run_installed, tmp_path, out_dir):
    kfile = tmp_path / "huge-kernel.npy"
    kfile.write_bytes(_npy_header((100000, 100000), "<f8") + b"\0" * 64)
    out = out_dir / "out.npy"
    proc = run_installed(["apply", kfile, EXAMPLE, out])
    assert_error(proc, 2, ["huge-kernel.npy", ("too large", "1025", "truncated")], [out])


@pytest.mark.parametrize(
    "spec,words",
    [
        ("gaussian:1e6", ["1e6", ("1025", "too large", "wider")]),
        ("box:5000", ["5000", ("1025", "too large")]),
        ("gaussian:1e-170", ["1e-170", "sigma"]),
        ("1,0;0,1e400/1", ["1e400/1"]),
    ],
)
def test_bad_kernel_spec(run_installed, out_dir, spec, words):
    out = out_dir / "out.npy"
    start = time.monotonic()
    proc = run_installed(["apply", spec, EXAMPLE, out])
    assert_error(proc, 2, words, [out])
    assert time.monotonic() - start < 30


def test_kernel_larger_than_padded_input(run_installed, tmp_path, out_dir):
    kfile = tmp_path / "seven.npy"
    np.save(kfile, np.ones((7, 7), dtype=np.float32))
    out = out_dir / "out.npy"
    proc = run_installed(["apply", kfile, EXAMPLE, out, "--padding", "valid"])
    assert_error(proc, 2, ["7x7", "5x5", ("does not fit", "larger")], [out])


# --------------------------------------------------------------------------
# options


BAD_OPTIONS = [
    (["--stride", "0"], ["stride"]),
    (["--stride", "-1"], ["stride"]),
    (["--pool", "max", "--pool-size", "0"], ["pool-size"]),
    (["--padding", "-2"], ["padding"]),
    (["--pool", "max", "--pool-size", "9"], ["pool", "9x9", "5x5"]),
    (["--pool-size", "3"], [("need --pool", "requires --pool", "without --pool")]),
    (["--jobs", "2"], ["--jobs", "folder"]),
    (["--format", "xyz"], ["xyz", "format"]),
    (["--format", "pdf"], ["pdf", "format"]),
    (["--dilation", "0"], ["dilation"]),
    (["--quality", "0"], ["quality"]),
    (["--max-pixels", "0"], ["max-pixels"]),
]


@pytest.mark.parametrize("args,words", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option(run_installed, out_dir, args, words):
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "box", EXAMPLE, out, *args])
    assert_error(proc, 2, words, [out])


def test_unknown_output_extension(run_installed, out_dir):
    out = out_dir / "out.xyz"
    proc = run_installed(["apply", "box", EXAMPLE, out])
    assert_error(proc, 2, ["out.xyz", "format"], [out])


# --------------------------------------------------------------------------
# outputs


def test_read_only_output_folder(run_installed, tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere: use a folder that is truly not writable, /proc
        out = Path("/proc") / f"kernelcli-test-{os.getpid()}.npy"
        proc = run_installed(["apply", "box", EXAMPLE, out])
        assert_error(proc, 1, [str(out), ("cannot write", "not writable", "permission")])
        assert not out.exists()
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out = ro / "out.npy"
        proc = run_installed(["apply", "box", EXAMPLE, out])
        assert_error(proc, 1, ["out.npy", ("permission", "cannot write", "not writable")], [out])
    finally:
        ro.chmod(0o755)


def test_output_below_a_regular_file(run_installed, tmp_path):
    parent = tmp_path / "somefile.txt"
    parent.write_text("not a folder\n")
    out = parent / "out.png"
    proc = run_installed(["apply", "box", EXAMPLE, out])
    assert_error(proc, 1, ["somefile.txt", ("folder", "directory")])
    assert parent.read_text() == "not a folder\n"
    assert part_files(tmp_path) == []


def test_missing_output_folder(run_installed, tmp_path):
    out = tmp_path / "missing" / "deeper" / "out.png"
    proc = run_installed(["apply", "box", EXAMPLE, out])
    assert_error(proc, 1, ["missing", ("does not exist", "no such")], [])
    assert not (tmp_path / "missing").exists()
    assert part_files(tmp_path) == []


@pytest.mark.parametrize("sample", ["photo.png", "example-5x5.npy"])
def test_output_equal_to_input_is_replaced_atomically(run_installed, tmp_path, sample):
    src = tmp_path / sample
    shutil.copyfile(SAMPLES / sample, src)
    ref = tmp_path / f"ref-{sample}"
    assert_ok(run_installed(["apply", "sharpen", SAMPLES / sample, ref]), ref)
    proc = run_installed(["apply", "sharpen", src, src])
    assert_ok(proc, src)
    assert src.read_bytes() == ref.read_bytes()
    assert part_files(tmp_path) == []


def test_failed_run_leaves_previous_output_untouched(run_installed, tmp_path, out_dir):
    out = out_dir / "result.png"
    assert_ok(run_installed(["apply", "box", PHOTO, out]), out)
    before = out.read_bytes()
    mtime = out.stat().st_mtime_ns
    bad = tmp_path / "bad.png"
    data = PHOTO.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    proc = run_installed(["apply", "box", bad, out])
    assert_error(proc, 1, ["bad.png"])
    assert out.read_bytes() == before
    assert out.stat().st_mtime_ns == mtime
    assert part_files(out_dir) == []


def test_full_disk(run_installed, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a 64 KiB tmpfs")
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        # a small existing output, then a ~400 KiB one that cannot fit
        keep = disk / "keep.npy"
        assert_ok(run_installed(["apply", "box", EXAMPLE, keep]), keep)
        kept = keep.read_bytes()
        for name in ("out.png", "out.npy", "keep.npy"):
            out = disk / name
            proc = run_installed(["apply", "box", PHOTO, out])
            assert_error(proc, 1, [name, ("space", "full")], [] if name == "keep.npy" else [out],
                         folders=[disk])
        assert keep.read_bytes() == kept, "the previous output was damaged"
        assert sorted(os.listdir(disk)) == ["keep.npy"]
    finally:
        subprocess.run(["umount", str(disk)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# memory


def test_huge_padding_is_refused_up_front(run_installed, out_dir):
    out = out_dir / "out.png"
    start = time.monotonic()
    proc = run_installed(["apply", "box", SAMPLES / "gray.png", out, "--padding", "400000"])
    assert_error(proc, 1, ["GiB", "memory"], [out])
    assert re.search(r"\d+(\.\d+)? GiB", stderr_text(proc))
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------
# streams


def test_closed_downstream_pipe_is_quiet():
    cmd = " ".join(shlex.quote(c) for c in _command())
    script = f"{cmd} conv box:9 {shlex.quote(str(PHOTO))} | head -c 10 > /dev/null"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b""


def test_garbage_on_stdin(run_installed, out_dir):
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "box", "-", out], input=b"this is not an image\n" * 20)
    assert_error(proc, 1, ["<stdin>", ("not a recognised", "not a recognized")], [out])


def test_nothing_on_stdin(run_installed, out_dir):
    out = out_dir / "out.npy"
    proc = run_installed(["apply", "box", "-", out], input=b"")
    assert_error(proc, 1, ["<stdin>", "empty"], [out])
    proc = run_installed(["relu"], input=b"")
    assert_error(proc, 1, ["<stdin>", "empty"])
    assert proc.stdout == b""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["png", "npy"])
def test_signal_leaves_no_output(tmp_path, sig, kind):
    # The command is held mid-run by its input: a FIFO that this test opens
    # for writing (which waits until kernelcli opens it for reading), gives
    # the first part of a PNG (to apply) or of a .npy stage stream (to relu)
    # and keeps open, so kernelcli is still reading it when the signal comes,
    # however fast the machine.
    import threading

    fifo = tmp_path / f"in.{kind}"
    os.mkfifo(fifo)
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    out = out_dir / f"out.{kind}"
    if kind == "png":
        args, given = ["apply", "sharpen", str(fifo), str(out)], PHOTO.read_bytes()[:1000]
    else:
        whole = io.BytesIO()
        np.save(whole, np.ones((300, 400), np.float32))
        args, given = ["relu", str(fifo), str(out)], whole.getvalue()[:20000]
    opened = []
    opener = threading.Thread(target=lambda: opened.append(open(fifo, "wb")), daemon=True)
    opener.start()
    proc = subprocess.Popen(_command() + args,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env())
    try:
        opener.join(120)
        assert opened, "kernelcli never opened its INPUT"
        writer = opened[0]
        writer.write(given)
        writer.flush()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if opener.is_alive():  # unblock the opener: a reader that goes at once
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            opener.join(10)
        for writer in opened:
            try:
                writer.close()
            except BrokenPipeError:
                pass
    err = stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "interrupted" in err
    else:
        assert proc.returncode == 128 + signal.SIGTERM, err
    assert stdout == b""
    assert not out.exists()
    assert os.listdir(out_dir) == []


# --------------------------------------------------------------------------
# --debug


@pytest.mark.parametrize("how", ["option", "env", "none", "env=0"])
def test_debug_shows_traceback(tmp_path, out_dir, how):
    bad = tmp_path / "bad.png"
    bad.write_bytes(PHOTO.read_bytes()[:500])
    out = out_dir / "out.png"
    args = ["apply", "box", str(bad), str(out)]
    env = _env()
    if how == "option":
        args = ["--debug", *args]
    elif how == "env":
        env["KERNELCLI_DEBUG"] = "1"
    elif how == "env=0":
        env["KERNELCLI_DEBUG"] = "0"
    proc = subprocess.run(_command() + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=120)
    err = stderr_text(proc)
    if how in ("option", "env"):
        assert proc.returncode == 1, err
        assert "Traceback" in err, err
        assert "bad.png" in err
        assert not out.exists() and part_files(out_dir) == []
    else:
        assert_error(proc, 1, ["bad.png"], [out])
