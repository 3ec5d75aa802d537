"""Every frame of an animated GIF, WebP or PNG and of a multi-page TIFF is
filtered and written with its timing to a format that holds frames; a format
that holds one picture is refused naming --frame N; --frame N picks one.
Inputs written by Pillow, tifffile and ImageMagick (where present); each
frame is checked against a plain-loop blur of the frame as Pillow shows it."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from .reference import correlate_ref

BOX = np.ones((3, 3)) / 9


def _box(frame):
    return np.clip(np.floor(correlate_ref(frame, BOX, pads=((1, 1), (1, 1))) + 0.5), 0, 255)


def _frames(path, mode=None):
    """Every frame of a file as Pillow shows it, and each one's timing."""
    out, timing = [], []
    with Image.open(path) as img:
        for i in range(getattr(img, "n_frames", 1)):
            img.seek(i)
            img.load()
            out.append(np.asarray(img.convert(mode) if mode else img))
            timing.append((img.info.get("duration"), getattr(img, "disposal_method", img.info.get("disposal"))))
        loop = img.info.get("loop")
    return out, timing, loop


def _animation(path, fmt, count=3, **kwargs):
    rng = np.random.default_rng(len(fmt))
    frames = [Image.fromarray(rng.integers(0, 256, (10, 14, 3)).astype(np.uint8)) for _ in range(count)]
    if fmt == "GIF":  # few colours, so that the GIF holds them exactly
        frames = [f.quantize(16).convert("RGB") for f in frames]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], **kwargs)


@pytest.mark.parametrize("fmt, ext, kwargs", [
    ("GIF", "gif", {"duration": [40, 80, 120], "loop": 0, "disposal": [1, 2, 1]}),
    ("PNG", "png", {"duration": [40, 80, 120], "loop": 2, "disposal": [0, 1, 0]}),
    ("WEBP", "webp", {"duration": [40, 80, 120], "loop": 5, "lossless": True}),
])
def test_every_frame_is_filtered_and_the_timing_kept(tmp_path, run_installed, fmt, ext, kwargs):
    _animation(tmp_path / f"in.{ext}", fmt, **kwargs)
    want, timing, loop = _frames(tmp_path / f"in.{ext}", "RGB")
    proc = run_installed(["apply", "box", tmp_path / f"in.{ext}", tmp_path / "out.png"])  # APNG: lossless
    assert proc.returncode == 0, proc.stderr
    got, _, _ = _frames(tmp_path / "out.png", "RGB")
    assert len(got) == 3
    for g, w in zip(got, want):
        assert np.abs(g.astype(int) - _box(w)).max() <= 1  # float32 sums against float64
    proc = run_installed(["apply", "box", tmp_path / f"in.{ext}", tmp_path / f"out.{ext}"])
    assert proc.returncode == 0, proc.stderr
    _, out_timing, out_loop = _frames(tmp_path / f"out.{ext}")
    assert [t[0] for t in out_timing] == [t[0] for t in timing] and out_loop == loop
    if fmt != "WEBP":
        assert [t[1] for t in out_timing] == [t[1] for t in timing]


@pytest.mark.parametrize("shape, photometric", [((4, 9, 11), "minisblack"), ((3, 5, 6, 3), "rgb")])
def test_every_page_of_a_tifffile_tiff(tmp_path, run_installed, shape, photometric):
    """16-bit gray pages (read by Pillow) and 16-bit colour pages (read by
    tifffile) are each filtered and written as 16-bit pages."""
    tifffile = pytest.importorskip("tifffile")
    pages = np.random.default_rng(0).integers(0, 65536, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", pages, photometric=photometric)
    proc = run_installed(["apply", "box", tmp_path / "in.tif", tmp_path / "out.tif"])
    assert proc.returncode == 0, proc.stderr
    got = tifffile.imread(tmp_path / "out.tif")
    assert got.shape == pages.shape and got.dtype == np.uint16
    for g, p in zip(got, pages):
        planes = [p] if p.ndim == 2 else [p[..., c] for c in range(p.shape[2])]
        want = np.dstack([np.floor(correlate_ref(q, BOX, pads=((1, 1), (1, 1))) + 0.5) for q in planes])
        assert np.abs(g.reshape(want.shape).astype(np.int64) - want).max() <= 1


@pytest.mark.parametrize("ext", ["jpg", "npy"])
def test_frames_into_a_one_picture_format_are_refused_naming_frame(tmp_path, run_installed, ext):
    _animation(tmp_path / "in.gif", "GIF", duration=50)
    proc = run_installed(["apply", "box", tmp_path / "in.gif", tmp_path / f"out.{ext}"])
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "has 3 frames" in err and "--frame N (0 to 2)" in err and "gif, webp, png" in err
    assert "Traceback" not in err and not (tmp_path / f"out.{ext}").exists()


def test_frame_picks_one_frame(tmp_path, run_installed):
    _animation(tmp_path / "in.gif", "GIF", duration=50)
    want, _, _ = _frames(tmp_path / "in.gif", "RGB")
    proc = run_installed(["apply", "box", tmp_path / "in.gif", tmp_path / "out.npy", "--frame", "2"])
    assert proc.returncode == 0, proc.stderr
    assert np.allclose(np.load(tmp_path / "out.npy"), correlate_ref(want[2], BOX, pads=((1, 1), (1, 1))),
                       atol=1e-3)
    proc = run_installed(["apply", "box", tmp_path / "in.gif", tmp_path / "out.npy", "--frame", "3"])
    assert proc.returncode == 2 and b"--frame 3: " in proc.stderr and b"has 3 frames (0 to 2)" in proc.stderr


def test_folder_runs_take_gif_and_avif(tmp_path, run_installed, samples):
    from PIL import features

    (tmp_path / "in").mkdir()
    _animation(tmp_path / "in" / "a.gif", "GIF", duration=50)
    names = ["a.gif"]
    if features.check("avif"):
        Image.open(samples / "photo.png").save(tmp_path / "in" / "b.avif")
        names.append("b.avif")
    Image.open(samples / "gray.png").save(tmp_path / "in" / "c.ppm")  # read, not written: out as PNG
    proc = run_installed(["apply", "box", tmp_path / "in", tmp_path / "out", "--jobs", "1"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names + ["c.png"])
    assert _frames(tmp_path / "out" / "a.gif")[0].__len__() == 3


def test_an_animated_gif_made_by_imagemagick(tmp_path, run_installed):
    exe = shutil.which("convert")
    if exe is None or b"ImageMagick" not in subprocess.run([exe, "-version"], capture_output=True).stdout:
        pytest.skip("ImageMagick is not installed")
    made = subprocess.run([exe, "-delay", "25", "-loop", "0", "-size", "12x8", "xc:red", "xc:lime", "xc:blue",
                           tmp_path / "in.gif"], capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    proc = run_installed(["apply", "box", tmp_path / "in.gif", tmp_path / "out.gif", "--pad-mode", "edge"])
    assert proc.returncode == 0, proc.stderr
    got, timing, loop = _frames(tmp_path / "out.gif", "RGB")
    assert [t[0] for t in timing] == [250, 250, 250] and loop == 0
    assert [tuple(g[4, 6]) for g in got] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_every_page_of_16_bit_and_float_colour(tmp_path, run_installed):
    """Float colour pages (read by tifffile) are each filtered and written
    as float pages; --frame N picks one page of 16-bit colour and is checked
    against the page count."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(1)
    pages = rng.integers(0, 65536, (3, 5, 6, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", pages, photometric="rgb")
    floats = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", floats, photometric="rgb")
    proc = run_installed(["apply", "box", tmp_path / "f.tif", tmp_path / "fout.tif"])
    assert proc.returncode == 0, proc.stderr
    got = tifffile.imread(tmp_path / "fout.tif")
    assert got.shape == floats.shape and got.dtype == np.float32
    want = np.stack([correlate_ref(floats[1][..., c], BOX, pads=((1, 1), (1, 1))) for c in range(3)], -1)
    assert np.allclose(got[1], want, atol=1e-5)
    proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / "two.npy", "--frame", "2"])
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "two.npy"), pages[2].astype(np.float32))
    proc = run_installed(["apply", "identity", tmp_path / "in.tif", tmp_path / "x.npy", "--frame", "3"])
    assert proc.returncode == 2 and b"--frame 3: " in proc.stderr and b"has 3 frames (0 to 2)" in proc.stderr
    assert not (tmp_path / "x.npy").exists()


def test_frames_at_16_bits_and_float_go_to_tiff(tmp_path, run_installed):
    """--depth 16 or float on an animation: TIFF pages hold them (the blur's
    fractions kept); an animated PNG holds 8-bit colour only: a usage error."""
    tifffile = pytest.importorskip("tifffile")
    _animation(tmp_path / "in.gif", "GIF", duration=[40, 80, 120])
    want, _, _ = _frames(tmp_path / "in.gif", "RGB")
    for depth, dtype, top in (("16", np.uint16, 65535 / 255), ("float", np.float32, 1.0)):
        proc = run_installed(["apply", "box", tmp_path / "in.gif", tmp_path / f"{depth}.tif", "--depth", depth])
        assert proc.returncode == 0, proc.stderr
        got = tifffile.imread(tmp_path / f"{depth}.tif")
        assert got.shape == (3, 10, 14, 3) and got.dtype == dtype
        for g, w in zip(got, want):
            blur = np.stack([correlate_ref(w[..., c], BOX, pads=((1, 1), (1, 1))) for c in range(3)], -1)
            assert np.abs(g / top - blur).max() <= 0.51 / top + 1e-3
    proc = run_installed(["apply", "box", tmp_path / "in.gif", tmp_path / "out.png", "--depth", "16"])
    assert proc.returncode == 2
    assert b"PNG holds frames of 8-bit colour; frames of 16-bit colour need tif" in proc.stderr
    assert not (tmp_path / "out.png").exists()