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


def write_animation(target, frames: list[np.ndarray], durations: list[int]) -> None:
    """Write ``frames`` (``H x W x 3`` uint8) shown ``durations`` milliseconds
    each, looping, to ``target`` (its extension picks the format)."""
    from PIL import Image

    fmt = animation_format(target)
    images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in frames]
    if fmt == "GIF":  # each frame its own palette, without dithering (the figures use few colours)
        images = [im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                  for im in images]
    options = {"save_all": True, "append_images": images[1:], "duration": list(durations), "loop": 0}
    if fmt == "WEBP":
        options.update(lossless=True)
    if fmt == "PNG":
        options.update(default_image=False)

    def write(f):
        images[0].save(f, format=fmt, **options)

    deliver(target, write, fmt)
