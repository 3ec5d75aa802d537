#!/usr/bin/env python3
"""Regenerate every picture of docs/gallery.md from the kernelcli commands it shows.

Usage (from the repository root, with the Python kernelcli is installed in;
its kernelcli command is used even when its folder is not on PATH):
    python docs/make_gallery.py [--out DIR] [--photo PICTURE]

Each command below is run as written in docs/gallery.md (through the shell,
for its pipes), from the repository root. ``--out`` writes the pictures into
another folder instead of docs/gallery/, and ``--photo`` puts another gray
picture in place of samples/gray.png (the tests use a small one).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GALLERY = "docs/gallery/"
PHOTO = "samples/gray.png"


@dataclass(frozen=True)
class Figure:
    """One picture: its file in docs/gallery/, the command that makes it, and
    what it must be: ``frames`` for an animation; ``size`` "photo" (the
    photo's size), "digit" (28x28 made larger) or "sheet" (a drawn sheet)."""

    name: str
    command: str
    size: str = "sheet"
    frames: int = 1


FIGURES = [
    Figure("convolution.gif",
           'kernelcli explain "1,0,1;0,1,0;1,0,1" samples/example-5x5.npy --animate docs/gallery/convolution.gif',
           frames=1 + 9 + 1),
    Figure("filters.jpg",
           "kernelcli conv identity,edge,edge-cross,edge-diagonal,sharpen,box,gaussian samples/gray.png"
           " --pad-mode reflect | kernelcli relu | kernelcli montage - docs/gallery/filters.jpg --columns 4"
           " --colormap gray"),
    Figure("feature-map.jpg",
           "kernelcli apply sobel-x samples/gray.png docs/gallery/feature-map.jpg --pad-mode reflect"
           " --colormap diverging", size="photo"),
    Figure("rectified.jpg",
           "kernelcli apply sobel-x samples/gray.png docs/gallery/rectified.jpg --pad-mode reflect --relu"
           " --colormap diverging", size="photo"),
    Figure("tanh.jpg",
           "kernelcli apply sobel-x samples/gray.png docs/gallery/tanh.jpg --pad-mode reflect"
           " --activation tanh:1/64 --colormap diverging", size="photo"),
    Figure("pooling.gif",
           'kernelcli explain sobel-x "3,1,0,2,5,1;1,0,4,2,2,0;0,7,1,3,1,2;2,1,0,6,3,1;1,3,2,0,2,4;5,1,1,2,0,1"'
           " --relu --pool max --animate docs/gallery/pooling.gif", frames=1 + 16 + 1 + 1 + 4 + 1),
    *(Figure(f"pool-{kind}.png",
             "kernelcli conv sobel-x samples/gray.png --pad-mode reflect | kernelcli relu"
             f" | kernelcli pool {kind} | kernelcli montage - docs/gallery/pool-{kind}.png --colormap heat")
      for kind in ("max", "avg", "sum")),
    Figure("digit.png", "kernelcli montage samples/digit-8.png docs/gallery/digit.png --colormap gray", size="digit"),
    Figure("layer1.png",
           "kernelcli conv edge,sobel-x,sobel-y samples/digit-8.png | kernelcli relu"
           " | kernelcli montage - docs/gallery/layer1.png --columns 3 --colormap heat"),
    Figure("layer1-pooled.png",
           "kernelcli conv edge,sobel-x,sobel-y samples/digit-8.png | kernelcli relu | kernelcli pool max"
           " | kernelcli montage - docs/gallery/layer1-pooled.png --columns 3 --colormap heat"),
    Figure("layer2.png",
           "kernelcli conv edge,sobel-x,sobel-y samples/digit-8.png | kernelcli relu | kernelcli pool max"
           " | kernelcli conv samples/layer2-3x3x3.npy | kernelcli relu | kernelcli pool max"
           " | kernelcli montage - docs/gallery/layer2.png --colormap heat"),
    Figure("kernels.png",
           "kernelcli kernels show identity,edge,edge-cross,edge-diagonal,sharpen,box,gaussian,sobel-x"
           " --image docs/gallery/kernels.png"),
    Figure("curve-detector.png", "kernelcli kernels show curve-detector --image docs/gallery/curve-detector.png"),
]


def command_for(figure: Figure, out: str = GALLERY, photo: str = PHOTO) -> str:
    """The figure's command, writing into ``out`` and reading ``photo``."""
    return (figure.command.replace(GALLERY, out.rstrip("/") + "/")
            .replace(PHOTO, shlex.quote(photo)))


def make(out: str = GALLERY, photo: str = PHOTO, quiet: bool = False) -> list[Path]:
    """Run every figure's command; returns the pictures made."""
    Path(ROOT, out).mkdir(parents=True, exist_ok=True)
    # the kernelcli command installed beside this Python, whether or not its folder is on PATH
    env = dict(os.environ, PATH=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
    made = []
    for figure in FIGURES:
        command = command_for(figure, out, photo)
        start = time.perf_counter()
        subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, check=True, env=env)
        made.append(Path(ROOT, out, figure.name))
        if not quiet:
            size = made[-1].stat().st_size
            print(f"{figure.name:20} {size / 1024:7.1f} KB  {time.perf_counter() - start:5.2f} s")
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=GALLERY, help="folder for the pictures (default: docs/gallery/)")
    parser.add_argument("--photo", default=PHOTO, help="gray picture in place of samples/gray.png")
    args = parser.parse_args(argv)
    make(args.out, args.photo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
