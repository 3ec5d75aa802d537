"""Reading and writing images and ``.npy`` arrays.

``picture`` (the :class:`Picture` model) and ``npy`` (the ``.npy`` format) are
at the bottom; ``pixels`` (float values to an output format's pixels) above
them; ``decode`` (Pillow decoding) and ``inputs`` (opening inputs by their
bytes) read, ``encode`` writes through ``sinks`` (temporary files renamed into
place, stdout). ``_pillow`` holds the calls past Pillow's public API.
"""

from .encode import format_for, write_image, write_pixels
from .inputs import DEFAULT_MAX_PIXELS, NpyInput, open_input, read_image
from .picture import Picture

__all__ = ["DEFAULT_MAX_PIXELS", "NpyInput", "Picture", "format_for", "open_input", "read_image",
           "write_image", "write_pixels"]
