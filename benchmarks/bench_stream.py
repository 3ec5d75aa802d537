"""Large pictures in bands against libvips: time and peak memory, same run.

    python benchmarks/bench_stream.py [--size 10000] [--tiff-size 20000] [--folder /tmp] [--jobs png,tiff,jpeg]
                                      [--tiff-kernels sharpen,gaussian:2] [--repeat 1] [--only png-bands,tiff]
                                      [--zarr-size 20000]

Writes, into FOLDER, a SIZE x SIZE RGB picture of smooth gradients with
seeded noise as PNG and JPEG, and a TIFF-SIZE x TIFF-SIZE one as a tiled
(256 x 256), deflate-compressed BigTIFF. Then, each under ``/usr/bin/time -v``
and one after the other, runs ``sharpen`` (and ``gaussian:2`` on the TIFF):

* PNG -> PNG: ``kernelcli apply sharpen`` in memory, with ``--tile-rows auto``
  (rows inflated and deflated as the bands come), and ``vips conv``;
* TIFF -> tiled deflate TIFF: kernelcli in bands and ``vips conv``
  (``[tile,compression=deflate,bigtiff]``);
* JPEG -> JPEG: kernelcli in strips (``--tile-rows auto``, needs the jpeg
  extra), kernelcli decoded whole, and ``vips conv`` (4:2:0, as kernelcli
  writes), alternately ``--repeat`` times (the files of the two kernelcli
  runs are compared byte for byte);
* Zarr -> Zarr (``--jobs zarr``, not run by default): a ZARR-SIZE x
  ZARR-SIZE RGB store of the same picture in zstd-compressed 1024 x 1024 x 3
  chunks (written on two threads), ``gaussian:2`` by kernelcli (always in
  bands) and, as the peer (libvips reads no Zarr), dask-image's way:
  ``dask.array.map_overlap`` of ``scipy.ndimage.gaussian_filter`` (sigma 2,
  the same 13 x 13 reach) from the store into a store, on two threads;

and prints wall time, CPU time (user + system), peak memory (maximum resident
set size) and the ratios kernelcli / vips. ``--only`` runs some rows alone
(``png-memory``, ``png-bands``, ``tiff``, ``jpeg``). For each TIFF output it
prints how it is compressed: the deflate level class its tiles' zlib headers
declare (kernelcli: libdeflate level 6 through imagecodecs; libvips: libtiff's
default, also 6) and the predictor (libvips uses the horizontal one by default,
kernelcli none), so that sizes and times are compared knowingly. vips gets the same integer mask (``sharpen.mat``;
``--precision integer``) or the same Gaussian (``gaussblur 2 --min-ampl
0.001``). The outputs of kernelcli's banded and in-memory runs are compared
where both are made.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def kernelcli_exe() -> list[str]:
    beside = Path(sys.executable).with_name("kernelcli")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "kernelcli"]


def timed(args: list) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds) of one command under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, args))}\n{proc.stderr[-2000:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    cpu = sum(float(re.search(rf"{what} time \(seconds\): ([\d.]+)", proc.stderr).group(1))
              for what in ("User", "System"))
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":")))), rss, cpu


def rows_of(size: int, r0: int, r1: int, seed: int) -> np.ndarray:
    """Rows r0..r1 of the test picture: gradients plus a little noise (compresses like a photo)."""
    y, x = np.mgrid[r0:r1, 0:size].astype(np.float32)
    noise = np.random.default_rng(seed + r0).normal(0, 6, (r1 - r0, size, 3)).astype(np.float32)
    base = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], -1)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_pictures(folder: Path, size: int, tiff_size: int, jobs: set) -> None:
    from PIL import Image

    if {"png", "jpeg"} & jobs and not (folder / "big.png").exists():
        img = Image.fromarray(rows_of(size, 0, size, 0))
        img.save(folder / "big.png", compress_level=1)
        img.save(folder / "big.jpg", quality=90)
        del img
    if "tiff" in jobs and not (folder / "big.tif").exists():
        import tifffile

        def tiles():
            for r in range(0, tiff_size, 256):
                band = rows_of(tiff_size, r, min(r + 256, tiff_size), 1)
                for c in range(0, tiff_size, 256):
                    yield band[:, c:c + 256]
        tifffile.imwrite(folder / "big.tif", tiles(), shape=(tiff_size, tiff_size, 3), dtype=np.uint8,
                         tile=(256, 256), compression="zlib", bigtiff=True, photometric="rgb")
    (folder / "sharpen.mat").write_text("3 3 1 0\n0 -1 0\n-1 5 -1\n0 -1 0\n")


def make_zarr(path: Path, size: int) -> float:
    """The test picture as a Zarr store in 1024 x 1024 x 3 zstd chunks, a
    chunk row at a time on two threads; returns the seconds it took."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import zarr
    from zarr.codecs import ZstdCodec

    started = time.monotonic()
    array = zarr.create_array(store=str(path), shape=(size, size, 3), dtype="uint8", chunks=(1024, 1024, 3),
                              compressors=ZstdCodec(level=1), fill_value=0, overwrite=True)

    def chunk_row(r0):
        array[r0:r0 + 1024] = rows_of(size, r0, min(r0 + 1024, size), 2)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(chunk_row, range(0, size, 1024)))
    return time.monotonic() - started


#: The peer of the Zarr job: a Gaussian by dask's map_overlap, chunk by chunk, store to store.
DASK_GAUSSIAN = """
import sys, dask, dask.array as da, numpy as np, scipy.ndimage as ndi, zarr
def blur(block):
    out = ndi.gaussian_filter(block.astype(np.float32), sigma=(2, 2, 0), truncate=3.0, mode="constant")
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
src = da.from_zarr(sys.argv[1])
out = src.map_overlap(blur, depth=(6, 6, 0), boundary=0, dtype=np.uint8)
with dask.config.set(scheduler="threads", num_workers=2):
    out.to_zarr(sys.argv[2], overwrite=True)
"""


def report(name: str, ours: tuple, vips: tuple | None) -> None:
    line = f"{name:<44} kernelcli {ours[0]:7.2f} s (cpu {ours[2]:6.1f} s) {ours[1]:6.0f} MB"
    if vips:
        line += (f" | vips {vips[0]:7.2f} s (cpu {vips[2]:6.1f} s) {vips[1]:6.0f} MB | time x{ours[0] / vips[0]:.2f}, "
                 f"memory x{ours[1] / vips[1]:.1f}")
    print(line, flush=True)


def compression(path: Path) -> str:
    """How a TIFF's first tile is compressed: codec, the zlib header's level class, predictor, file size."""
    import tifffile

    classes = {0: "fastest (1)", 1: "fast (2-5)", 2: "default (6)", 3: "best (7-9)"}
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        tif.filehandle.seek(page.dataoffsets[0])
        head = tif.filehandle.read(2)
        level = classes[head[1] >> 6] if page.compression in (8, 32946) else "-"
        predictor = {1: "none", 2: "horizontal", 3: "floating point"}.get(int(page.predictor), page.predictor)
        return (f"{path.name}: {page.compression.name}, level class {level}, predictor {predictor}, "
                f"{path.stat().st_size / 2**20:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--tiff-size", type=int, default=20000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/kernelcli-bench-stream"))
    parser.add_argument("--jobs", default="png,tiff,jpeg")
    parser.add_argument("--tiff-kernels", default="sharpen,gaussian:2", help="kernels run on the TIFF")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the JPEG job, alternating with vips")
    parser.add_argument("--zarr-size", type=int, default=20000)
    parser.add_argument("--only", default=None, help="rows to run: png-memory, png-bands, tiff, jpeg")
    args = parser.parse_args()
    jobs = set(args.jobs.split(","))
    only = set(args.only.split(",")) if args.only else {"png-memory", "png-bands", "tiff", "jpeg"}
    jobs = {j for j in jobs if j in {o.split("-")[0] for o in only}}
    args.folder.mkdir(parents=True, exist_ok=True)
    f, k = args.folder, kernelcli_exe()
    make_pictures(f, args.size, args.tiff_size, jobs)
    vips = shutil.which("vips")
    if vips is None:
        print("note: vips not found (apt-get install libvips-tools); its columns are left out")
    mat = ["--precision", "integer"]
    if "png" in jobs:
        whole = timed([*k, "apply", "sharpen", f / "big.png", f / "whole.png"]) if "png-memory" in only else None
        bands = timed([*k, "apply", "sharpen", f / "big.png", f / "bands.png", "--tile-rows", "auto"]) \
            if "png-bands" in only else None
        theirs = timed([vips, "conv", f / "big.png", f / "vips.png[compression=1]", f / "sharpen.mat", *mat]) \
            if vips else None
        if whole:
            report(f"PNG {args.size}^2 -> PNG, in memory", whole, theirs)
        if bands:
            report(f"PNG {args.size}^2 -> PNG, --tile-rows auto", bands, theirs)
        if whole and bands:
            _same(f / "whole.png", f / "bands.png")
    if "tiff" in jobs:
        peers = {"sharpen": ["conv", None, None, f / "sharpen.mat", *mat],
                 "gaussian:2": ["gaussblur", None, None, "2", "--min-ampl", "0.001"]}
        for kernel in args.tiff_kernels.split(","):
            vips_op = peers[kernel]
            ours = timed([*k, "apply", kernel, f / "big.tif", f / "bands.tif", "--tile-rows", "auto",
                          "--tiff-compression", "deflate", "--max-pixels", str(args.tiff_size ** 2)])
            theirs = None
            if vips:
                vips_op[1], vips_op[2] = f / "big.tif", f"{f / 'vips.tif'}[tile,compression=deflate,bigtiff]"
                theirs = timed([vips, *vips_op])
            report(f"BigTIFF {args.tiff_size}^2 tiled deflate -> same, {kernel}", ours, theirs)
            print("  " + compression(f / "bands.tif") + ("; " + compression(f / "vips.tif") if vips else ""))
    if "zarr" in jobs:
        src = f / f"big-{args.zarr_size}.zarr"
        if not src.exists():
            print(f"  wrote {src.name} in {make_zarr(src, args.zarr_size):.1f} s", flush=True)
        ours = timed([*k, "apply", "gaussian:2", src, f / "bands.zarr", "--max-pixels", str(args.zarr_size ** 2)])
        theirs = timed([sys.executable, "-c", DASK_GAUSSIAN, src, f / "dask.zarr"])
        line = f"Zarr {args.zarr_size}^2 RGB -> Zarr, gaussian:2"
        print(f"{line:<44} kernelcli {ours[0]:7.2f} s {ours[1]:8.0f} MB | dask map_overlap {theirs[0]:7.2f} s "
              f"{theirs[1]:7.0f} MB | time x{ours[0] / theirs[0]:.2f}, memory x{ours[1] / theirs[1]:.1f}",
              flush=True)
    if "jpeg" in jobs:
        # vips's own default turns chroma subsampling off from Q=90; kernelcli (as Pillow) keeps 4:2:0
        vips_jpeg = f"{f / 'vips.jpg'}[Q=92,subsample_mode=on]"
        for run in range(args.repeat):
            strips = timed([*k, "apply", "sharpen", f / "big.jpg", f / "strips.jpg", "--tile-rows", "auto"])
            theirs = timed([vips, "conv", f / "big.jpg", vips_jpeg, f / "sharpen.mat", *mat]) if vips else None
            whole = timed([*k, "apply", "sharpen", f / "big.jpg", f / "whole.jpg"])
            report(f"JPEG {args.size}^2 -> JPEG, in strips (run {run + 1})", strips, theirs)
            report(f"JPEG {args.size}^2 -> JPEG, decoded whole (run {run + 1})", whole, theirs)
        same = (f / "strips.jpg").read_bytes() == (f / "whole.jpg").read_bytes()
        print(f"  strips.jpg {'is' if same else 'is NOT'} whole.jpg, byte for byte")


def _same(a: Path, b: Path) -> None:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    same = np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    print(f"  {b.name} {'has' if same else 'does NOT have'} the pixels of {a.name}")


if __name__ == "__main__":
    main()
