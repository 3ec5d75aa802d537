#!/usr/bin/env python3
"""Regenerate the sample files in this folder from the source photograph.

Usage:
    python make_samples.py SOURCE_PHOTO [OUTPUT_DIR]

SOURCE_PHOTO is ``skimage/data/chelsea.png`` taken from the scikit-image
wheel (see README.md for where it comes from and its licence).  OUTPUT_DIR
defaults to the folder this script lives in.

Only numpy and Pillow are needed.  The output is deterministic.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SMALL_WIDTH = 256  # width of gray.png, rgba.png and gray16.png/.tif

EXAMPLE_5X5 = [
    [1, 1, 1, 0, 0],
    [0, 1, 1, 1, 0],
    [0, 0, 1, 1, 1],
    [0, 0, 1, 1, 0],
    [0, 1, 1, 0, 0],
]

EXAMPLE_FILTER = [
    [1, 0, 1],
    [0, 1, 0],
    [1, 0, 1],
]


def small_size(size):
    """Size scaled to SMALL_WIDTH wide, keeping the aspect ratio."""
    w, h = size
    return SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w))


def luminance(rgb):
    """ITU-R BT.601 luma of an (H, W, 3) array, as float64 in 0..255."""
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def radial_alpha(width, height):
    """Soft vignette: 255 in the centre falling smoothly to 0 at the corners."""
    ys = (np.arange(height) - (height - 1) / 2) / ((height - 1) / 2)
    xs = (np.arange(width) - (width - 1) / 2) / ((width - 1) / 2)
    r = np.hypot(xs[None, :], ys[:, None]) / np.sqrt(2.0)  # 0 centre, 1 corner
    t = np.clip(r, 0.0, 1.0)
    a = 1.0 - t * t * (3.0 - 2.0 * t)  # smoothstep falloff
    return np.round(a * 255.0).astype(np.uint8)


def gray16_data(photo):
    """16-bit luminance that really uses the full 0..65535 range.

    Float luminance (downscaled in float, so no 8-bit quantisation) is mixed
    with a smooth diagonal gradient and stretched to 0..65535, so the low
    byte varies and values are not just multiples of 257.
    """
    lum = luminance(np.asarray(photo)).astype(np.float32)
    lum = Image.fromarray(lum)  # mode "F"
    lum = np.asarray(lum.resize(small_size(photo.size), Image.LANCZOS),
                     dtype=np.float64) / 255.0
    h, w = lum.shape
    yy, xx = np.mgrid[0:h, 0:w]
    grad = (xx + yy) / float(w + h - 2)
    v = 0.9 * lum + 0.1 * grad
    v = (v - v.min()) / (v.max() - v.min())
    return np.round(v * 65535.0).astype(np.uint16)


def write_kernel_text(path, rows, comment):
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("# " + comment + "\n")
        for row in rows:
            f.write(" ".join(str(x) for x in row) + "\n")


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write(__doc__)
        return 2
    src = Path(argv[1])
    out = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)

    photo = Image.open(src).convert("RGB")
    photo.load()

    # Full-size photo: lossless PNG (same pixels as the source, metadata
    # dropped) and a quality-90 JPEG.
    Image.fromarray(np.asarray(photo)).save(out / "photo.png", optimize=True)
    Image.fromarray(np.asarray(photo)).save(out / "photo.jpg", quality=90)

    small = photo.resize(small_size(photo.size), Image.LANCZOS)

    # 8-bit grayscale, mode "L".
    small.convert("L").save(out / "gray.png", optimize=True)

    # RGBA with a radial vignette alpha.
    rgba = np.dstack([np.asarray(small), radial_alpha(*small.size)])
    Image.fromarray(rgba).save(out / "rgba.png", optimize=True)

    # 16-bit grayscale, same data as PNG and TIFF.
    g16 = gray16_data(photo)
    Image.fromarray(g16).save(out / "gray16.png", optimize=True)
    Image.fromarray(g16).save(out / "gray16.tif")

    # Worked example: 5x5 input matrix and its 3x3 filter.
    np.save(out / "example-5x5.npy", np.array(EXAMPLE_5X5, dtype=np.float32))
    write_kernel_text(out / "example-filter.txt", EXAMPLE_FILTER,
                      "3x3 filter of the worked example")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
