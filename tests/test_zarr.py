"""Zarr and OME-Zarr stores in bands: read a chunk row at a time, written in
chunks of whole bands.

Band outputs are compared bit for bit with the in-memory path on the same
pixels (a TIFF read whole by Pillow), which is itself tested against the
plain-loop reference; one case goes straight to the reference. Small stores
with small chunks and bands of a few rows put seams everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

from kernelcli import engine  # noqa: E402
from kernelcli.errors import ImageReadError, ImageWriteError, UsageError  # noqa: E402
from kernelcli.io import zarr_store  # noqa: E402
from kernelcli.io.inputs import band_kind  # noqa: E402
from kernelcli.kernels import Kernel  # noqa: E402
from kernelcli.run import files, tiled  # noqa: E402
from kernelcli.stages import Pool, Stages, make_conv  # noqa: E402

from .reference import correlate_ref  # noqa: E402

RNG = np.random.default_rng(23)


def picture(shape, dtype=np.uint8):
    top = 65535 if dtype == np.uint16 else 255
    return RNG.integers(0, top + 1, shape).astype(dtype)


def write_zarr(path, x, chunks=(8, 16), fmt=3, **kw):
    chunks = tuple(chunks) + tuple(x.shape[2:])
    array = zarr.create_array(store=str(path), shape=x.shape, dtype=x.dtype, chunks=chunks, zarr_format=fmt,
                              **kw)
    array[...] = x
    return path


def write_ome(path, x, axes, fmt=2, scale=None):
    """An OME-Zarr image of ``x`` (``H x W x C``) stored in ``axes`` order (names of t, c, z, y, x)."""
    group = zarr.open_group(store=str(path), mode="w", zarr_format=fmt)
    have = ["y", "x", "c"][:x.ndim]
    data = x
    for a in axes:
        if a not in have:
            data, have = data[..., None], have + [a]
    data = data.transpose([have.index(a) for a in axes])
    chunks = tuple(8 if a == "y" else 16 if a == "x" else s for a, s in zip(axes, data.shape))
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks)[...] = data
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    entry = {"axes": [{"name": a, "type": kinds[a]} for a in axes],
             "datasets": [{"path": "0", "coordinateTransformations": [
                 {"type": "scale", "scale": scale or [1.0] * len(axes)}]}]}
    if fmt == 2:
        group.attrs["multiscales"] = [dict(entry, version="0.4")]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [entry]}
    return path


def write_tiff(path, pixels):
    photometric = "rgb" if pixels.ndim == 3 and pixels.shape[2] >= 3 else "minisblack"
    extras = ["unassalpha"] if pixels.ndim == 3 and pixels.shape[2] in (2, 4) else None
    tifffile.imwrite(path, pixels, photometric=photometric, extrasamples=extras, metadata=None)
    return path


def whole(tmp_path, x, stages, name="whole.tif"):
    """The in-memory path on the same pixels (a TIFF read whole by Pillow)."""
    src = write_tiff(tmp_path / "same.tif", x)
    files.apply_file(src, tmp_path / name, stages)
    return tifffile.imread(tmp_path / name)


def read_store(path):
    return zarr.open_array(store=str(path), mode="r")[...]


# kernel, stride, padding, pad mode, dilation, pool
CASES = [
    ("sharpen", 1, "same", "zero", 1, None),
    ("box:4", 2, "same", "reflect", 1, None),
    ("gaussian:1.5", 1, "full", "wrap", 1, Pool("max", 3, 2)),
    ("edge", 3, "valid", "edge", 2, Pool("avg", 2, None)),
    ("box:5", 2, 3, "reflect101", 1, Pool("sum", 2, 1)),
    ("1,2;3,-4", (2, 1), (0, 2), "zero", (1, 2), Pool("max", (3, 1), (1, 2))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[1]}-{c[2]}-{c[3]}")
@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_bands_equal_the_in_memory_path(tmp_path, case, fmt):
    name, stride, padding, mode, dilation, pool = case
    x = picture((37, 29, 3))
    src = write_zarr(tmp_path / "in.zarr", x, (5, 16), fmt)
    conv, _ = make_conv(name, stride, padding, mode, dilation)
    stages = Stages(conv, relu=True, pool=pool)
    want = whole(tmp_path, x, stages)
    for rows in (1, 4, None):
        out = tmp_path / f"out{rows}.zarr"
        report = tiled.run(src, out, stages, tile_rows=rows)
        got = zarr.open_array(store=str(out), mode="r")
        assert got.metadata.zarr_format == fmt  # the input's format
        assert got.dtype == np.uint8 and np.array_equal(got[...], want), (rows, case)
        if rows:
            assert report.bands == -(-want.shape[0] // rows)
            assert got.chunks[0] == min(rows, want.shape[0])  # chunks of whole bands
    tiled.run(src, tmp_path / "banded.tif", stages, tile_rows=3)  # Zarr into a TIFF
    assert np.array_equal(tifffile.imread(tmp_path / "banded.tif"), want)


@pytest.mark.parametrize("shape, dtype, kernel, steps", [
    ((33, 21), np.uint16, "gaussian:1", {}),  # 16-bit gray stays 16-bit
    ((26, 19, 4), np.uint8, "gaussian:1", {"alpha": "premultiply"}),  # RGBA
    ((25, 17, 3), np.uint16, "sharpen", {"gray": True}),
    ((22, 18), np.uint8, "sobel-x,sobel-y", {}),  # a bank: its maps as float32 values, as in a .npy
    ((22, 18, 3), np.uint8, "edge,sobel-x,sobel-y", {}),
])
def test_bit_depths_alpha_gray_and_banks(tmp_path, shape, dtype, kernel, steps):
    x = picture(shape, dtype)
    src = write_zarr(tmp_path / "in.zarr", x, (4, 8))
    conv, _ = make_conv(kernel, 1, "same", "reflect")
    if "," in kernel:
        files.apply_file(write_tiff(tmp_path / "same.tif", x), tmp_path / "whole.npy", Stages(conv, **steps))
        want = np.load(tmp_path / "whole.npy")
    else:
        want = whole(tmp_path, x, Stages(conv, **steps))
    tiled.run(src, tmp_path / "out.zarr", Stages(conv, **steps), tile_rows=3)
    got = read_store(tmp_path / "out.zarr")
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_float_stores_read_as_values_into_npy_and_zarr(tmp_path):
    """float64 samples are values, as in a .npy: the same float32 numbers as the .npy's whole path."""
    x = RNG.standard_normal((29, 22, 3))
    src = write_zarr(tmp_path / "in.zarr", x, (6, 10), 2)
    np.save(tmp_path / "in.npy", x.astype(np.float32))
    conv, _ = make_conv("sobel-x", 1, "same", "edge")
    files.apply_file(tmp_path / "in.npy", tmp_path / "whole.npy", Stages(conv))
    tiled.run(src, tmp_path / "banded.npy", Stages(conv), tile_rows=4)
    want = np.load(tmp_path / "whole.npy")
    assert np.array_equal(np.load(tmp_path / "banded.npy"), want)
    tiled.run(src, tmp_path / "banded.zarr", Stages(conv), tile_rows=4)
    got = read_store(tmp_path / "banded.zarr")
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_against_the_plain_reference(tmp_path):
    """Independent of the in-memory engine: the reference loop, rounded and clipped to 8 bits."""
    x = picture((23, 31))
    k = RNG.integers(-3, 4, (3, 4)).astype(np.float32)
    src = write_zarr(tmp_path / "in.zarr", x, (4, 8))
    conv, _ = make_conv([Kernel("k", k)], (2, 1), "same", "reflect", 1)
    tiled.run(src, tmp_path / "out.zarr", Stages(conv), tile_rows=2)
    pads, _ = engine.geometry(x.shape, k.shape, (2, 1), "same", 1)
    want = np.clip(np.floor(correlate_ref(x, k, (2, 1), pads, "reflect") + 0.5), 0, 255)
    assert np.array_equal(read_store(tmp_path / "out.zarr"), want.astype(np.uint8))


def test_pictures_and_arrays_into_a_zarr_store(tmp_path):
    """TIFF, PNG and .npy inputs into a Zarr output: the bytes of their whole path."""
    from PIL import Image

    x = picture((27, 20, 3))
    conv, _ = make_conv("emboss", 1, "same", "edge")
    want = whole(tmp_path, x, Stages(conv))
    Image.fromarray(x).save(tmp_path / "in.png")
    for src in (tmp_path / "same.tif", tmp_path / "in.png"):
        tiled.run(src, tmp_path / "out.zarr", Stages(conv), tile_rows=4)
        assert np.array_equal(read_store(tmp_path / "out.zarr"), want), src
    np.save(tmp_path / "in.npy", x.astype(np.float32))
    files.apply_file(tmp_path / "in.npy", tmp_path / "whole.npy", Stages(conv))
    tiled.run(tmp_path / "in.npy", tmp_path / "npy.zarr", Stages(conv), tile_rows=5)
    assert np.array_equal(read_store(tmp_path / "npy.zarr"), np.load(tmp_path / "whole.npy"))


@pytest.mark.parametrize("axes, fmt", [(("t", "c", "z", "y", "x"), 2), (("c", "y", "x"), 3), (("y", "x"), 2)])
def test_ome_zarr_images_in_and_out(tmp_path, axes, fmt):
    x = picture((30, 21, 3) if "c" in axes else (30, 21))
    src = write_ome(tmp_path / "in.ome.zarr", x, axes, fmt, scale=[0.5] * len(axes))
    conv, _ = make_conv("sharpen", 2, "same", "reflect")
    stages = Stages(conv, relu=True)
    want = whole(tmp_path, x, stages)
    assert band_kind(src) == "zarr"
    report = tiled.run(src, tmp_path / "out.zarr", stages, tile_rows=4)
    assert report.shape == want.shape
    group = zarr.open_group(store=str(tmp_path / "out.zarr"), mode="r")
    attrs = group.attrs.asdict()
    entry = attrs["multiscales"][0] if fmt == 2 else attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in entry["axes"]] == list(axes)
    assert (entry.get("version") or attrs["ome"]["version"]) == ("0.4" if fmt == 2 else "0.5")
    scale = entry["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[axes.index("y")] == scale[axes.index("x")] == 1.0  # 0.5 per pixel, stride 2
    stored = group["0"]
    assert stored.metadata.zarr_format == fmt
    assert np.array_equal(zarr_store.read_zarr_rows(tmp_path / "out.zarr", want.shape, want.dtype, 0,
                                                    want.shape[0], zarr_store.open_zarr(tmp_path / "out.zarr",
                                                                                        None)[3]), want)


def test_a_bank_on_a_gray_ome_image_gets_a_channel_axis(tmp_path):
    x = picture((20, 16))
    src = write_ome(tmp_path / "in.zarr", x, ("z", "y", "x"), 3)
    conv, _ = make_conv("sobel-x,sobel-y", 1, "same", "edge")
    tiled.run(src, tmp_path / "out.zarr", Stages(conv), tile_rows=6)
    attrs = zarr.open_group(store=str(tmp_path / "out.zarr"), mode="r").attrs.asdict()
    assert [a["name"] for a in attrs["ome"]["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert zarr.open_array(store=str(tmp_path / "out.zarr"), path="0", mode="r").shape == (2, 1, 20, 16)


def test_only_the_chunks_a_band_touches_are_read(tmp_path, monkeypatch):
    x = picture((64, 20))
    src = write_zarr(tmp_path / "in.zarr", x, (8, 20))
    shape, dtype, _, layout = zarr_store.open_zarr(src, None)
    asked = []
    real = zarr_store._rows
    monkeypatch.setattr(zarr_store, "_rows", lambda a, lay, s, y0, y1: asked.append((y0, y1)) or real(a, lay, s,
                                                                                                        y0, y1))
    rows = zarr_store.read_zarr_rows(src, shape, dtype, 17, 26, layout)
    assert np.array_equal(rows, x[17:26])
    assert asked == [(16, 24), (24, 32)]  # two chunk rows of eight, each decoded once
    zarr_store.read_zarr_rows(src, shape, dtype, 26, 30, layout)
    assert asked == [(16, 24), (24, 32)]  # kept for the next band


# --------------------------------------------------------------------------
# the command


@pytest.fixture
def kcli(run_installed):
    return lambda *args, **kw: run_installed(list(args), **kw)


def test_command_zarr_goes_in_bands_by_itself(tmp_path, kcli):
    x = picture((40, 30, 3))
    write_zarr(tmp_path / "in.zarr", x, (16, 16), 2)
    want = whole(tmp_path, x, Stages(make_conv("sharpen")[0]))
    proc = kcli("apply", "sharpen", tmp_path / "in.zarr", tmp_path / "out.zarr")
    assert proc.returncode == 0, proc.stderr
    assert b"bands of" in proc.stderr and b"40x30x3 written" in proc.stderr
    assert np.array_equal(read_store(tmp_path / "out.zarr"), want)
    proc = kcli("apply", "sharpen", tmp_path / "in.zarr", tmp_path / "out.zarr", "--tile-rows", "7")
    assert proc.returncode == 0 and b"6 bands of 7 rows" in proc.stderr, proc.stderr
    assert zarr.open_array(store=str(tmp_path / "out.zarr"), mode="r").chunks == (7, 30, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr", "same.tif", "whole.tif"]


def test_info_and_several_inputs_take_a_store_as_one_input(tmp_path, kcli):
    x = picture((12, 10, 3))
    write_zarr(tmp_path / "a.zarr", x, (4, 10))
    plain = tmp_path / "plain"  # a store by its metadata file, not its name
    write_zarr(plain, x, (4, 10), 2)
    proc = kcli("info", tmp_path / "a.zarr", plain, "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert [(f["format"], f["width"], f["height"], f["mode"], f["bits"]) for f in facts] == [
        ("ZARR", 10, 12, "RGB", 8)] * 2
    proc = kcli("apply", "box:3", tmp_path / "a.zarr", plain, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.zarr", "plain.zarr"]
    assert np.array_equal(read_store(tmp_path / "out" / "a.zarr"), read_store(tmp_path / "out" / "plain.zarr"))
    proc = kcli("apply", "box:3", plain, tmp_path / "one.png")  # a store with no .zarr name, into a PNG
    assert proc.returncode == 0, proc.stderr


def make_hostile(tmp_path, kind):
    path = tmp_path / "bad.zarr"
    if kind == "empty folder":
        path.mkdir()
    elif kind == "garbled metadata":
        path.mkdir()
        (path / "zarr.json").write_text("{garbled")
    elif kind == "corrupt chunk":
        write_zarr(path, picture((20, 10)), (4, 10), 2, compressors=None)
        (path / "2.0").write_bytes(b"\x00")
    elif kind == "huge shape":
        zarr.create_array(store=str(path), shape=(400_000, 500_000), dtype="uint8", chunks=(256, 256))
    elif kind == "a volume":
        write_ome(path, picture((20, 10)), ("z", "y", "x"), 2)
        group = zarr.open_group(store=str(path), mode="r+")
        group.create_array("0", shape=(3, 20, 10), dtype="uint8", chunks=(1, 8, 10), overwrite=True)
    elif kind == "a group without multiscales":
        zarr.open_group(store=str(path), mode="w").create_array("0", shape=(4, 4), dtype="uint8")
    elif kind == "four axes":
        zarr.create_array(store=str(path), shape=(2, 4, 4, 3), dtype="uint8")
    return path


@pytest.mark.parametrize("kind, message", [
    ("empty folder", "bad.zarr: not a readable Zarr store: "),
    ("garbled metadata", "bad.zarr: not a readable Zarr store: "),
    ("corrupt chunk", "bad.zarr: cannot decode rows "),
    ("huge shape", "bad.zarr: image claims 500000x400000 = 200,000,000,000 pixels, over the limit"),
    ("a volume", "bad.zarr: its 'z' axis has 3 planes"),
    ("a group without multiscales", "bad.zarr: a Zarr group with no OME-Zarr multiscales metadata"),
    ("four axes", "bad.zarr: a Zarr array of shape (2, 4, 4, 3) is not a picture"),
])
def test_hostile_stores_are_one_line_errors(tmp_path, run_cli, kind, message):
    src = make_hostile(tmp_path, kind)
    result = run_cli(["apply", "sharpen", src, tmp_path / "out.zarr", "--tile-rows", "3"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernelcli: error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zarr"]  # nothing written, nothing left


def test_without_the_zarr_package_a_one_line_error(tmp_path):
    write_zarr(tmp_path / "in.zarr", picture((8, 8)), (4, 8))
    code = ("import sys; sys.modules['zarr'] = None; from kernelcli.cli import main; "
            f"main(['apply', 'sharpen', {str(tmp_path / 'in.zarr')!r}, {str(tmp_path / 'o.png')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (f"kernelcli: error: {tmp_path / 'in.zarr'}: reading or writing Zarr "
                                            "needs the zarr package: pip install 'kernelcli[zarr]'")


def test_output_refusals_and_replacement(tmp_path, run_cli):
    x = picture((12, 9))
    src = write_zarr(tmp_path / "in.zarr", x, (4, 9))
    (tmp_path / "file.zarr").write_bytes(b"not a store")
    result = run_cli(["apply", "sharpen", src, tmp_path / "file.zarr"])
    assert result.exit_code == 1 and "file.zarr: exists and is not a store" in result.stderr
    assert (tmp_path / "file.zarr").read_bytes() == b"not a store"
    result = run_cli(["apply", "sharpen", tmp_path / "file.zarr", tmp_path / "x.png"])
    assert result.exit_code == 1, result.output  # a file named .zarr is not a store: read as a file
    for kernel in ("box:3", "sharpen"):  # an existing store is replaced whole
        assert run_cli(["apply", kernel, src, tmp_path / "out.zarr"]).exit_code == 0
    files.apply_file(write_tiff(tmp_path / "same.tif", x), tmp_path / "w.tif", Stages(make_conv("sharpen")[0]))
    assert np.array_equal(read_store(tmp_path / "out.zarr"), tifffile.imread(tmp_path / "w.tif"))
    result = run_cli(["apply", "sharpen", tmp_path / "same.tif", tmp_path / "o.zarr", "--scaling", "stretch"])
    assert result.exit_code == 2 and "--scaling stretch" in result.stderr
    from PIL import Image

    Image.fromarray(x).save(tmp_path / "in.jpg")
    result = run_cli(["apply", "sharpen", tmp_path / "in.jpg", tmp_path / "o.zarr"])
    assert result.exit_code == 2 and "a Zarr OUTPUT is written band by band from a .npy, TIFF, PNG or Zarr" \
        in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".o.zarr", "o.zarr", ".out.zarr"))]


def test_full_disk_is_refused_after_the_first_band(tmp_path, monkeypatch):
    import shutil as _shutil

    from kernelcli.run import zarr_bands

    src = write_zarr(tmp_path / "in.zarr", picture((40, 10)), (4, 10))
    usage = _shutil.disk_usage(tmp_path)
    monkeypatch.setattr(zarr_bands.shutil, "disk_usage", lambda p: usage._replace(free=100))
    with pytest.raises(ImageWriteError, match="the store needs about .* GiB"):
        tiled.run(src, tmp_path / "out.zarr", Stages(make_conv("sharpen")[0]), tile_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]


def test_a_failing_band_leaves_no_output(tmp_path, monkeypatch):
    from kernelcli.run import zarr_bands

    src = write_zarr(tmp_path / "in.zarr", picture((40, 10)), (4, 10))
    real = zarr_bands.compute_band

    def failing(job, f0, f1, *a, **kw):
        if f0 >= 20:
            raise ImageReadError("band failed")
        return real(job, f0, f1, *a, **kw)

    monkeypatch.setattr(zarr_bands, "compute_band", failing)
    with pytest.raises(ImageReadError, match="band failed"):
        tiled.run(src, tmp_path / "out.zarr", Stages(make_conv("sharpen")[0]), tile_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]


def test_usage_errors(tmp_path):
    src = write_zarr(tmp_path / "in.zarr", picture((10, 10)), (4, 10))
    with pytest.raises(UsageError, match="--tiff-tile and --tiff-compression are for a TIFF OUTPUT"):
        tiled.run(src, tmp_path / "o.zarr", Stages(make_conv("sharpen")[0]), tiff_tile=16)
    with pytest.raises(ImageReadError, match="over the limit"):
        tiled.run(src, tmp_path / "o.zarr", Stages(make_conv("sharpen")[0]), max_pixels=99)
    assert not os.path.exists(tmp_path / "o.zarr")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_leaves_no_store(tmp_path, sig):
    """The run is held mid-way by its input: one chunk of the input store is a
    FIFO that this test opens for writing (which waits until kernelcli opens
    it for reading), so bands are written and one is still reading when the
    signal comes, however fast the machine."""
    import signal
    import threading

    src = write_zarr(tmp_path / "in.zarr", picture((64, 10)), (8, 10), 2, compressors=None)
    os.remove(src / "4.0")
    os.mkfifo(src / "4.0")
    opened = []
    opener = threading.Thread(target=lambda: opened.append(open(src / "4.0", "wb")), daemon=True)
    opener.start()
    command = [sys.executable, "-m", "kernelcli", "apply", "sharpen", str(src), str(tmp_path / "out.zarr"),
               "--tile-rows", "8"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        opener.join(120)
        assert opened, "kernelcli never read the chunk"
        assert [p for p in tmp_path.iterdir() if p.name.endswith(".part")], "no store being written"
        proc.send_signal(getattr(signal, sig))
        opened[0].close()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr.decode(), stderr
    assert proc.returncode == (130 if sig == "SIGINT" else 143)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]
