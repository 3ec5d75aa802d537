"""Property tests: the parsers and readers never fail with anything but a KernelcliError.

Whatever text, spec or bytes they get, :mod:`kernelcli.kernels` returns a
:class:`~kernelcli.kernels.Kernel` whose weights are finite (as written and as
the float32 weights the engine uses) or raises a
:class:`~kernelcli.errors.KernelcliError`; :func:`kernelcli.io.read_image`
returns a :class:`~kernelcli.io.Picture` of float32 pixels or raises a
``KernelcliError``. Any other exception is a bug (see ``kernelcli/errors.py``).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from kernelcli import kernels
from kernelcli.errors import KernelcliError
from kernelcli.io.inputs import DEFAULT_MAX_PIXELS, read_image
from kernelcli.io.npy import META_MAGIC, NPY_MAGIC
from kernelcli.io.picture import Picture
from kernelcli.kernels import Kernel, get_kernel, load_file, parse_text

# Keep Hypothesis' caches and patch files out of the checkout.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _storage = tempfile.mkdtemp(prefix="kernelcli-hypothesis-")
    atexit.register(shutil.rmtree, _storage, ignore_errors=True)
    set_hypothesis_home_dir(_storage)

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,
    # No shrinking: a failure is reported as found, which keeps the run short
    # (the minimal reproductions are in tests/test_hostile.py and the report).
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------
# kernels


def check_kernel(result) -> None:
    """A Kernel whose values (as written, times its scale) are finite."""
    assert isinstance(result, Kernel), f"returned {type(result).__name__}, not a Kernel"
    assert result.values.ndim in (2, 3) and min(result.values.shape) >= 1
    assert np.all(np.isfinite(result.values)), f"non-finite values accepted:\n{result.values}"
    assert np.isfinite(result.scale) and np.isfinite(result.offset)
    assert np.all(np.isfinite(result.values * result.scale)), (
        f"values * scale overflow: values {result.values.ravel()[:9]}, scale {result.scale}")


def check_weights(result) -> None:
    """The float32 weights the engine computes with are finite too."""
    weights = result.array
    assert weights.dtype == np.float32
    assert np.all(np.isfinite(weights)), (
        f"finite values become infinite float32 weights: values {result.values.ravel()[:9]}, "
        f"scale {result.scale}, weights {weights.ravel()[:9]}")


def only_kernel_or_kernelcli_error(call, *args) -> None:
    try:
        result = call(*args)
    except KernelcliError:
        return
    check_kernel(result)


# Tokens a kernel file or spec may hold, hostile ones included. Exponents stay
# below 4 digits: Fraction("1e99999999") is a separate, known hang (see
# tests/test_hostile.py::test_kernel_file_with_huge_fraction_exponent_does_not_hang).
_exponent = st.integers(-999, 999)
number_token = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-99, 99), _exponent),
    st.builds(lambda a, b: f"{a}/{b}", st.integers(-50, 50), st.integers(-5, 50)),
    st.builds(lambda m, e, d: f"{m}e{e}/{d}", st.integers(1, 9), _exponent, st.integers(-3, 9)),
    st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "1e39", "-3.5e38", "1/0", "0/0",
                     "1e400/1", "1/1e-400", "1e-400", "x", "", "--1", "1//2", "½", "٣"]),
)
row = st.lists(number_token, min_size=0, max_size=5).flatmap(
    lambda toks: st.sampled_from([" ", ",", ", ", "\t"]).map(lambda sep: sep.join(toks)))
setting_line = st.one_of(
    st.builds(lambda v: f"scale: {v}", number_token),
    st.builds(lambda v: f"offset: {v}", number_token),
    st.builds(lambda v: f"description: {v}", st.text(max_size=20)),
    st.builds(lambda k, v: f"{k}: {v}", st.text(max_size=8), st.text(max_size=8)),
    st.just("# a comment"),
    st.just(""),
)
kernel_text = st.lists(st.one_of(row, row, setting_line), max_size=8).map("\n".join)


@PROPERTY
@given(st.one_of(st.text(), kernel_text))
def test_parse_text_only_kernel_or_kernelcli_error(text):
    only_kernel_or_kernelcli_error(parse_text, text, "k.txt")


def _names_a_file(spec: str) -> bool:
    try:
        return os.path.exists(spec.strip()) or os.path.exists(spec)
    except (ValueError, OSError):
        return False


inline_spec = st.lists(row, min_size=1, max_size=4).map(";".join)
sized_spec = st.builds(
    lambda kind, args: f"{kind}:{args}",
    st.sampled_from(["box", "gaussian", "BOX", "Gaussian"]),
    st.one_of(number_token, st.builds(lambda a, b: f"{a},{b}", number_token, number_token), st.text(max_size=6)),
)
magick_spec = st.builds(
    lambda w, h, origin, vals: f"{w}{'x' + str(h) if h is not None else ''}{origin}: {vals}",
    st.integers(0, 12), st.one_of(st.none(), st.integers(0, 12)),
    st.sampled_from(["", "+0+0", "+1+1", "-1+2", "+5+5"]), row,
)
bank_spec = st.lists(st.one_of(sized_spec, st.sampled_from(kernels.names()), number_token),
                     min_size=1, max_size=4).map(",".join)
any_spec = st.one_of(st.text(), inline_spec, sized_spec, magick_spec, bank_spec,
                     st.sampled_from(kernels.names()))


@PROPERTY
@given(any_spec)
def test_get_kernel_only_kernel_or_kernelcli_error(spec):
    assume(not _names_a_file(spec))
    only_kernel_or_kernelcli_error(get_kernel, spec)


@PROPERTY
@given(any_spec)
def test_get_kernels_only_kernels_or_kernelcli_error(spec):
    assume(not _names_a_file(spec))
    try:
        bank = kernels.get_kernels(spec)
    except KernelcliError:
        return
    assert bank
    for k in bank:
        check_kernel(k)


def _npy_bytes(shape, descr: str, data: bytes, fortran: bool = False) -> bytes:
    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    return buf.getvalue() + data


DESCRS = ["<f4", ">f8", "<i2", "|u1", "|b1", "<c8", "|O", "<U3", "<M8[s]", "|V4", "<f2", "<u8"]
npy_shape = st.lists(st.integers(0, 3000), min_size=0, max_size=4).map(tuple)
npy_file = st.builds(_npy_bytes, npy_shape, st.sampled_from(DESCRS), st.binary(max_size=200), st.booleans())
text_file_bytes = st.one_of(
    st.binary(max_size=400),
    kernel_text.map(lambda t: t.encode("utf-8")),
    st.text().map(lambda t: t.encode("utf-8")),
)
npy_file_bytes = st.one_of(st.binary(max_size=200).map(lambda b: NPY_MAGIC + b), npy_file)


@PROPERTY
@given(data=text_file_bytes, suffix=st.sampled_from([".txt", ".mat", ".npy", ""]))
def test_load_file_of_any_bytes_only_kernel_or_kernelcli_error(tmp_path, data, suffix):
    path = tmp_path / f"kernel{suffix}"
    path.write_bytes(data)
    only_kernel_or_kernelcli_error(load_file, path)
    # and the same file through get_kernel (as the KERNEL argument)
    only_kernel_or_kernelcli_error(get_kernel, str(path))


@PROPERTY
@given(data=npy_file_bytes, suffix=st.sampled_from([".npy", ".txt"]))
def test_load_file_of_npy_bytes_only_kernel_or_kernelcli_error(tmp_path, data, suffix):
    path = tmp_path / f"kernel{suffix}"
    path.write_bytes(data)
    only_kernel_or_kernelcli_error(load_file, path)


@PROPERTY
@given(st.one_of(kernel_text.map(lambda t: ("text", t)), any_spec.map(lambda s: ("spec", s))))
def test_accepted_kernels_have_finite_float32_weights(item):
    kind, text = item
    if kind == "spec":
        assume(not _names_a_file(text))
    try:
        k = parse_text(text, "k.txt") if kind == "text" else get_kernel(text)
    except Exception:  # other properties cover the errors
        return
    check_weights(k)


# --------------------------------------------------------------------------
# images


def only_picture_or_kernelcli_error(data: bytes, max_pixels=DEFAULT_MAX_PIXELS) -> None:
    try:
        picture = read_image(data, max_pixels=max_pixels)
    except KernelcliError:
        return
    assert isinstance(picture, Picture)
    assert picture.pixels.dtype == np.float32 and picture.pixels.ndim in (2, 3)
    assert min(picture.pixels.shape) >= 1


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files in the formats kernelcli reads, to mutate."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    frames = [Image.new("L", (4, 4), v) for v in (1, 2, 3)]
    seeds = {}
    for fmt, img, kw in [
        ("PNG", rgb, {}), ("PNG", Image.fromarray(rng.integers(0, 65535, (5, 4), dtype=np.uint16)), {}),
        ("JPEG", rgb, {}), ("BMP", rgb, {}), ("TIFF", rgb, {}), ("WEBP", rgb, {}),
        ("GIF", rgb.convert("P"), {}), ("PPM", rgb, {}), ("TGA", rgb, {}),
        ("GIF", frames[0], {"save_all": True, "append_images": frames[1:]}),
        ("TIFF", frames[0], {"save_all": True, "append_images": frames[1:]}),
    ]:
        try:
            seeds[f"{fmt}-{len(seeds)}"] = _encoded(img, fmt, **kw)
        except (OSError, KeyError, ValueError):  # a codec this Pillow lacks
            pass
    buf = io.BytesIO()
    np.save(buf, rng.random((3, 4, 2)).astype(np.float32))
    seeds["NPY"] = buf.getvalue()
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    """A small valid file with a few bytes changed, inserted or cut off, at
    positions spread over the whole file (a Random from Hypothesis: plain
    integer draws favour the first bytes)."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    rnd = draw(st.randoms(use_true_random=False))
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.random()
        at = rnd.randrange(len(data))
        if kind < 0.6:
            data[at] = rnd.randrange(256)
        elif kind < 0.8:
            data = data[: max(1, at)]
        else:
            data[at:at] = rnd.randbytes(rnd.randint(1, 8))
    return bytes(data)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
metadata = st.dictionaries(
    st.sampled_from(["mode", "range_max", "labels", "icc_profile", "dpi", "exif"]) | st.text(max_size=5),
    json_value | st.sampled_from(["L", "LA", "RGB", "RGBA", "I;16", "F"]), max_size=6,
).map(lambda d: json.dumps(d).encode("utf-8"))


@st.composite
def npy_with_metadata(draw) -> bytes:
    shape = draw(st.sampled_from([(3, 4), (3, 4, 1), (3, 4, 2), (3, 4, 3), (2, 2, 4)]))
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, dtype=np.float32))
    trailer = draw(st.one_of(metadata, metadata, st.binary(max_size=50)))
    return buf.getvalue() + META_MAGIC + trailer


raw_bytes = st.one_of(
    st.binary(max_size=2000),
    st.binary(max_size=300).map(lambda b: NPY_MAGIC + b),
    st.binary(max_size=300).map(lambda b: PNG_SIGNATURE + b),
)


@PROPERTY
@given(raw_bytes)
def test_read_image_of_arbitrary_bytes(data):
    only_picture_or_kernelcli_error(data)


@PROPERTY
@given(npy_file)
def test_read_image_of_npy_headers(data):
    only_picture_or_kernelcli_error(data)


@PROPERTY
@given(mutated())
def test_read_image_of_damaged_images(data):
    # a low pixel limit keeps damaged headers from allocating big images
    only_picture_or_kernelcli_error(data, max_pixels=1_000_000)


@PROPERTY
@given(npy_with_metadata())
def test_read_image_of_npy_with_any_metadata(data):
    only_picture_or_kernelcli_error(data)


@PROPERTY
@given(st.integers(100, 200_000), st.sampled_from([b"[", b'{"a":']))
def test_read_image_of_npy_with_deeply_nested_metadata(depth, opener):
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2), dtype=np.float32))
    only_picture_or_kernelcli_error(buf.getvalue() + META_MAGIC + opener * depth)


@PROPERTY
@given(data=st.one_of(raw_bytes, npy_file, mutated()))
def test_read_image_from_a_file(tmp_path, data):
    path = tmp_path / "input.png"
    path.write_bytes(data)
    try:
        picture = read_image(path, max_pixels=1_000_000)
    except KernelcliError:
        return
    assert isinstance(picture, Picture)
    assert picture.pixels.dtype == np.float32 and picture.pixels.ndim in (2, 3)


@PROPERTY
@given(st.lists(st.integers(1, 2**45), min_size=2, max_size=3).map(tuple))
def test_read_image_without_a_pixel_limit_refuses_impossible_headers(shape):
    """``max_pixels=None`` means no bound: a lying header must still give a
    KernelcliError (memory or truncation), never a numpy error."""
    assume(int(np.prod(shape, dtype=object)) * 4 > 10**12)
    only_picture_or_kernelcli_error(_npy_bytes(shape, "<f4", b"\0" * 64), max_pixels=None)
