"""kernelcli's PNG encoder (kernelcli.io._png): read back by Pillow and by a
plain decoder written here (chunk walk, CRCs, zlib, undoing the filter)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kernelcli.io import _png

SHAPES = [(1, 1), (1, 17), (23, 1), (5, 7), (64, 300), (300, 64)]
CHANNELS = [None, 1, 2, 3, 4]  # None: a 2-D array


def contents(shape, dtype, kind, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    if kind == "noise":
        return rng.integers(0, top + 1, shape, dtype=dtype)
    if kind == "photo":  # a smooth picture with sensor-like noise
        ramp = contents(shape, dtype, "ramp").astype(np.float64)
        return np.clip(ramp + rng.normal(0, top / 25, shape), 0, top).astype(dtype)
    if kind == "flat":
        return np.full(shape, top // 3, dtype=dtype)
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * (top // 200 or 1)
    ramp = ramp.reshape(shape[:2] + (1,) * (len(shape) - 2))
    return np.broadcast_to(ramp % (top + 1), shape).astype(dtype)


def plain_decode(data: bytes):
    """(pixels, chunks) by reading the file by hand: every CRC is checked, the
    IDATs are one zlib stream, every row is undone with its filter (Up only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels * depth // 8)
    assert set(rows[:, 0]) == {2}
    samples = np.cumsum(rows[:, 1:], axis=0, dtype=np.uint64) % 256  # undo Up
    samples = samples.astype(np.uint8)
    if depth == 16:
        samples = samples.view(">u2")
    return samples.reshape(height, width, channels), [kind for kind, _ in chunks]


# Pillow reads 16-bit PNGs with more than one channel as 8-bit: those are
# checked by the plain decoder alone (test_sixteen_bit_colour_by_the_plain_decoder)
@pytest.mark.parametrize("channels, dtype", [(c, np.uint8) for c in CHANNELS] + [(None, np.uint16), (1, np.uint16)])
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip(shape, channels, dtype):
    full = shape if channels is None else shape + (channels,)
    for kind in ("noise", "photo", "ramp", "flat"):
        pixels = contents(full, dtype, kind)
        data = _png.encode(pixels, 1)
        back = np.asarray(Image.open(io.BytesIO(data)))
        assert np.array_equal(back.reshape(pixels.shape), pixels)
        mine, _ = plain_decode(data)
        assert np.array_equal(mine.reshape(pixels.shape), pixels)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_sixteen_bit_colour_by_the_plain_decoder(channels):
    pixels = contents((9, 11, channels), np.uint16, "noise")
    mine, _ = plain_decode(_png.encode(pixels, 6))
    assert np.array_equal(mine, pixels)


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("kind", ["noise", "photo", "ramp"])
def test_levels_and_threads_on_images_cut_into_pieces(level, threads, kind):
    # 900 x 700 RGB is 1.9 MB of rows: two or more pieces, and a parallel
    # deflate with the threads given
    pixels = contents((900, 700, 3), np.uint8, kind, seed=level)
    data = _png.encode(pixels, level, threads=threads)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    mine, kinds = plain_decode(data)
    assert np.array_equal(mine, pixels)
    assert kinds.count(b"IDAT") >= 2


def test_pieces_do_not_lose_matches_across_cuts():
    # the same random row block repeated: a match always lies 32 KiB or less
    # behind, also right after a cut, because each piece is primed
    block = contents((8, 1000, 3), np.uint8, "noise")  # 24 KB of rows
    pixels = np.tile(block, (200, 1, 1))
    one = _png.encode(pixels, 1, threads=1)
    two = _png.encode(pixels, 1, threads=2)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(two))), pixels)
    assert len(two) < len(one) * 1.01


def test_huffman_alone_for_noisy_matching_for_smooth_stored_for_random_pictures():
    def rows(kind):
        return memoryview(_png.up_filtered(contents((600, 600, 3), np.uint8, kind))).cast("B")

    for level in (1, 6, 9):
        assert _png._plan(rows("photo"), level) == (level, zlib.Z_HUFFMAN_ONLY)
        assert _png._plan(rows("ramp"), level) == (level, zlib.Z_DEFAULT_STRATEGY)
        assert _png._plan(rows("noise"), level) == (0, zlib.Z_DEFAULT_STRATEGY)
    assert _png._plan(rows("photo"), 0) == (0, zlib.Z_DEFAULT_STRATEGY)
    random = contents((600, 600, 3), np.uint8, "noise")
    assert len(_png.encode(random, 1)) < random.nbytes * 1.01


def test_metadata_chunks():
    pixels = contents((20, 30, 3), np.uint8, "ramp")
    icc = bytes(range(256)) * 3
    data = _png.encode(pixels, 1, icc_profile=icc, dpi=(300, 150), exif=b"Exif\0\0MM\0*\0\0\0\x08\0\0")
    img = Image.open(io.BytesIO(data))
    assert img.info["icc_profile"] == icc
    assert [round(v) for v in img.info["dpi"]] == [300, 150]
    assert img.info["exif"].endswith(b"MM\0*\0\0\0\x08\0\0")
    _, kinds = plain_decode(data)
    assert kinds == [b"IHDR", b"iCCP", b"pHYs", b"eXIf", b"IDAT", b"IEND"]
    _, kinds = plain_decode(_png.encode(pixels, 1))
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


@pytest.mark.parametrize("pixels, level", [
    (np.zeros((4, 4), np.float32), 1),
    (np.zeros((4, 4, 5), np.uint8), 1),
    (np.zeros((4,), np.uint8), 1),
    (np.zeros((0, 4), np.uint8), 1),
    (np.zeros((4, 4), np.uint8), 10),
])
def test_refusals(pixels, level):
    with pytest.raises(ValueError):
        _png.encode(pixels, level)
