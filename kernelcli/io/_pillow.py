"""The few places where kernelcli reaches past Pillow's public API, each with
the reason no public call serves. Everything else goes through the public API.
Pillow is imported inside each function: a command that reads or writes no
picture does not load it.
"""

from __future__ import annotations

from ..errors import ImageReadError, ImageWriteError

# Rows go between Pillow images and NumPy through Pillow's "raw" codec, the
# one Image.tobytes and Image.frombytes use, pointed at just those rows: one
# copy, where crop + tobytes and fromarray + paste made three each (Pillow
# keeps RGB as 4 bytes a pixel, so its memory cannot be shared with NumPy).

#: The Pillow decoders kernelcli reads with: raster formats only, by name
#: (``Image.open(..., formats=RASTER_FORMATS)``). Pillow would otherwise hand
#: an EPS file to Ghostscript, a PostScript interpreter that runs whatever
#: program the file holds (an endless loop, for one).
RASTER_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "DIB", "WEBP", "GIF", "PPM", "TGA", "ICO", "PCX",
                  "SGI", "QOI", "JPEG2000", "AVIF")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

JPEG_MAGIC = b"\xff\xd8\xff"

#: A TIFF's first bytes (little- and big-endian).
TIFF_MAGIC = (b"II*\0", b"MM\0*")

#: OpenEXR's first bytes (read through the optional extra).
EXR_MAGIC = b"\x76\x2f\x31\x01"

_ROW_BYTES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 2, "I;16B": 2}


def raw_rows(img, start: int, stop: int) -> bytes:
    """Rows ``[start, stop)`` of a Pillow image as packed bytes (``img.mode``'s raw layout)."""
    from PIL import Image

    width = img.size[0]
    if stop <= start:
        return b""
    # Image._getencoder: Image.tobytes encodes the whole image; only the
    # encoder itself can be pointed at a band of rows.
    encoder = Image._getencoder(img.mode, "raw", img.mode)
    encoder.setimage(img.im, (0, start, width, stop))
    chunks = []
    size = (stop - start) * width * _ROW_BYTES.get(img.mode, 4) + 16  # room for all of it in one call
    while True:
        _, status, data = encoder.encode(size)
        chunks.append(data)
        if status:
            break
    if status < 0:
        raise ImageReadError(f"cannot read rows {start}-{stop - 1} of the decoded image (Pillow error {status})")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def put_raw_rows(img, start: int, values) -> None:
    """Store packed rows (a C-contiguous array in ``img.mode``'s raw layout)
    into a Pillow image from row ``start``."""
    from PIL import Image

    # Image._getdecoder: Image.frombytes makes a new image and paste copies
    # again; only the decoder itself writes a band of rows in place.
    decoder = Image._getdecoder(img.mode, "raw", img.mode)
    decoder.setimage(img.im, (0, start, img.size[0], start + values.shape[0]))
    consumed, status = decoder.decode(values.data.cast("B"))
    decoder.cleanup()
    if consumed >= 0 or status != 0:  # the raw decoder says -1 once the region is full
        raise ImageWriteError(f"cannot store rows from {start} in the output image "
                              f"(Pillow status {consumed}, {status})")


def open_png(fp, icc_limit: int):
    """The PNG in ``fp`` opened by its plugin, with ICC profiles of up to ``icc_limit`` bytes."""
    from PIL import PngImagePlugin

    # PngImagePlugin.PngImageFile(fp): Image.open(fp, formats=["PNG"]) first
    # imports five plugins (Image.preinit: about 25 ms of a command), and
    # takes no argument that skips it.
    # MAX_TEXT_CHUNK: Pillow refuses a whole PNG whose ICC profile (read while
    # the file is opened) inflates past this module-wide limit, 1 MiB, and
    # Image.open takes no limit of its own; profiles are larger at times (TIFF
    # and JPEG carry them). It is raised for this one call and put back. Still
    # bounded: zlib bombs stop there.
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    PngImagePlugin.MAX_TEXT_CHUNK = max(limit, icc_limit)
    try:
        return PngImagePlugin.PngImageFile(fp)
    finally:
        PngImagePlugin.MAX_TEXT_CHUNK = limit


def open_jpeg(fp):
    """The JPEG in ``fp`` opened by its plugin: JPEG, or MPO (several pictures)."""
    from PIL import JpegImagePlugin

    # JpegImagePlugin.jpeg_factory: what Image.open calls for a JPEG, without
    # the import of five plugins before it (as for PNG, in open_png).
    return JpegImagePlugin.jpeg_factory(fp)


def skip_preinit(fmt: str) -> None:
    """Mark Pillow's first plugin imports done once ``fmt``'s saver is loaded."""
    from PIL import Image

    # Image._initialized: Image.save(fp, format) runs Image.preinit, which
    # imports five plugins whatever the format (about 8 ms of a command);
    # no public call says that the one needed is loaded already.
    if fmt in Image.SAVE and getattr(Image, "_initialized", 1) < 1:
        Image._initialized = 1


#: The raw modes of Pillow's PNG reader for 16-bit colour and gray+alpha,
#: which it cuts to 8 bits (the high byte of each sample), and the layout.
PNG_WIDE_RAW = {"RGB;16B": "RGB", "RGBA;16B": "RGBA", "LA;16B": "LA"}


def png_wide_colour(fp, img, icc_limit: int):
    """The 16-bit RGB, RGBA or gray+alpha pixels of the PNG ``img`` (opened from ``fp``,
    not loaded) as a uint16 array, and the file's info (ICC profile, dpi,
    EXIF): decoded twice, once taking each sample's
    high byte, once its low byte."""
    import numpy as np

    # Image.tile: Pillow keeps no 16-bit colour image; its PNG reader unpacks
    # 16-bit samples to their high byte ("RGB;16B"). The little-endian raw
    # mode ("RGB;16L") takes the other byte of each big-endian sample: the
    # zlib stream and its row filters are undone the same way both times.
    raw = img.tile[0].args
    raw = raw[0] if isinstance(raw, tuple) else raw
    # 16-bit gray+alpha (4 bytes a pixel) is read once as 8-bit RGBA: its
    # bytes are L's high and low, then A's.
    halves = []
    for rawmode in ((raw, raw[:-1] + "L") if raw != "LA;16B" else ("RGBA",)):
        fp.seek(0)
        half = open_png(fp, icc_limit)
        half.tile = [tile._replace(args=rawmode if isinstance(tile.args, str) else (rawmode,) + tuple(tile.args[1:]))
                     for tile in half.tile]
        half.load()
        halves.append(np.asarray(half))
    if raw == "LA;16B":
        both = halves[0].astype(np.uint16)
        out = np.ascontiguousarray((both[..., 0::2] << 8) | both[..., 1::2])
    else:
        out = halves[0].astype(np.uint16)
        out <<= 8
        out |= halves[1]
    return out, dict(half.info)


def gif_palette(img):
    """An RGBA Pillow image as a palette image GIF holds: its colours
    reduced to 255, and index 255 transparent where alpha is below 128.
    (Pillow's own reduction of RGBA keeps no transparency once there are
    more than 256 colours.) Other modes are returned as they are."""
    if img.mode != "RGBA":
        return img
    from PIL import Image

    out = img.convert("RGB").quantize(255, dither=Image.Dither.NONE)
    palette = out.getpalette()[:255 * 3]
    out.putpalette(palette + [0] * (768 - len(palette)))
    clear = img.getchannel("A").point(lambda v: 255 if v < 128 else 0, "L")
    out.paste(255, mask=clear)
    out.info["transparency"] = 255
    return out
