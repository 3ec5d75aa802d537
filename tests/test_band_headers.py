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
