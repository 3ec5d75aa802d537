"""Formats from the optional ``formats`` extra (``pip install 'kernelcli[formats]'``):
HEIC/HEIF through pillow-heif, JPEG XL through pillow-jxl-plugin, OpenEXR
through OpenEXR. Each library is imported only when a file of its format is
read or written; without it, the error names the extra.
"""

from __future__ import annotations

import importlib.util

from ..errors import ImageReadError, ImageWriteError, UsageError
from ._pillow import EXR_MAGIC

#: Each format of the extra: the module that provides it, and the package to install.
EXTRA_FORMATS = {"HEIF": ("pillow_heif", "pillow-heif"), "JXL": ("pillow_jxl", "pillow-jxl-plugin"),
                 "EXR": ("OpenEXR", "OpenEXR")}

_NAMES = {"HEIF": "HEIC/HEIF", "JXL": "JPEG XL", "EXR": "OpenEXR"}

JXL_MAGICS = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")
#: ISO base media brands of HEIC/HEIF pictures (AVIF is Pillow's own).
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def missing(fmt: str) -> str:
    """The message for a format of the extra whose library is not installed."""
    module, package = EXTRA_FORMATS[fmt]
    return (f"{_NAMES[fmt]} needs {package}, from the optional formats extra: "
            "pip install 'kernelcli[formats]'")


def check_available(fmt: str) -> None:
    """Refuse (as a usage error) a format of the extra whose library is missing,
    without importing it."""
    if fmt in EXTRA_FORMATS and importlib.util.find_spec(EXTRA_FORMATS[fmt][0]) is None:
        raise UsageError(missing(fmt))


def register_pillow_plugin(fmt: str, name: str | None = None) -> None:
    """Make Pillow read and write ``fmt`` (HEIF or JXL) through the extra's
    plugin. Without it: a usage error for an output, an ImageReadError
    naming the input ``name`` for an input (as for an OpenEXR input)."""
    module = EXTRA_FORMATS[fmt][0]
    try:
        plugin = importlib.import_module(module)
    except ImportError:
        if name is not None:
            raise ImageReadError(f"{name}: {missing(fmt)}") from None
        raise UsageError(missing(fmt)) from None
    if fmt == "HEIF":
        plugin.register_heif_opener()


def sniff_extra(head: bytes) -> str | None:
    """``HEIF``, ``JXL`` or ``EXR`` for a file starting with ``head``, else None."""
    if head.startswith(EXR_MAGIC):
        return "EXR"
    if head.startswith(JXL_MAGICS):
        return "JXL"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "HEIF"
    return None


def exr_header(fp, name: str, max_pixels: int | None = None) -> tuple[int, int, str | None]:
    """``(width, height, mode)`` of the OpenEXR file in ``fp``, from its header
    (the mode kernelcli reads it as: ``F``, ``LA;F``, ``RGB;F`` or ``RGBA;F``;
    None for other channels); over ``max_pixels``, the pixel limit's error."""
    try:
        import OpenEXR
    except ImportError:
        raise ImageReadError(f"{name}: {missing('EXR')}") from None
    from .picture import bomb_message

    fp.seek(0)
    try:
        header = OpenEXR.File(fp, header_only=True).header()
        box = header["dataWindow"]
        width, height = int(box[1][0] - box[0][0] + 1), int(box[1][1] - box[0][1] + 1)
        names = {c.name for c in header["channels"]} if "channels" in header else set()
    except Exception as e:  # OpenEXR raises several kinds on damaged files
        raise ImageReadError(f"{name}: cannot decode OpenEXR: {type(e).__name__}: {e}") from None
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(bomb_message(name, (width, height), max_pixels))
    for wanted, mode in (("RGBA", "RGBA;F"), ("RGB", "RGB;F"), ("YA", "LA;F"), ("Y", "F")):
        if set(wanted) <= names:
            return width, height, mode
    return width, height, None


def read_exr(fp, name: str, max_pixels: int | None):
    """``(float32 pixels, mode)`` of the OpenEXR file in ``fp``: Y, YA, RGB or RGBA channels."""
    exr_header(fp, name, max_pixels)
    import numpy as np
    import OpenEXR

    from .picture import MODES

    fp.seek(0)
    try:
        channels = OpenEXR.File(fp, separate_channels=True).channels()
    except Exception as e:  # OpenEXR raises several kinds on damaged files
        raise ImageReadError(f"{name}: cannot decode OpenEXR: {type(e).__name__}: {e}") from None
    for names, layout in ((("R", "G", "B", "A"), "RGBA"), (("R", "G", "B"), "RGB"), (("Y", "A"), "LA"),
                          (("Y",), "L")):
        if all(n in channels for n in names):
            planes = [np.asarray(channels[n].pixels, dtype=np.float32) for n in names]
            pixels = planes[0] if len(planes) == 1 else np.dstack(planes)
            return np.ascontiguousarray(pixels), MODES[layout, "float"]
    raise ImageReadError(f"{name}: OpenEXR channels {sorted(channels)} are not Y, YA, RGB or RGBA")


def encode_exr(into, pixels) -> None:
    """Float32 pixels (``H x W`` or ``H x W x C``) as a 32-bit float OpenEXR file in ``into``."""
    try:
        import OpenEXR
    except ImportError:
        raise UsageError(missing("EXR")) from None
    import io

    import numpy as np

    names = {1: ("Y",), 2: ("Y", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}
    planes = [pixels] if pixels.ndim == 2 else [pixels[..., i] for i in range(pixels.shape[2])]
    channels = {n: np.ascontiguousarray(p, dtype=np.float32) for n, p in zip(names[len(planes)], planes)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    buf = io.BytesIO()
    try:
        OpenEXR.File(header, channels).write(buf)
    except Exception as e:
        raise ImageWriteError(f"cannot encode as OpenEXR: {type(e).__name__}: {e}") from None
    into.write(buf.getbuffer())
