"""Folder benchmark: kernelcli apply on a folder of 12-megapixel JPEGs, against
ImageMagick's mogrify and libvips run per file with two workers (xargs -P 2).

    python benchmarks/bench_batch.py [--files 8] [--rounds 2]

Peers are optional (apt-get install imagemagick libvips-tools); a missing peer
is skipped with a message. Prints seconds (best of the rounds, run
interleaved), images/s and the ratio ours/peer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARPEN_MAGICK = "3x3: 0,-1,0 -1,5,-1 0,-1,0"
SHARPEN_VIPS = "3 3 1 0\n0 -1 0\n-1 5 -1\n0 -1 0\n"


def make_photos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:3000, 0:4000].astype(np.float32)
    base = (np.sin(x / 200) + np.cos(y / 150)) * 60 + 128
    for i in range(count):
        noise = rng.normal(0, 20, (3000, 4000)).astype(np.float32)
        rgb = np.stack([base + noise, base * 0.8 + noise, np.roll(base, 100 * i, axis=1) + noise], -1)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"photo{i:02d}.jpg", quality=92)


def kernelcli_exe() -> str:
    beside = Path(sys.executable).with_name("kernelcli")
    return str(beside) if beside.exists() else (shutil.which("kernelcli") or "kernelcli")


def magick_exe() -> str | None:
    for name in ("/usr/bin/mogrify", "mogrify"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def timed(cmd: str, out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    start = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kernelcli-batch-"))
    src = work / "in"
    src.mkdir()
    make_photos(src, args.files)
    (work / "sharpen.mat").write_text(SHARPEN_VIPS)
    k = kernelcli_exe()
    commands = {"kernelcli --jobs 2": (f"'{k}' apply sharpen '{src}' '{work}/out_k' --jobs 2 --quiet", work / "out_k")}
    mogrify = magick_exe()
    if mogrify:
        commands["mogrify, xargs -P 2"] = (
            f"ls '{src}'/*.jpg | xargs -P 2 -n 1 '{mogrify}' -quality 92 -path '{work}/out_im' "
            f"-morphology Convolve '{SHARPEN_MAGICK}'", work / "out_im")
    else:
        print("ImageMagick (mogrify) not found: skipped")
    if shutil.which("vips"):
        commands["vips conv, xargs -P 2"] = (
            f"cd '{src}' && ls *.jpg | xargs -P 2 -I{{}} vips conv {{}} '{work}/out_vips/{{}}[Q=92]' '{work}/sharpen.mat'",
            work / "out_vips")
    else:
        print("libvips (vips) not found: skipped")
    best = {name: float("inf") for name in commands}
    for r in range(args.rounds):
        order = list(commands) if r % 2 == 0 else list(reversed(commands))
        for name in order:
            best[name] = min(best[name], timed(*commands[name]))
    ours = best["kernelcli --jobs 2"]
    print(f"{args.files} JPEGs of 4000x3000 (12 MP), sharpen, 2 workers, best of {args.rounds} interleaved rounds")
    print(f"{'tool':24} {'seconds':>8} {'images/s':>9} {'ours/peer':>10}")
    for name, sec in best.items():
        ratio = "" if name.startswith("kernelcli") else f"{ours / sec:9.2f}x"
        print(f"{name:24} {sec:8.2f} {args.files / sec:9.2f} {ratio:>10}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
