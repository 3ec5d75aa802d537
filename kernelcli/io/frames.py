"""Pictures of several frames: animated GIF, WebP and PNG, multi-page TIFF.

Every frame is decoded as Pillow shows it (a GIF or APNG frame is the whole
picture after the frames before it are drawn), in one mode for all frames;
the timing (each frame's duration, the loop count, each frame's disposal) is
kept and written back to a format that holds frames.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImageReadError, ImageWriteError, UsageError

#: Output formats that hold several frames.
FRAME_FORMATS = ("GIF", "WEBP", "PNG", "TIFF")

_FORMAT_WORDS = "gif, webp, png (animated) or tif (pages)"

_DEPTH = {"u": "16-bit", "f": "float"}


def decode_frames(img, name: str, max_pixels: int | None, notes: list, orient: int = 1):
    """``(frames, mode, animation)``: every frame of the Pillow image ``img``
    as a float32 array in one mode, and the timing to write them back."""
    from . import orientation
    from .picture import bomb_message, normalise_mode

    count = img.n_frames
    width, height = img.size
    if max_pixels is not None and count * width * height > max_pixels:
        raise ImageReadError(bomb_message(name, img.size, max_pixels).replace(
            "image claims", f"{count} frames of").replace("if you trust", "choose one with --frame N, or if you trust"))
    frames, modes, durations, disposals = [], [], [], []
    loop = img.info.get("loop")
    for i in range(count):
        img.seek(i)
        img.load()
        durations.append(float(img.info.get("duration") or 0))
        disposals.append(getattr(img, "disposal_method", None) if img.format == "GIF" else img.info.get("disposal"))
        pixels, mode = normalise_mode(img, name, [] if i else notes)
        frames.append(pixels if isinstance(pixels, np.ndarray) else pixels.copy())
        modes.append(mode)
    mode = _common_mode(modes)
    arrays = [orientation.upright_array(_as_mode(f, m, mode), orient) for f, m in zip(frames, modes)]
    animation = {"durations": durations, "count": count}
    if loop is not None:
        animation["loop"] = int(loop)
    if any(d is not None for d in disposals):
        animation["disposal"] = [int(d or 0) for d in disposals]
    return arrays, mode, animation


def _common_mode(modes: list) -> str:
    """One mode that holds every frame's: colour if any frame is, alpha if any has it."""
    if len(set(modes)) == 1:
        return modes[0]
    if any(m in ("I;16", "F") for m in modes):
        return "F"
    colour = any(m in ("RGB", "RGBA") for m in modes)
    alpha = any(m in ("LA", "RGBA") for m in modes)
    return ("RGB" if colour else "L") + ("A" if alpha else "")


def _as_mode(pixels, mode: str, want: str) -> np.ndarray:
    """A frame's pixels (a Pillow image or an array) as float32 in mode ``want``."""
    if mode == want:
        return np.asarray(pixels, dtype=np.float32)
    if not isinstance(pixels, np.ndarray) and want in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(pixels.convert(want), dtype=np.float32)
    return np.asarray(pixels, dtype=np.float32)  # gray into float: the same values


def refuse_one_picture(name: str, count: int, fmt: str) -> None:
    """The error for a picture of several frames written to a format that holds one."""
    raise UsageError(f"{name} has {count} frames and {fmt} holds one picture: choose one with --frame N "
                     f"(0 to {count - 1}), or write {_FORMAT_WORDS} to filter them all")


def encode_frames(into, arrays: list, fmt: str, info: dict, animation: dict, quality: int) -> None:
    """Frames (arrays as :func:`~kernelcli.io.pixels.to_array` makes them)
    written as one file of ``fmt`` with their timing, into the binary file
    ``into``. Pages of 16-bit or float colour go to TIFF through tifffile;
    Pillow's other frame writers hold 8-bit colour only."""
    from PIL import Image

    if arrays[0].ndim == 3 and arrays[0].dtype != np.uint8:
        if fmt != "TIFF":
            raise UsageError(f"{fmt} holds frames of 8-bit colour; frames of {_DEPTH[arrays[0].dtype.kind]} "
                             "colour need tif (or --depth 8)")
        from . import _tiff

        _tiff.encode(into, arrays[0], info, "", [], arrays[1:])
        return

    images = [Image.fromarray(a) for a in arrays]
    if fmt == "GIF":
        from ._pillow import gif_palette

        images = [gif_palette(img) for img in images]
    kwargs = {"save_all": True, "append_images": images[1:]}
    if fmt != "TIFF" and animation.get("durations"):
        durations = animation["durations"]
        kwargs["duration"] = [int(round(d)) for d in durations] if fmt != "PNG" else durations
    if fmt != "TIFF" and "loop" in animation:
        kwargs["loop"] = animation["loop"]
    if fmt in ("GIF", "PNG") and "disposal" in animation:
        kwargs["disposal"] = [min(d, 3 if fmt == "GIF" else 2) for d in animation["disposal"]]
    if fmt == "GIF" and arrays[0].ndim == 3 and arrays[0].shape[2] == 4:
        # Each frame is whole (as Pillow showed it): cleared before the next, so
        # that its clear pixels show no frame before it.
        kwargs["disposal"] = 2
    if fmt == "WEBP":
        kwargs["quality"] = quality
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    if fmt in ("WEBP", "PNG", "TIFF") and info.get("icc_profile"):
        kwargs["icc_profile"] = info["icc_profile"]
    import io

    buf = io.BytesIO()  # (Pillow's TIFF writer reads back the pages it appends: a temporary file it cannot)
    try:
        images[0].save(buf, fmt, **kwargs)
    except MemoryError:
        raise
    except OSError as e:
        if e.errno is not None:
            raise
        raise ImageWriteError(f"cannot encode {len(images)} frames as {fmt}: {e}") from None
    except Exception as e:  # Pillow's encoders raise several kinds
        raise ImageWriteError(f"cannot encode {len(images)} frames as {fmt}: {type(e).__name__}: {e}") from None
    into.write(buf.getbuffer())
