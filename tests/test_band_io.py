"""How a TIFF goes in bands: tiles decoded once even when two bands ask at
once, decoded on several threads into their places, compressed on several
threads into the tiles tifffile would write itself, and automatic bands
that are not mostly halo on a wide picture."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from kernelcli import engine  # noqa: E402
from kernelcli.io import tiff_rows  # noqa: E402
from kernelcli.run import bands, tiled  # noqa: E402
from kernelcli.stages import Stages, make_conv  # noqa: E402

from .reference import correlate_ref  # noqa: E402
from .test_streaming import _count_decoded_tiles, picture, whole_and_banded, write_tiff  # noqa: E402


def test_two_bands_asking_for_one_tile_row_at_once_decode_it_once(tmp_path, monkeypatch):
    x = picture((32, 48, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    monkeypatch.setattr(tiff_rows, "_kept", [])
    decoded = _count_decoded_tiles(monkeypatch)
    shape, dtype, _ = tiff_rows.open_tiff(src, None)
    started, go, waiting = threading.Event(), threading.Event(), threading.Event()
    real_decode_block = tiff_rows._decode_block

    def slow_first(*args):  # the first band's decoding waits until the second band waits for it
        started.set()
        assert go.wait(60)
        return real_decode_block(*args)

    real_result = Future.result

    def result(self, timeout=None):
        if threading.current_thread().name == "second":
            waiting.set()
        return real_result(self, timeout)

    monkeypatch.setattr(tiff_rows, "_decode_block", slow_first)
    monkeypatch.setattr(Future, "result", result)
    got = {}

    def read(name, a, b):
        got[name] = tiff_rows.read_tiff_rows(src, shape, dtype, a, b)

    first = threading.Thread(target=read, args=("first", 0, 10), name="first")
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=read, args=("second", 4, 16), name="second")
    second.start()
    assert waiting.wait(60)  # the second band waits for the first one's decoding...
    go.set()
    first.join(60)
    second.join(60)
    assert np.array_equal(got["first"], x[0:10]) and np.array_equal(got["second"], x[4:16])
    assert sorted(decoded) == [0, 1, 2]  # ...instead of decoding the tile row again


def test_a_failed_decoding_is_not_kept(tmp_path, monkeypatch):
    x = picture((16, 16))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    monkeypatch.setattr(tiff_rows, "_kept", [])
    shape, dtype, _ = tiff_rows.open_tiff(src, None)
    real = tiff_rows._decode_block
    monkeypatch.setattr(tiff_rows, "_decode_block", lambda *a: (_ for _ in ()).throw(ValueError("bad tile")))
    with pytest.raises(Exception, match="bad tile"):
        tiff_rows.read_tiff_rows(src, shape, dtype, 0, 5)
    monkeypatch.setattr(tiff_rows, "_decode_block", real)
    assert np.array_equal(tiff_rows.read_tiff_rows(src, shape, dtype, 0, 5), x[:5])


@pytest.mark.parametrize("cpus", [1, 3])
def test_tiles_decoded_on_threads_land_in_their_places(tmp_path, monkeypatch, cpus):
    """Many tiles across (ragged at the right and bottom), planar and not:
    each decoded tile is copied into its own place, also into a float32 band."""
    monkeypatch.setattr(tiff_rows, "_kept", [])
    monkeypatch.setattr(tiff_rows, "_pool", [])
    monkeypatch.setattr("kernelcli.config.cpus", lambda: cpus)
    x = picture((45, 83, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(x, 2, 0).copy(), photometric="rgb", planarconfig="separate",
                     tile=(16, 16), compression="zlib")
    for path in (src, planar):
        shape, dtype, _ = tiff_rows.open_tiff(path, None)
        assert np.array_equal(tiff_rows.read_tiff_rows(path, shape, dtype, 3, 41), x[3:41])
        into = np.full((38,) + x.shape[1:], -1, np.float32)
        tiff_rows.read_tiff_rows(path, shape, dtype, 3, 41, into)
        assert np.array_equal(into, x[3:41].astype(np.float32))
    assert bool(tiff_rows._pool) == (cpus > 1)


@pytest.mark.parametrize("compression", ["deflate", "zstd", "jpeg"])
def test_tiles_compressed_on_threads_are_tifffiles_own(tmp_path, compression):
    """Compressed on several threads, the file's tiles are the bytes tifffile
    writes compressing them one by one."""
    x = picture((70, 90, 3))
    out = tmp_path / "threads.tif"
    sink = tiff_rows.TiffRows(out, x.shape, np.uint8, "RGB", tiff_rows.tiff_layout(x.shape, np.uint8, 32,
                                                                                     compression), {})
    for r in range(0, 70, 9):
        sink.write(x[r:r + 9])
    sink.close()
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, x, photometric="rgb", tile=(32, 32), compression=compression, metadata=None,
                     maxworkers=1)

    def tiles(path):
        with tifffile.TiffFile(path) as tif:
            page, fh = tif.pages.first, tif.filehandle
            found = []
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                fh.seek(offset)
                found.append(fh.read(count))
            return found
    assert tiles(out) == tiles(one)


def test_automatic_bands_of_a_wide_picture_are_not_mostly_halo(tmp_path, monkeypatch):
    """A picture so wide that the band budget holds a row or two: bands of
    at least a few times the kernel's reach, with the pixels of the whole path."""
    x = picture((60, 700, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    monkeypatch.setattr(tiled, "PICTURE_BAND_BYTES", 700 * 3 * 4 * 8)  # 8 input rows of float32
    conv, _ = make_conv("gaussian:1.5")  # 11 rows: alone, a band of 1 row reads 11
    whole, banded, report = whole_and_banded(tmp_path, src, Stages(conv), None)
    assert report.rows_per_band == tiled.HALO_SHARE * 11
    assert np.array_equal(banded, whole)
    pads = ((5, 5), (5, 5))
    want = np.stack([correlate_ref(x[..., c].astype(np.float64), conv.kernels[0].values, (1, 1), pads)
                     for c in range(3)], -1)
    assert np.abs(banded - np.clip(np.floor(want + 0.5), 0, 255)).max() <= 1  # float32 sums vs float64


def test_a_band_away_from_the_edges_reads_its_rows_straight_into_place(tmp_path, monkeypatch):
    """The band's float32 rows are filled by the TIFF reader itself (no uint8 copy gathered again),
    and bands at the edges, whose padding reads rows twice, still gather."""
    x = picture((40, 20, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    source = tiled.open_source(src)
    conv, _ = make_conv("box:5", pad_mode="reflect")
    job, _ = bands.plan(source, conv)
    calls = []
    real = tiff_rows.read_tiff_rows

    def spy(path, shape, dtype, first, stop, out=None):
        calls.append(out is not None)
        return real(path, shape, dtype, first, stop, out)

    monkeypatch.setattr(tiff_rows, "read_tiff_rows", spy)
    middle = bands.band_input(job, 10, 20)
    assert calls == [True]
    assert np.array_equal(middle, x[8:22].astype(np.float32))
    top = bands.band_input(job, 0, 5)
    assert calls[1:] == [False]
    assert np.array_equal(top, x[engine.source_index(40, (2, 2), "reflect")[:9]].astype(np.float32))


@pytest.mark.parametrize("limit, loads", [(0, True), (10**12, False)])
def test_a_file_whose_bands_add_up_to_much_work_loads_numba_first(tmp_path, monkeypatch, limit, loads):
    """Each band alone is small work (the NumPy twins' size); the whole file's
    decides, for an integer kernel too (a file's bands never take the int16 path)."""
    from kernelcli.engine import backends, plan

    src = write_tiff(tmp_path / "in.tif", picture((20, 30, 3)), rowsperstrip=4)
    monkeypatch.setattr(backends, "numba_loaded", lambda: False)
    monkeypatch.setattr(plan, "NUMPY_MAX_BANDED_WORK", limit)
    loaded = []
    monkeypatch.setattr(engine, "load_numba", lambda: loaded.append(True))
    conv, _ = make_conv("sharpen")
    assert not engine.numba_ahead(conv.kernels, conv.flip, (20, 30, 3), 1, "same", 1)  # int16 in memory
    whole, banded, _ = whole_and_banded(tmp_path, src, Stages(conv), None)
    assert np.array_equal(banded, whole)
    assert bool(loaded) == loads


def test_the_tiff_is_opened_once_a_thread_and_closed_after_the_run(tmp_path, monkeypatch):
    x = picture((90, 40, 3))
    src = write_tiff(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
    opened = []
    real = tifffile.TiffFile

    class Counting(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            opened.append(self)

    monkeypatch.setattr(tifffile, "TiffFile", Counting)
    conv, _ = make_conv("box:3")
    whole, banded, report = whole_and_banded(tmp_path, src, Stages(conv), 2)
    assert np.array_equal(banded, whole) and report.bands == 45
    readers = [t for t in opened if t.filehandle.path == str(src)]
    assert 1 < len(readers) <= 2 + 2  # open_source's, the probe's (this thread), one a band thread: not 45
    assert all(t.filehandle.closed for t in opened)
    assert not [key for key, _ in tiff_rows._all_open if key[0] == str(src)]


def test_a_tiff_replaced_between_reads_is_read_anew(tmp_path):
    src = write_tiff(tmp_path / "in.tif", picture((20, 16)), rowsperstrip=4)
    shape, dtype, _ = tiff_rows.open_tiff(src, None)
    tiff_rows.read_tiff_rows(src, shape, dtype, 0, 8)
    y = picture((20, 16))
    write_tiff(tmp_path / "new.tif", y, rowsperstrip=4).replace(src)
    assert np.array_equal(tiff_rows.read_tiff_rows(src, shape, dtype, 0, 8), y[:8])
    tiff_rows.forget_open_files(src)


def test_rows_waiting_for_a_whole_tile_row_hold_no_written_block(tmp_path):
    """The rows left over after a tile row is handed to the writer are their
    own copy, not a view that keeps the whole block in memory."""
    x = picture((40, 24, 3))
    out = tmp_path / "o.tif"
    sink = tiff_rows.TiffRows(out, x.shape, np.uint8, "RGB", tiff_rows.tiff_layout(x.shape, np.uint8, 16, "deflate"),
                              {})
    sink.write(x[:10])
    sink.write(x[10:20])  # 16 rows go to the writer, 4 wait
    assert len(sink._held) == 1 and sink._held[0].base is None and sink._held[0].shape[0] == 4
    sink.write(x[20:])
    sink.close()
    assert np.array_equal(tifffile.imread(out), x)


def _png_of_filters(pixels: np.ndarray, kinds) -> bytes:
    """A PNG whose row r uses filter ``kinds[r % len(kinds)]`` (None, Sub or Up), filtered by a plain loop."""
    import struct
    import zlib

    h = pixels.shape[0]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    depth = pixels.dtype.itemsize * 8
    raw = pixels.astype(pixels.dtype.newbyteorder(">")).view(np.uint8).reshape(h, -1).astype(int)
    bpp = channels * depth // 8
    lines = []
    for r in range(h):
        kind, line = kinds[r % len(kinds)], raw[r]
        above = raw[r - 1] if r else np.zeros_like(line)
        pred = [[0] * len(line), [line[i - bpp] if i >= bpp else 0 for i in range(len(line))], above][kind]
        lines.append(bytes([kind] + [(int(v) - int(p)) % 256 for v, p in zip(line, pred)]))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", pixels.shape[1], h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(lines)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape, dtype, kinds", [((21, 13, 3), np.uint8, (0, 1, 2)), ((17, 9), np.uint16, (1, 2)),
                                                 ((15, 11, 4), np.uint8, (2, 1, 0, 3, 4))])
def test_png_rows_of_none_sub_and_up_filters_are_undone_with_numpy(tmp_path, monkeypatch, shape, dtype, kinds):
    from kernelcli.io import png_rows

    from .test_png_rows import filtered_png

    x = picture(shape, dtype)
    path = tmp_path / "f.png"
    path.write_bytes(_png_of_filters(x, kinds) if max(kinds) <= 2 else filtered_png(x))
    simple = []
    real = png_rows.unfilter_simple_rows
    monkeypatch.setattr(png_rows, "unfilter_simple_rows", lambda *a: simple.append(1) or real(*a))
    got_shape, got_dtype, _, layout = png_rows.open_png(path, None)
    reader = png_rows.PngReader(path, got_shape, got_dtype, layout)
    got = np.concatenate([reader.pixels(reader.take(np.arange(a, min(a + 4, shape[0])), a))
                          for a in range(0, shape[0], 4)])
    reader.close()
    assert np.array_equal(got, x)
    assert bool(simple) == (max(kinds) <= 2)  # Average or Paeth rows go to the compiled loop


def test_unfilter_simple_rows_stops_at_another_filter():
    from kernelcli.io.png_rows import unfilter_simple_rows

    lines = np.array([[1, 5, 6], [2, 1, 1], [4, 0, 0]], np.uint8)
    out = np.zeros((3, 2), np.uint8)
    assert unfilter_simple_rows(lines, 1, np.zeros(2, np.uint8), out) == 2
    assert out[:2].tolist() == [[5, 11], [6, 12]]


def test_a_png_of_simple_filters_goes_in_bands_without_loading_numba(tmp_path):
    """Rows filtered with None, Sub and Up only (as Pillow often writes them),
    and a small kernel the NumPy loops compute: Numba is never loaded."""
    import subprocess
    import sys

    from PIL import Image

    x = picture((40, 30, 3))
    src = tmp_path / "in.png"
    src.write_bytes(_png_of_filters(x, (1, 2, 0)))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kernelcli", "apply", "box:3", src,
                           tmp_path / "out.png", "--tile-rows", "8"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "kernelcli.io.png_rows" in imported and "numba" not in imported
    whole = tmp_path / "whole.png"
    assert subprocess.run([sys.executable, "-m", "kernelcli", "apply", "box:3", src, whole], timeout=120).returncode == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(whole)))
