"""What a picture's header tells before it goes in bands: read without
decoding its pixels, and read once."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from kernelcli.io import header

RNG = np.random.default_rng(5)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_exif_after_pixels(path, pixels, orientation):
    """A PNG whose eXIf chunk comes after its image data (PNG allows both places)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + _chunk(b"eXIf", exif.tobytes()) + data[end:])
    return path


@pytest.mark.parametrize("orientation", [6, 1])
def test_a_png_orientation_after_its_pixels_is_found_without_decoding_them(tmp_path, monkeypatch, orientation):
    src = png_with_exif_after_pixels(tmp_path / "turned.png", RNG.integers(0, 256, (9, 14, 3), np.uint8),
                                     orientation)
    with Image.open(src) as img:  # Pillow itself finds it once the pixels are decoded
        assert img.getexif().get(0x0112) == orientation

    def no_decoding(self):
        raise AssertionError("the header decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    facts = header.describe(src)
    assert facts["orientation"] == orientation
    assert (facts["width"], facts["height"]) == (14, 9)


def test_a_png_without_exif_is_described_without_decoding(tmp_path, monkeypatch):
    src = tmp_path / "plain.png"
    Image.fromarray(RNG.integers(0, 256, (9, 14), np.uint8)).save(src)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (_ for _ in ()).throw(AssertionError))
    assert header.describe(src)["orientation"] is None


def test_a_png_turned_after_its_pixels_does_not_go_in_bands(tmp_path, run_installed):
    src = png_with_exif_after_pixels(tmp_path / "turned.png", RNG.integers(0, 256, (9, 14, 3), np.uint8), 6)
    done = run_installed(["apply", "box:3", src, tmp_path / "o.png", "--tile-rows", "4"])
    assert done.returncode == 2 and b"EXIF orientation 6" in done.stderr
    whole = run_installed(["apply", "box:3", src, tmp_path / "o.png"])
    assert whole.returncode == 0, whole.stderr
    assert Image.open(tmp_path / "o.png").size == (9, 14)  # turned upright as the whole path does


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _info(path) -> dict:
    with Image.open(path) as img:
        dpi = img.info.get("dpi")
        return {"dpi": None if dpi is None else tuple(round(float(v), 2) for v in dpi),
                "icc_profile": img.info.get("icc_profile"),
                "exif": dict(img.getexif())}


@pytest.mark.parametrize("src_ext, out_ext", [("png", "png"), ("png", "tif"), ("tif", "tif"), ("tif", "png")])
def test_bands_keep_the_metadata_the_whole_path_keeps(tmp_path, run_installed, src_ext, out_ext):
    """dpi and the ICC profile (and a PNG's EXIF, into a PNG) come out of a
    banded run as out of the whole-picture path."""
    pixels = RNG.integers(0, 256, (23, 17, 3), np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "kernelcli test"  # Make
    src = tmp_path / f"in.{src_ext}"
    kwargs = {"dpi": (300, 150), "icc_profile": _srgb_profile()}
    if src_ext == "png":
        kwargs["exif"] = exif.tobytes()
    else:
        kwargs["compression"] = "tiff_deflate"
    Image.fromarray(pixels).save(src, **kwargs)
    whole = run_installed(["apply", "box:3", src, tmp_path / f"whole.{out_ext}"])
    banded = run_installed(["apply", "box:3", src, tmp_path / f"banded.{out_ext}", "--tile-rows", "5"])
    assert whole.returncode == 0 and banded.returncode == 0, (whole.stderr, banded.stderr)
    got, want = _info(tmp_path / f"banded.{out_ext}"), _info(tmp_path / f"whole.{out_ext}")
    assert got["dpi"] == want["dpi"] and np.allclose(got["dpi"], (300, 150), atol=0.02)  # PNG: per metre
    assert got["icc_profile"] == want["icc_profile"] == kwargs["icc_profile"]
    if src_ext == "png" and out_ext == "png":
        assert got["exif"].get(0x010F) == want["exif"].get(0x010F) == "kernelcli test"
    if src_ext == "png" and out_ext == "tif":
        assert b"dropped the EXIF: a TIFF written in bands" in banded.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / f"banded.{out_ext}")),
                          np.asarray(Image.open(tmp_path / f"whole.{out_ext}")))


@pytest.mark.parametrize("unit, want", [(3, (300 * 2.54, 150 * 2.54)), (1, None), (2, (300, 150))])
def test_tiff_resolution_units_read_as_pillow_reads_them(tmp_path, unit, want):
    from kernelcli.io import tiff_rows
    tifffile = pytest.importorskip("tifffile")

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, RNG.integers(0, 256, (8, 8), np.uint8), resolution=(300, 150), resolutionunit=unit)
    with Image.open(src) as img:
        pillow = img.info.get("dpi")
    meta = tiff_rows.open_tiff(src, None)[2]
    got = meta.info.get("dpi")
    assert (None if got is None else tuple(round(v, 6) for v in got)) == \
        (None if want is None else tuple(round(v, 6) for v in want))
    assert (pillow is None) == (got is None)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_a_run_in_bands_reads_the_header_once(tmp_path, run_cli, monkeypatch, ext):
    from kernelcli.run import tiled

    src = tmp_path / f"in.{ext}"
    Image.fromarray(RNG.integers(0, 256, (30, 12, 3), np.uint8)).save(src)
    opened = []
    real = tiled.open_source
    monkeypatch.setattr(tiled, "open_source", lambda *a, **k: opened.append(a) or real(*a, **k))
    monkeypatch.setattr(header, "describe", lambda path: (_ for _ in ()).throw(AssertionError("read twice")))
    done = run_cli(["apply", "box:3", src, tmp_path / f"out.{ext}", "--tile-rows", "4"])
    assert done.exit_code == 0, done.output
    assert len(opened) == 1
    assert Image.open(tmp_path / f"out.{ext}").size == (12, 30)


def test_a_paged_tiff_is_refused_from_the_one_header_read(tmp_path, run_installed):
    tifffile = pytest.importorskip("tifffile")
    src = tmp_path / "two.tif"
    with tifffile.TiffWriter(src) as tif:
        for _ in range(2):
            tif.write(RNG.integers(0, 256, (10, 8), np.uint8))
    done = run_installed(["apply", "box:3", src, tmp_path / "o.tif", "--tile-rows", "4"])
    assert done.returncode == 2 and b"has 2 frames" in done.stderr


def test_a_plain_png_apply_loads_neither_the_header_reader_nor_the_file_runner(tmp_path, samples):
    """An ordinary PNG is told from its first 24 bytes not to need bands."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kernelcli", "apply", "sharpen",
                           samples / "photo.png", tmp_path / "out.png"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "kernelcli.run.files" in imported
    assert not imported & {"kernelcli.run.tiled", "kernelcli.io.header"}


def test_a_png_too_big_for_memory_still_goes_in_bands_by_itself(tmp_path, run_cli, monkeypatch):
    from kernelcli import _memory

    src = tmp_path / "in.png"
    Image.fromarray(RNG.integers(0, 256, (40, 30, 3), np.uint8)).save(src)
    monkeypatch.setattr(_memory, "available_memory", lambda: 60 * 1024)  # 3 float32 copies: 42 KiB
    done = run_cli(["apply", "box:3", src, tmp_path / "out.png"])
    assert done.exit_code == 0, done.output
    assert "bands of" in done.stderr
    monkeypatch.setattr(_memory, "available_memory", lambda: 10**12)
    done = run_cli(["apply", "box:3", src, tmp_path / "whole.png"])
    assert "bands of" not in done.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(tmp_path / "whole.png")))


def test_counting_the_pages_of_a_damaged_tiff_prints_nothing(tmp_path, capfd):
    from kernelcli.io import tiff_rows
    import io

    frames = [Image.new("L", (4, 4), v) for v in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    src = tmp_path / "cut.tif"
    src.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.5)])
    facts = {}
    tiff_rows.open_tiff(src, None, facts)
    assert facts["frames"] >= 1 and facts["orientation"] == 1
    assert capfd.readouterr().err == ""
