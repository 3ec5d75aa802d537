#!/usr/bin/env python3
"""Draw ``digit-8.png``: a handwritten-style "8", 28x28 gray, white on black
like an MNIST digit (the digit inside the middle 20x20, its strokes
anti-aliased). Drawn from scratch here: no third-party content.

Usage:
    python make_digit.py [OUTPUT_DIR]

Only numpy and Pillow are needed. The output is deterministic (for a given
Pillow version).
"""

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 28
ZOOM = 16  # drawn at 16x, then reduced


def stroke_points():
    """The pen's path: the top loop clockwise from the waist, then the bottom
    loop the other way, as a hand writes an 8 in one stroke; a slight slant
    and a lower loop a little wider than the upper one."""
    points = []
    for i in range(241):
        t = i / 240
        if t < 0.5:  # top loop, centre (14, 9.3)
            a = -math.pi / 2 - t * 2 * 2 * math.pi  # starts at the waist, its lowest point
            x, y = 14.2 + 4.1 * math.cos(a), 9.3 + 4.6 * math.sin(a) * -1
        else:  # bottom loop, centre (13.6, 18.6)
            a = math.pi / 2 + (t - 0.5) * 2 * 2 * math.pi  # starts at the waist, its highest point
            x, y = 13.6 + 5.3 * math.cos(a), 18.6 - 5.0 * math.sin(a)
        x += (14 - y) * 0.16  # slant to the right
        x += 0.35 * math.sin(7 * t * math.pi)  # an unsteady hand
        points.append((x * ZOOM, y * ZOOM))
    return points


def draw_digit():
    big = Image.new("L", (SIZE * ZOOM, SIZE * ZOOM), 0)
    pen = ImageDraw.Draw(big)
    pts = stroke_points()
    for i, (p, q) in enumerate(zip(pts, pts[1:])):
        width = int(ZOOM * (2.5 + 0.6 * math.sin(i / 240 * 3 * math.pi) ** 2))  # the pen's pressure
        pen.line([p, q], fill=255, width=width)
        r = width / 2
        pen.ellipse([q[0] - r, q[1] - r, q[0] + r, q[1] + r], fill=255)
    big = big.filter(ImageFilter.GaussianBlur(ZOOM * 0.45))
    small = big.resize((SIZE, SIZE), Image.Resampling.BOX)
    px = np.asarray(small, dtype=np.float64)
    return Image.fromarray(np.round(px * 255.0 / px.max()).astype(np.uint8), "L")


def main(argv):
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    draw_digit().save(out / "digit-8.png", optimize=True)


if __name__ == "__main__":
    main(sys.argv)
