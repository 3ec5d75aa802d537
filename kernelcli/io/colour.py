"""Colour: pictures that are neither RGB nor gray converted to sRGB through
their ICC profile, and sRGB values to linear light and back (``--linear``).

A CMYK JPEG with its printer's profile becomes sRGB through Pillow's
ImageCms (LittleCMS), and the output carries an sRGB profile, the one that
matches its pixels. Without a usable profile the conversion is Pillow's
plain formula, and no profile is attached.
"""

from __future__ import annotations

import io

import numpy as np


def srgb_profile() -> bytes:
    """An sRGB ICC profile (LittleCMS's built-in), as bytes."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def to_srgb(img, info: dict, name: str, notes: list):
    """``(image, info)``: a Pillow image in a mode that is neither RGB nor gray
    (CMYK, LAB...) and carries an ICC profile, converted to sRGB through it;
    ``info`` then carries the sRGB profile. Anything else comes back as it is."""
    profile = info.get("icc_profile")
    if img.mode not in ("CMYK", "LAB", "YCbCr") or not profile:
        return img, info
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                              renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except Exception as e:  # a profile LittleCMS cannot use, or not for this mode
        notes.append(f"{name}: its ICC profile could not convert its {img.mode} pixels ({e}); "
                     "converted to RGB without it, and the profile dropped")
        return img, {k: v for k, v in info.items() if k != "icc_profile"}
    notes.append(f"{name}: {img.mode} image converted to sRGB through its ICC profile")
    return converted, dict(info, icc_profile=srgb_profile())


# --------------------------------------------------------------------------
# linear light: the sRGB transfer curve (IEC 61966-2-1), applied per channel

def to_linear(values: np.ndarray, top: float) -> np.ndarray:
    """sRGB-encoded values in ``0..top`` to linear light in ``0..top`` (float32)."""
    v = np.asarray(values, dtype=np.float32) / np.float32(top)
    out = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return (out * top).astype(np.float32)


def from_linear(values: np.ndarray, top: float) -> np.ndarray:
    """Linear light in ``0..top`` back to sRGB-encoded values (float32). Values
    outside the range (a sharpened edge) keep their sign and follow the curve
    past its ends, to be clipped when written as pixels."""
    v = np.asarray(values, dtype=np.float32) / np.float32(top)
    a = np.abs(v)
    with np.errstate(invalid="ignore"):
        encoded = np.where(a <= 0.0031308, a * 12.92, 1.055 * a ** (1 / 2.4) - 0.055)
    return (np.sign(v) * encoded * top).astype(np.float32)


# --------------------------------------------------------------------------
# an ICC profile's own tone curves (rTRC, gTRC, bTRC; kTRC for gray)

#: Points at which a profile's tone curve is sampled.
CURVE_SAMPLES = 4096


def profile_curves(profile: bytes | None, channels: int):
    """The tone curves of an RGB (``channels`` 3) or gray (1) ICC profile, as
    ``(xs, ys)`` samples on ``0..1`` (encoded value to linear light), one per
    channel; None when the profile has none kernelcli reads ('curv' and
    'para' curves) or is of another colour space."""
    import struct

    if not profile or len(profile) < 132:
        return None
    space = bytes(profile[16:20])
    names = {3: (b"rTRC", b"gTRC", b"bTRC"), 1: (b"kTRC",)}.get(channels)
    if names is None or space != (b"RGB " if channels == 3 else b"GRAY"):
        return None
    try:
        count = struct.unpack(">I", profile[128:132])[0]
        table = {}
        for i in range(min(count, 1000)):
            sig, offset, size = struct.unpack(">4sII", profile[132 + 12 * i:144 + 12 * i])
            table[sig] = bytes(profile[offset:offset + size])
        curves = [_curve(table[name]) for name in names]
    except (KeyError, struct.error, ValueError, ZeroDivisionError, OverflowError):
        return None
    return None if any(c is None for c in curves) else curves


def _curve(tag: bytes):
    """``(xs, ys)`` of one ICC 'curv' or 'para' tag, or None."""
    import struct

    xs = np.linspace(0.0, 1.0, CURVE_SAMPLES)
    kind = tag[:4]
    if kind == b"curv":
        n = struct.unpack(">I", tag[8:12])[0]
        if n == 0:
            ys = xs.copy()
        elif n == 1:
            ys = xs ** (struct.unpack(">H", tag[12:14])[0] / 256.0)
        else:
            points = np.frombuffer(tag[12:12 + 2 * n], ">u2").astype(np.float64) / 65535.0
            if len(points) != n:
                return None
            ys = np.interp(xs, np.linspace(0.0, 1.0, n), points)
    elif kind == b"para":
        function = struct.unpack(">H", tag[8:10])[0]
        size = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(function)
        if size is None:
            return None
        p = [v / 65536.0 for v in struct.unpack(f">{size}i", tag[12:12 + 4 * size])]
        g, a, b, c, d, e, f = (p + [0.0] * 7)[:7]
        if function == 0:
            ys = xs ** g
        elif function in (1, 2):
            ys = np.where(xs >= -b / a, np.maximum(a * xs + b, 0) ** g, 0.0) + (c if function == 2 else 0.0)
        else:
            ys = np.where(xs >= d, np.maximum(a * xs + b, 0) ** g + (e if function == 4 else 0.0),
                          c * xs + (f if function == 4 else 0.0))
    else:
        return None
    ys = np.maximum.accumulate(np.clip(ys, 0.0, None))  # monotonic, so that it can be inverted
    return xs, ys


def curve_to_linear(values: np.ndarray, top: float, curves) -> np.ndarray:
    """Encoded values in ``0..top`` to linear light through a profile's curves
    (one per channel, the last axis); values are held to ``0..top`` first."""
    return _through_curves(values, top, curves, inverse=False)


def curve_from_linear(values: np.ndarray, top: float, curves) -> np.ndarray:
    """Linear light back through the inverse of a profile's curves (values
    past the ends are held to them, as a written picture clips them)."""
    return _through_curves(values, top, curves, inverse=True)


def _through_curves(values: np.ndarray, top: float, curves, inverse: bool) -> np.ndarray:
    """Each channel of ``values`` (in ``0..top``) through its curve ``(xs, ys)``, or its inverse."""
    v = np.asarray(values, dtype=np.float64) / top
    out = np.empty(v.shape, np.float32)
    for i, (xs, ys) in enumerate(curves):
        index = (..., i) if v.ndim == 3 else (...,)
        out[index] = (np.interp(v[index], ys, xs) if inverse else np.interp(v[index], xs, ys)) * top
    return out
