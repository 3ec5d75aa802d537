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
