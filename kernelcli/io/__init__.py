"""Reading and writing images and ``.npy`` arrays.

``picture`` (the :class:`Picture` model) and ``npy`` (the ``.npy`` format) are
at the bottom; ``pixels`` (float values to an output format's pixels) above
them; ``decode`` (Pillow decoding) and ``inputs`` (opening inputs by their
bytes) read, ``encode`` writes through ``sinks`` (temporary files renamed into
place, stdout); ``header`` describes a file from its header alone (without
NumPy, for a picture). ``_pillow`` holds the calls past Pillow's public API.

The names below are imported when first used, so that importing one module
of this package (``header``) does not import NumPy.
"""

from .._lazy import lazy_getattr as _lazy_getattr

_LAZY = {
    "format_for": "encode", "write_image": "encode", "write_pixels": "encode",
    "DEFAULT_MAX_PIXELS": "inputs", "NpyInput": "inputs", "open_input": "inputs", "read_image": "inputs",
    "ReadSpec": "inputs",
    "Picture": "picture",
}

__getattr__ = _lazy_getattr(__name__, _LAZY)


__all__ = ["DEFAULT_MAX_PIXELS", "NpyInput", "Picture", "ReadSpec", "format_for", "open_input", "read_image",
           "write_image", "write_pixels"]
