"""Animated pictures: frames of one size into a GIF, an animated PNG or an
animated WebP (chosen by the file's extension), written through
:mod:`kernelcli.io.sinks` like every output."""

from __future__ import annotations

import os

import numpy as np

from ..errors import UsageError
from .sinks import deliver

#: Animated formats by extension.
ANIMATED = {".gif": "GIF", ".png": "PNG", ".apng": "PNG", ".webp": "WEBP"}


def animation_format(target) -> str:
    ext = os.path.splitext(str(target))[1].lower()
    if str(target) == "-" or ext not in ANIMATED:
        raise UsageError(f"an animation is written to a .gif, .png (animated PNG) or .webp file, "
                         f"not {str(target)!r}")
    return ANIMATED[ext]


#: Frames sampled to build a GIF's palette.
PALETTE_FRAMES = 8


def _one_palette(images):
    """The frames in one palette (made from a few frames spread over the
    animation, without dithering: the figures use few colours), so that the
    GIF stores only what changes from frame to frame."""
    from PIL import Image

    step = max(1, len(images) // PALETTE_FRAMES)
    sample = images[::step] + [images[-1]]
    w, h = images[0].size
    sheet = Image.new("RGB", (w, h * len(sample)))
    for i, im in enumerate(sample):
        sheet.paste(im, (0, i * h))
    palette = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]


def write_animation(target, frames: list[np.ndarray], durations: list[int]) -> None:
    """Write ``frames`` (``H x W x 3`` uint8) shown ``durations`` milliseconds
    each, looping, to ``target`` (its extension picks the format)."""
    from PIL import Image

    fmt = animation_format(target)
    images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in frames]
    if fmt == "GIF":
        images = _one_palette(images)
    options = {"save_all": True, "append_images": images[1:], "duration": list(durations), "loop": 0}
    if fmt == "WEBP":
        options.update(lossless=True)
    if fmt == "PNG":
        options.update(default_image=False)

    def write(f):
        images[0].save(f, format=fmt, **options)

    deliver(target, write, fmt)
