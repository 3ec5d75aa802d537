"""Writing outputs and their metadata, against the installed ``kernelcli``:
closed and full standard streams, metadata a format cannot store, long
output names, a full disk. Nothing the user asked for is lost, a run that
succeeded says so (exit 0), and every failure is one line on stderr, never
a traceback, an "internal error" or a line printed by a C library.
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from kernelcli.io import _png
from kernelcli.io.npy import META_MAGIC

SAMPLES = Path(__file__).parent.parent / "samples"
PHOTO = SAMPLES / "photo.png"

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _storage = tempfile.mkdtemp(prefix="kernelcli-hypothesis-")
    atexit.register(shutil.rmtree, _storage, ignore_errors=True)
    set_hypothesis_home_dir(_storage)


def closing(*fds):
    """A ``preexec_fn`` that starts the command with these descriptors closed (``2>&-``)."""
    def close():
        for fd in fds:
            os.close(fd)
    return close


def clean_stderr(text: str) -> None:
    """Only kernelcli's own lines: no traceback, no internal error, nothing a C library printed."""
    assert "Traceback" not in text and "internal error" not in text, text
    for line in text.splitlines():
        assert line.startswith("kernelcli: "), text


def small_photo(size=48) -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))[:size, :size].copy()


def fake_icc(size: int, seed: int = 0) -> bytes:
    """Bytes with an ICC profile's header (size, then ``acsp`` at byte 36): kernelcli
    carries them; whether they are a sound profile is not its business."""
    body = bytearray(np.random.default_rng(seed).integers(0, 256, max(size, 128), dtype=np.uint8).tobytes())
    body[:4] = len(body).to_bytes(4, "big")
    body[36:40] = b"acsp"
    return bytes(body)


def npy_with_meta(path: Path, pixels: np.ndarray, meta: dict) -> Path:
    with open(path, "wb") as f:
        np.save(f, pixels.astype(np.float32))
        f.write(META_MAGIC + json.dumps(meta).encode("ascii"))
    return path


def readable(path: Path, shape: tuple) -> None:
    """``path`` holds a whole picture (or array) of ``shape``'s height and width."""
    if path.suffix == ".npy":
        got = np.load(path)
    else:
        with Image.open(path) as img:
            img.load()
            got = np.asarray(img)
    assert got.shape[:2] == shape[:2]


# --------------------------------------------------------------------------
# closed standard streams


def test_closed_stderr_successful_run_exits_0(run_installed, tmp_path):
    out = tmp_path / "o.png"
    proc = run_installed(["apply", "sharpen", PHOTO, out], stderr=None, preexec_fn=closing(2))
    assert proc.returncode == 0
    readable(out, (300, 451))


def test_closed_stderr_notes_are_lost_not_the_run(run_installed, tmp_path):
    # 16-bit gray into JPEG: a note ("written as 8-bit") that cannot be shown
    out = tmp_path / "o.jpg"
    proc = run_installed(["apply", "sharpen", SAMPLES / "gray16.tif", out], stderr=None, preexec_fn=closing(2))
    assert proc.returncode == 0
    with Image.open(out) as img:
        assert img.mode == "L"


def test_closed_stderr_failure_still_exits_1(run_installed, tmp_path):
    proc = run_installed(["apply", "sharpen", tmp_path / "missing.png", tmp_path / "o.png"], stderr=None,
                         preexec_fn=closing(2))
    assert proc.returncode == 1
    assert not (tmp_path / "o.png").exists()


def test_closed_stdout_run_that_writes_no_stdout_succeeds(run_installed, tmp_path):
    out = tmp_path / "o.png"
    proc = run_installed(["apply", "sharpen", PHOTO, out], stdout=None, preexec_fn=closing(1))
    assert proc.returncode == 0 and proc.stderr == b""
    readable(out, (300, 451))


@pytest.mark.parametrize("args", [
    ["conv", "sharpen", PHOTO],
    ["conv", "sharpen", PHOTO, "-", "--format", "png"],
    ["--version"],
    ["--help"],
    ["kernels"],
    ["kernels", "show", "sharpen"],
], ids=["npy", "png", "version", "help", "kernels", "show"])
def test_closed_stdout_writing_to_it_is_an_error(run_installed, args):
    proc = run_installed(args, stdout=None, preexec_fn=closing(1))
    assert proc.returncode == 1
    assert proc.stderr.decode() == "kernelcli: error: cannot write to stdout: it is closed\n"


def test_closed_stdin_says_closed(run_installed, tmp_path):
    proc = run_installed(["relu", "-", tmp_path / "o.npy"], stdin=None, preexec_fn=closing(0))
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "stdin is closed" in err and "terminal" not in err
    clean_stderr(err)


def test_closed_stderr_keeps_libtiff_out_of_the_output(run_installed, tmp_path):
    # With descriptor 2 closed, the first file opened would take its number,
    # and whatever C code prints "on stderr" would land in it.
    src = tmp_path / "in.tif"
    Image.fromarray(small_photo()).save(src, dpi=(1e30, 1e30), compression="tiff_deflate")
    out = tmp_path / "o.tif"
    proc = run_installed(["conv", "identity", src, out], stderr=None, preexec_fn=closing(2))
    assert proc.returncode == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), small_photo())


# --------------------------------------------------------------------------
# a full stdout


def _full():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    return open("/dev/full", "wb")


@pytest.mark.parametrize("args", [
    ["conv", "sharpen", PHOTO],
    ["conv", "sharpen", PHOTO, "-", "--format", "png"],
    ["relu", SAMPLES / "example-5x5.npy"],
    ["--help"],
    ["--version"],
    ["kernels"],
    ["explain", "box:3", SAMPLES / "example-5x5.npy"],
], ids=["npy", "png", "relu-stream", "help", "version", "kernels", "explain"])
def test_full_stdout_is_one_line(run_installed, args):
    with _full() as full:
        proc = run_installed(args, stdout=full)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "kernelcli: error: cannot write to stdout: No space left on device\n"


def test_closed_pipe_still_ends_quietly():
    # a reader that went away is not an error (as before): the 1.6 MB stream
    # cannot fit in the pipe, so the command is still writing when it closes
    from tests.conftest import _installed_command

    proc = subprocess.Popen(_installed_command() + ["conv", "sharpen", str(PHOTO)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout.read(6) == b"\x93NUMPY"
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""


# --------------------------------------------------------------------------
# metadata that a format cannot store: dropped with a note, never the pixels


def _one_run(run_installed, src, out):
    proc = run_installed(["conv", "identity", src, out])
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    clean_stderr(err)
    assert ".part" not in err
    return err


@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "bmp", "webp", "npy"])
def test_tiff_dpi_that_reads_back_nan(run_installed, tmp_path, ext):
    src = tmp_path / "in.tif"
    Image.fromarray(small_photo()).save(src, dpi=(1e30, 1e30), compression="tiff_deflate")
    out = tmp_path / f"o.{ext}"
    err = _one_run(run_installed, src, out)
    assert "in.tif: dropped its dpi nan x nan" in err
    readable(out, (48, 48))
    assert sorted(os.listdir(tmp_path)) == sorted(["in.tif", out.name])


@pytest.mark.parametrize("dpi", [[0, -1], [1e308, 1e308], [float("nan"), 72], [float("inf"), 72], "x", [72]])
@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "bmp"])
def test_npy_stream_dpi(run_installed, tmp_path, dpi, ext):
    src = npy_with_meta(tmp_path / "in.npy", small_photo(), {"mode": "RGB", "dpi": dpi})
    out = tmp_path / f"o.{ext}"
    err = _one_run(run_installed, src, out)
    assert "dpi" in err and "dropped" in err
    readable(out, (48, 48))


@pytest.mark.parametrize("ext,kept", [("png", True), ("jpg", False), ("tif", False), ("webp", True)])
def test_exif_of_70kb(run_installed, tmp_path, ext, kept):
    exif = b"Exif\0\0" + np.random.default_rng(1).integers(0, 256, 70_000, dtype=np.uint8).tobytes()
    src = tmp_path / "in.png"
    src.write_bytes(_png.encode(small_photo(), exif=exif))
    out = tmp_path / f"o.{ext}"
    err = _one_run(run_installed, src, out)
    readable(out, (48, 48))
    if kept:  # PNG and WebP hold it
        assert err == ""
        assert Image.open(out).info["exif"].endswith(exif[6:])
    else:  # JPEG holds 65533 bytes; TIFF needs EXIF it can read as tags
        assert "dropped the EXIF (70,006 bytes)" in err


@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "bmp", "webp", "npy"])
def test_garbage_icc_profile(run_installed, tmp_path, ext):
    src = tmp_path / "in.png"
    src.write_bytes(_png.encode(small_photo(), icc_profile=b"not a profile" * 200))
    out = tmp_path / f"o.{ext}"
    err = _one_run(run_installed, src, out)
    assert "in.png: dropped its ICC profile (2,600 bytes): not an ICC profile" in err
    readable(out, (48, 48))
    if ext != "npy":
        assert "icc_profile" not in Image.open(out).info


@pytest.mark.parametrize("ext,kept", [("png", False), ("jpg", False), ("tif", True), ("webp", True),
                                      ("npy", True)])
def test_huge_icc_profile(run_installed, tmp_path, ext, kept):
    # 17 MB: more than JPEG's 255 segments hold, more than Pillow opens in a PNG
    icc = fake_icc(17_000_000)
    src = tmp_path / "in.tif"
    Image.fromarray(small_photo()).save(src, icc_profile=icc)
    out = tmp_path / f"o.{ext}"
    proc = run_installed(["conv", "identity", src, out],
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    clean_stderr(err)
    readable(out, (48, 48))
    if kept:
        assert err == ""
        if ext != "npy":
            assert Image.open(out).info["icc_profile"] == icc
    else:
        assert "dropped the ICC profile (17,000,000 bytes)" in err
        assert "icc_profile" not in Image.open(out).info


def test_dpi_out_of_a_format_range_is_dropped_not_wrapped(run_installed, tmp_path):
    # 100000 dpi: JPEG's 16 bits wrapped it to 34464; PNG stores it
    src = tmp_path / "in.png"
    src.write_bytes(_png.encode(small_photo(), dpi=(100000, 100000)))
    err = _one_run(run_installed, src, tmp_path / "o.jpg")
    assert "o.jpg: dropped the dpi 100000 x 100000" in err and "JPEG" in err
    assert "dpi" not in Image.open(tmp_path / "o.jpg").info
    assert _one_run(run_installed, src, tmp_path / "o.png") == ""
    assert [round(v) for v in Image.open(tmp_path / "o.png").info["dpi"]] == [100000, 100000]


# --------------------------------------------------------------------------
# long output names


def _name_max(folder) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


@pytest.mark.parametrize("stem", ["a" * 240, "é" * 125, "a" * 244])
@pytest.mark.parametrize("ext", [".png", ".tif", ".npy"])
def test_longest_output_names(run_installed, tmp_path, stem, ext):
    name = stem + ext
    if len(os.fsencode(name)) > _name_max(tmp_path):
        name = stem[: _name_max(tmp_path) - len(ext) - (len(os.fsencode(stem)) - len(stem))] + ext
    out = tmp_path / name
    proc = run_installed(["apply", "sharpen", PHOTO, out])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    assert os.listdir(tmp_path) == [name]
    readable(out, (300, 451))


@pytest.mark.parametrize("name", ["x.png", "a" * 251 + ".png", "é" * 125 + ".tif", "a" + "é" * 125 + ".png",
                                  "€" * 80 + ".png"], ids=["short", "ascii", "2-byte", "2-byte-odd", "3-byte"])
def test_temporary_names_fit(tmp_path, name):
    from kernelcli.io.sinks import temporary_prefix

    prefix = temporary_prefix(name, tmp_path)
    whole = os.fsencode(prefix) + b"XXXXXXXX" + b".part"
    assert len(whole) <= _name_max(tmp_path)
    assert prefix.startswith(".") and prefix.endswith(".")
    assert name.startswith(prefix[1:-1])  # the target's name, or as much of it as fits
    fd1, tmp1 = tempfile.mkstemp(dir=tmp_path, prefix=prefix, suffix=".part")
    fd2, tmp2 = tempfile.mkstemp(dir=tmp_path, prefix=prefix, suffix=".part")
    os.close(fd1), os.close(fd2)
    assert tmp1 != tmp2


# --------------------------------------------------------------------------
# a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (mounting needs root and the right to mount)."""
    where = tmp_path / "tiny"
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {got.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.parametrize("ext", ["tif", "png", "jpg", "webp", "bmp", "npy"])
def test_full_disk_is_one_line(run_installed, tiny_disk, ext):
    (tiny_disk / "filler").write_bytes(b"x" * 40_000)  # 24 KiB left: less than any of these outputs
    out = tiny_disk / f"o.{ext}"
    proc = run_installed(["apply", "sharpen", PHOTO, out])
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"kernelcli: error: {out}: cannot write: No space left on device\n"
    assert os.listdir(tiny_disk) == ["filler"]


def _file_size_limit(limit):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


@pytest.mark.parametrize("ext", ["tif", "png", "npy"])
def test_file_size_limit_is_one_line(run_installed, tmp_path, ext):
    # Any system: a file size limit makes writes fail (EFBIG, "File too large")
    # the way a full disk does. Numba's cache is filled first, without the limit.
    out = tmp_path / f"o.{ext}"
    assert run_installed(["apply", "sharpen", PHOTO, tmp_path / f"warm.{ext}"]).returncode == 0
    os.unlink(tmp_path / f"warm.{ext}")
    proc = run_installed(["apply", "sharpen", PHOTO, out], preexec_fn=_file_size_limit(20_000))
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"kernelcli: error: {out}: cannot write: File too large\n"
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# metadata through the command, at random

_DPI_VALUES = st.one_of(
    st.sampled_from([0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e308, 1e30, 1e-300, 0.3, 72.0,
                     300.0, 65535.0, 65536.0, 1e5, 4.3e9]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
_EXIF_SIZES = st.sampled_from([0, 1, 10, 1000, 65527, 65528, 70_000, 100_000])
_ICC = st.sampled_from(["none", "garbage", "short", "profile", "truncated", "large"])

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _icc_bytes(kind: str, rng) -> bytes | None:
    if kind == "none":
        return None
    if kind == "garbage":
        return rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    if kind == "short":
        return b"acsp"
    if kind == "truncated":  # says 5000 bytes, holds 300
        body = bytearray(fake_icc(300))
        body[:4] = (5000).to_bytes(4, "big")
        return bytes(body)
    return fake_icc(2_000_000 if kind == "large" else 3000)


def _input_file(folder: Path, fmt: str, pixels, dpi, exif: bytes | None, icc: bytes | None) -> Path | None:
    """An input of format ``fmt`` carrying as much of this metadata as the format
    can be made to hold (None: the format cannot hold it at all)."""
    if fmt == "npy":
        meta = {"mode": "RGB", "dpi": list(dpi)}
        if exif is not None:
            meta["exif"] = base64.b64encode(exif).decode()
        if icc is not None:
            meta["icc_profile"] = base64.b64encode(icc).decode()
        return npy_with_meta(folder / "in.npy", pixels, meta)
    if fmt == "png":  # pHYs written as is: whole pixels per metre, 0 included
        data = _png.encode(pixels, icc_profile=icc, exif=exif)
        ppm = [int(min(max(v / 0.0254, 0), 2**32 - 1)) if math.isfinite(v) else 0 for v in dpi]
        at = data.index(b"IDAT") - 4
        phys = b"".join(_png.chunk(b"pHYs", ppm[0].to_bytes(4, "big") + ppm[1].to_bytes(4, "big") + b"\1"))
        (folder / "in.png").write_bytes(data[:at] + phys + data[at:])
        return folder / "in.png"
    kwargs = {}
    if icc is not None:
        kwargs["icc_profile"] = icc
    if fmt == "jpg":
        if exif is not None and len(exif) <= 65533:
            kwargs["exif"] = exif
        if all(math.isfinite(v) and 0 <= v < 65536 for v in dpi):
            kwargs["dpi"] = tuple(dpi)
        if icc is not None and len(icc) > 255 * 65519:
            return None
        target = folder / "in.jpg"
        Image.fromarray(pixels).save(target, quality=95, **kwargs)
        return target
    target = folder / "in.tif"
    if exif is not None:
        kwargs["exif"] = exif
    try:
        Image.fromarray(pixels).save(target, dpi=tuple(dpi), **kwargs)
    except Exception:  # Pillow's TIFF writer refuses some of these values itself
        try:
            Image.fromarray(pixels).save(target, **kwargs)
        except Exception:
            kwargs.pop("exif", None)
            try:
                Image.fromarray(pixels).save(target, **kwargs)
            except Exception:
                return None
    return target


@FUZZ
@given(dpi=st.tuples(_DPI_VALUES, _DPI_VALUES), exif_size=_EXIF_SIZES, exif_tags=st.booleans(), icc_kind=_ICC,
       source=st.sampled_from(["png", "jpg", "tif", "npy"]), target=st.sampled_from(["png", "jpg", "tif", "webp",
                                                                                      "npy"]),
       seed=st.integers(0, 2**16))
def test_metadata_never_fails_the_pixels(run_cli, tmp_path_factory, dpi, exif_size, exif_tags, icc_kind, source,
                                         target, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("meta")
    pixels = small_photo(16)
    if not exif_size:
        exif = None
    elif exif_tags:  # EXIF that reads as tags: a description of that many bytes
        tags = Image.Exif()
        tags[0x010E] = "d" * exif_size
        exif = tags.tobytes()
    else:
        exif = b"Exif\0\0" + rng.integers(0, 256, exif_size, dtype=np.uint8).tobytes()
    icc = _icc_bytes(icc_kind, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = _input_file(folder, source, pixels, dpi, exif, icc)
    assume(src is not None)
    out = folder / f"o.{target}"
    result = run_cli(["conv", "identity", src, out])
    err = result.stderr
    assert result.exit_code == 0, (err, result.exception)
    assert "Traceback" not in err and "internal error" not in err
    for line in err.splitlines():
        assert line.startswith("kernelcli: note: "), err
    assert sorted(p.name for p in folder.iterdir()) == sorted([src.name, out.name])  # no .part left
    if target == "npy":
        got = np.load(out)
        meta = json.loads(out.read_bytes().split(META_MAGIC)[1])
        assert all(math.isfinite(v) and v > 0 for v in meta.get("dpi", [1, 1]))
    else:
        with Image.open(out) as img:
            img.load()
            got = np.asarray(img)
            info = dict(img.info)
        if "dpi" in info:
            assert all(math.isfinite(float(v)) and float(v) > 0 for v in info["dpi"])
        if icc is not None and "ICC" not in err and icc_kind in ("profile", "large"):
            assert info.get("icc_profile") == icc  # carried, or a note says it was dropped
    assert got.shape[:2] == pixels.shape[:2]
    if icc_kind in ("garbage", "short", "truncated"):
        assert "dropped its ICC profile" in err
    if not all(math.isfinite(v) and v > 0 for v in dpi) and source == "npy":
        assert "dropped its dpi" in err


@pytest.mark.parametrize("stem", ["out", "é" * 120])  # a short name, and 240 bytes of UTF-8
def test_the_temporaries_of_an_output_are_found_whatever_its_length(tmp_path, stem):
    """What a folder run removes for a worker killed while writing (its
    temporary name is cut to fit the file system's limit)."""
    from kernelcli.io import sinks

    target = tmp_path / f"{stem}.png"
    (tmp_path / "other.png.part").write_bytes(b"")  # not one of its temporaries
    with sinks.atomic_file(target) as tmp:
        open(tmp, "wb").close()
        assert sinks.temporaries_of(target) == [Path(tmp)]
    assert sinks.temporaries_of(target) == []
