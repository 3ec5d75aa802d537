"""An array larger than we want in memory: a 1.6 GB float32 .npy in bands.

    python benchmarks/bench_tiled.py [--size 20000] [--folder /tmp] [--scheduler ADDRESS]

Writes a SIZE x SIZE float32 .npy (20000: 1.6 GB) of seeded noise, then runs,
each under ``/usr/bin/time -v``:

1. ``kernelcli apply KERNEL big.npy bands.npy --tile-rows auto`` (local threads)
2. the same with ``--scheduler ADDRESS`` when given (a Dask cluster whose
   workers see FOLDER)
3. ``kernelcli apply KERNEL big.npy whole.npy`` in memory, for comparison

and prints wall time and peak memory (maximum resident set size) of each,
then checks the banded outputs against the in-memory one: every row, and the
rows around each band seam on their own. Needs about 5 GB of disk in FOLDER
and about 4 GB of memory for the in-memory run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OPTIONS = ["--stride", "1", "--pad-mode", "reflect", "--relu", "--pool", "max"]


def kernelcli_exe() -> list[str]:
    beside = Path(sys.executable).with_name("kernelcli")
    if beside.exists():
        return [str(beside)]
    return [shutil.which("kernelcli") or sys.executable, *([] if shutil.which("kernelcli") else ["-m", "kernelcli"])]


def make_input(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, size))
    step = 1000
    for r in range(0, size, step):
        arr[r:r + step] = rng.uniform(0, 255, (min(step, size - r), size)).astype(np.float32)
    arr.flush()
    del arr


def timed(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of one command under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    return seconds, rss, proc.stderr


def compare(a: Path, b: Path, seams: list[int]) -> tuple[bool, bool]:
    """(all rows equal, rows around every seam equal), read in chunks."""
    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    if x.shape != y.shape:
        return False, False
    everything = all(np.array_equal(x[r:r + 500], y[r:r + 500]) for r in range(0, x.shape[0], 500))
    around = all(np.array_equal(x[max(0, s - 3):s + 3], y[max(0, s - 3):s + 3]) for s in seams)
    return everything, around


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--kernel", default="gaussian:2")
    parser.add_argument("--folder", default=tempfile.gettempdir())
    parser.add_argument("--scheduler", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the files")
    opts = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (apt-get install time)")
    work = Path(tempfile.mkdtemp(prefix="kernelcli-bench-tiled-", dir=opts.folder))
    exe = kernelcli_exe()
    try:
        big = work / "big.npy"
        make_input(big, opts.size)
        print(f"input: {opts.size}x{opts.size} float32, {big.stat().st_size / 1e9:.2f} GB; "
              f"kernelcli apply {opts.kernel} {' '.join(OPTIONS)}")
        runs = [("bands, local threads", work / "bands.npy", ["--tile-rows", "auto"])]
        if opts.scheduler:
            runs.append(("bands, Dask cluster", work / "cluster.npy",
                         ["--tile-rows", "auto", "--scheduler", opts.scheduler]))
        runs.append(("in memory", work / "whole.npy", ["--max-pixels", str(opts.size ** 2)]))
        seams: list[int] = []
        print(f"{'run':24} {'seconds':>8} {'peak MB':>8}")
        for name, out, extra in runs:
            seconds, rss, err = timed([*exe, "apply", opts.kernel, str(big), str(out), *OPTIONS, *extra])
            print(f"{name:24} {seconds:8.1f} {rss:8.0f}")
            m = re.search(r"(\d+) bands of (\d+) rows", err)
            if m:
                rows = int(m.group(2))
                seams = list(range(rows, np.load(out, mmap_mode="r").shape[0], rows))
        whole = work / "whole.npy"
        for name, out, _ in runs[:-1]:
            everything, around = compare(out, whole, seams)
            print(f"{name}: identical to in memory: {everything}; "
                  f"the 6 rows around each of {len(seams)} seams identical: {around}")
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"files kept in {work}")


if __name__ == "__main__":
    main()
