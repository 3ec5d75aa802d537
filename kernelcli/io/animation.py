"""Animated pictures: frames of one size into a GIF, an animated PNG or an
animated WebP (chosen by the file's extension), written through
:mod:`kernelcli.io.sinks` like every output."""

from __future__ import annotations

import os

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


def _palette(frames):
    """One palette for the whole GIF, made from a few frames spread over it
    (without dithering: the figures use few colours), so that the GIF stores
    only what changes from frame to frame."""
    from PIL import Image

    step = max(1, len(frames) // PALETTE_FRAMES)
    sample = [draw() for draw, _ in frames[::step]] + [frames[-1][0]()]
    w, h = sample[0].size
    sheet = Image.new("RGB", (w, h * len(sample)))
    for i, im in enumerate(sample):
        sheet.paste(im, (0, i * h))
    return sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def write_animation(target, frames) -> None:
    """Write ``frames``, ``(draw, milliseconds)`` pairs (``draw()`` returns an
    RGB Pillow image, all one size), looping, to ``target`` (its extension
    picks the format). Frames are drawn one at a time, as the encoder takes
    them; what the encoder keeps of them is checked against the memory first."""
    from PIL import Image

    from .._memory import ensure_memory

    fmt = animation_format(target)
    first = frames[0][0]()
    w, h = first.size
    ensure_memory(len(frames) * w * h * (1 if fmt == "GIF" else 4),  # WebP and APNG encoders hold RGBA
                  f"an animation of {len(frames)} frames of {w}x{h} pixels",
                  "use a smaller input, a larger --stride or less --padding")
    palette = _palette(frames) if fmt == "GIF" else None

    def ready(im):
        return im.quantize(palette=palette, dither=Image.Dither.NONE) if palette is not None else im

    rest = (ready(draw()) for draw, _ in frames[1:])
    if fmt == "PNG":  # Pillow's APNG writer goes over the frames twice
        rest = list(rest)
    options = {"save_all": True, "append_images": rest, "duration": [ms for _, ms in frames], "loop": 0}
    if fmt == "WEBP":
        options.update(lossless=True)
    if fmt == "PNG":
        options.update(default_image=False)

    def write(f):
        ready(first).save(f, format=fmt, **options)

    deliver(target, write, fmt)
