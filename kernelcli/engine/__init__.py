"""The numeric core: convolution, activations (ReLU, tanh, sigmoid) and pooling on float32 arrays.

:mod:`~kernelcli.engine.ops` validates, allocates and dispatches;
:mod:`~kernelcli.engine.plan` decides how a computation runs (method,
backend, bands); :mod:`~kernelcli.engine.shapes` holds the padding and
output-size arithmetic; :mod:`~kernelcli.engine.backends` chooses between
the Numba loops and their NumPy twins; :mod:`~kernelcli.engine.lazy` gives
the public operations a Dask array's lazy result.
"""

from .backends import load_numba, uses_numba
from .shapes import (CACHE_INDEX_UP_TO, INDEX_BYTES, PAD_MODES, PADDING_WORDS, POOL_KINDS, as_image_array,
                       geometry, origin_padding, output_size, padding_text, pair, pool_geometry, resolve_padding,
                       rows_view, source_index)
from .ops import ACTIVATIONS, activate, correlate_exact, placed_origin, release_memory, warm_up
from .lazy import convolve, pool, relu
from .plan import (SEPARABLE_MIN_TAPS, BandsPlan, Bands, Plan, exact_weights, low_rank_factors, method_for,
                   multiply_adds, numba_ahead, plan_bands, plan_convolution)

__all__ = [
    "ACTIVATIONS", "activate",
    "CACHE_INDEX_UP_TO", "INDEX_BYTES", "PAD_MODES", "PADDING_WORDS", "POOL_KINDS", "SEPARABLE_MIN_TAPS",
    "Bands", "BandsPlan", "Plan", "as_image_array", "convolve", "correlate_exact", "exact_weights", "geometry",
    "load_numba", "low_rank_factors", "method_for", "multiply_adds", "numba_ahead", "origin_padding",
    "output_size", "placed_origin",
    "padding_text", "pair", "plan_bands", "plan_convolution", "pool", "pool_geometry", "release_memory",
    "relu", "resolve_padding", "rows_view", "source_index", "uses_numba", "warm_up",
]
