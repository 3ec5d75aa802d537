"""PNG in bands: rows read in order (every row filter undone as the PNG
specification says, checked against a plain per-byte loop here), and rows
written as the bands come; banded runs give the in-memory path's pixels."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kernelcli.errors import ImageReadError, UsageError
from kernelcli.io.png_rows import PngReader, PngRows, open_png
from kernelcli.run import files, tiled
from kernelcli.stages import Pool, Stages, make_conv

RNG = np.random.default_rng(5)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filtered_png(pixels: np.ndarray) -> bytes:
    """A PNG whose row r uses filter type r % 5, filtered by a plain loop."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    depth = pixels.dtype.itemsize * 8
    raw = pixels.astype(pixels.dtype.newbyteorder(">")).view(np.uint8).reshape(h, -1).astype(int)
    bpp = channels * depth // 8
    lines = []
    for r in range(h):
        kind, line, above = r % 5, raw[r], raw[r - 1] if r else np.zeros_like(raw[0])
        out = [kind]
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            c = above[i - bpp] if i >= bpp else 0
            pred = [0, a, above[i], (a + above[i]) // 2, _paeth(a, above[i], c)][kind]
            out.append((line[i] - pred) % 256)
        lines.append(bytes(out))
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    body = zlib.compress(b"".join(lines))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body[:50]) + chunk(b"IDAT", body[50:])
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape, dtype", [((23, 17, 3), np.uint8), ((19, 13), np.uint16), ((11, 9, 4), np.uint8),
                                          ((12, 7, 2), np.uint16)])
def test_every_row_filter_is_undone(tmp_path, shape, dtype):
    top = 65535 if dtype == np.uint16 else 255
    x = RNG.integers(0, top + 1, shape).astype(dtype)
    path = tmp_path / "f.png"
    path.write_bytes(filtered_png(x))
    got_shape, got_dtype, _, layout = open_png(path, None)
    assert got_shape == x.shape and got_dtype == dtype
    reader = PngReader(path, got_shape, got_dtype, layout)
    got = np.concatenate([reader.pixels(reader.take(np.arange(a, min(a + 4, shape[0])), a))
                          for a in range(0, shape[0], 4)])
    reader.close()
    assert np.array_equal(got, x)


def save_png(path, x, **kw):
    Image.fromarray(x).save(path, **kw)
    return path


def whole_and_banded(tmp_path, src, stages, rows, out="png"):
    whole, banded = tmp_path / f"whole.{out}", tmp_path / f"banded.{out}"
    files.apply_file(src, whole, stages)
    report = tiled.run(src, banded, stages, tile_rows=rows)
    return np.asarray(Image.open(whole)), np.asarray(Image.open(banded)), report


CASES = [("sharpen", 1, "same", "zero", 1, None),
         ("box:4", 2, "same", "reflect", 1, None),
         ("gaussian:1.5", 1, "full", "wrap", 1, Pool("max", 3, 2)),
         ("edge", 3, "valid", "edge", 2, Pool("avg", 2, None)),
         ("box:5", 1, 6, "reflect101", 1, None)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[1]}-{c[2]}-{c[3]}")
def test_png_bands_equal_the_in_memory_path(tmp_path, case):
    name, stride, padding, mode, dilation, pool = case
    src = save_png(tmp_path / "in.png", RNG.integers(0, 256, (33, 27, 3)).astype(np.uint8), optimize=True)
    conv, _ = make_conv(name, stride, padding, mode, dilation)
    for rows in (1, 4, None):
        whole, banded, report = whole_and_banded(tmp_path, src, Stages(conv, relu=True, pool=pool), rows)
        assert np.array_equal(banded, whole), (rows, case)
        if rows:
            assert report.bands == -(-whole.shape[0] // rows)


@pytest.mark.parametrize("kind", ["rgba", "gray16", "palette", "palette-alpha", "gray1", "palette2"])
def test_modes(tmp_path, kind):
    x = RNG.integers(0, 256, (26, 21, 4)).astype(np.uint8)
    if kind == "rgba":
        img = Image.fromarray(x)
    elif kind == "gray16":
        img = Image.fromarray(x[..., 0].astype(np.uint16) * 257)
    elif kind == "palette":
        img = Image.fromarray(x[..., :3]).quantize(16)
    elif kind == "gray1":
        img = Image.fromarray(x[..., 0] > 128)
    elif kind == "palette2":
        img = Image.fromarray(x[..., :3]).quantize(4)
    else:
        img = Image.fromarray(x).quantize(16)
    src = tmp_path / "in.png"
    img.save(src)
    conv, _ = make_conv("gaussian:1", 1, "same", "reflect")
    whole, banded, _ = whole_and_banded(tmp_path, src, Stages(conv, alpha="premultiply"), 3)
    assert banded.dtype == whole.dtype and banded.shape == whole.shape
    assert np.array_equal(banded, whole)
    whole_t, banded_t, _ = whole_and_banded(tmp_path, src, Stages(conv), 5, out="tif")
    assert np.array_equal(banded_t, whole_t)


def test_png_output_is_one_valid_stream_across_bands(tmp_path):
    x = RNG.integers(0, 256, (40, 600, 3)).astype(np.uint8)
    x[10:30] = 7  # compressible rows too
    path = tmp_path / "out.png"
    sink = PngRows(path, x.shape, x.dtype, {}, level=6)
    for a in (0, 9, 10, 33):
        sink.write(x[a:{0: 9, 9: 10, 10: 33, 33: 40}[a]])
    sink.close()
    assert np.array_equal(np.asarray(Image.open(path)), x)
    data = path.read_bytes()  # zlib's own checks (adler32) on the joined IDAT data
    idat, pos = b"", 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    assert len(zlib.decompress(idat)) == 40 * (600 * 3 + 1)


def test_interlaced_and_npy_refusals(tmp_path):
    src = save_png(tmp_path / "in.png", RNG.integers(0, 256, (20, 20)).astype(np.uint8))
    data = bytearray(src.read_bytes())
    data[28] = 1  # IHDR's interlace byte
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    inter = tmp_path / "inter.png"
    inter.write_bytes(bytes(data))
    conv, _ = make_conv("sharpen")
    with pytest.raises(ImageReadError, match="interlaced"):
        tiled.run(inter, tmp_path / "o.png", Stages(conv), tile_rows=4)
    with pytest.raises(UsageError, match="into a PNG or TIFF file"):
        tiled.run(src, tmp_path / "o.npy", Stages(conv), tile_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "inter.png"]


def test_truncated_png_fails_without_output(tmp_path, run_installed):
    src = save_png(tmp_path / "in.png", RNG.integers(0, 256, (60, 50, 3)).astype(np.uint8))
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    got = run_installed(["apply", "sharpen", src, tmp_path / "out.png", "--tile-rows", "8"])
    assert got.returncode == 1 and b"truncated PNG" in got.stderr, got.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_command_png_to_png_in_bands(tmp_path, run_installed):
    src = save_png(tmp_path / "in.png", RNG.integers(0, 256, (45, 31, 3)).astype(np.uint8))
    for name, extra in (("whole.png", []), ("banded.png", ["--tile-rows", "6"])):
        got = run_installed(["apply", "emboss", src, tmp_path / name, "--pad-mode", "wrap"] + extra)
        assert got.returncode == 0, got.stderr
    assert b"bands of 6 rows" in got.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "banded.png")),
                          np.asarray(Image.open(tmp_path / "whole.png")))
