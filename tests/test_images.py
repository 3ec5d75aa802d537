"""Reading and writing pictures: kernelcli.io.read_image / write_image."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from kernelcli.errors import ImageReadError, ImageWriteError
from kernelcli.io import sinks
from kernelcli.io.encode import PillowCanvas, write_image
from kernelcli.io.inputs import read_image
from kernelcli.io.picture import Picture
from kernelcli.io.pixels import clips_to_8bit, quantize, scale_values

# name -> (mode, shape, max value allowed)
SAMPLE_FACTS = {
    "photo.jpg": ("RGB", (300, 451, 3), 255),
    "photo.png": ("RGB", (300, 451, 3), 255),
    "gray.png": ("L", (170, 256), 255),
    "rgba.png": ("RGBA", (170, 256, 4), 255),
    "gray16.png": ("I;16", (170, 256), 65535),
    "gray16.tif": ("I;16", (170, 256), 65535),
    "example-5x5.npy": (None, (5, 5), 1),
}


def _files(folder):
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------
# samples


@pytest.mark.parametrize("name", sorted(SAMPLE_FACTS))
def test_every_sample_reads_with_mode_shape_and_range(samples, name):
    mode, shape, top = SAMPLE_FACTS[name]
    pic = read_image(samples / name)
    assert pic.mode == mode
    assert pic.pixels.shape == shape
    assert pic.pixels.dtype == np.float32
    assert pic.pixels.flags["C_CONTIGUOUS"]
    assert pic.pixels.min() >= 0
    assert pic.pixels.max() <= top
    assert np.all(pic.pixels == np.round(pic.pixels))  # integer pixel values


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tif"])
def test_16_bit_samples_keep_their_full_range(samples, name):
    pic = read_image(samples / name)
    assert pic.max_value == 65535
    assert pic.pixels.max() > 255
    # the low byte varies: not just 8-bit values multiplied by 257
    assert np.any(pic.pixels % 257 != 0)


def test_16_bit_png_and_tiff_hold_the_same_pixels(samples):
    assert np.array_equal(read_image(samples / "gray16.png").pixels,
                          read_image(samples / "gray16.tif").pixels)


def test_rgba_sample_has_varying_alpha(samples):
    pic = read_image(samples / "rgba.png")
    assert pic.has_alpha
    alpha = pic.pixels[..., 3]
    assert alpha.max() == 255 and alpha.min() < 255


def test_worked_example_array(samples):
    pic = read_image(samples / "example-5x5.npy")
    assert pic.source_format == "NPY"
    assert pic.pixels.tolist() == [
        [1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 0],
        [0, 1, 1, 0, 0],
    ]


def test_pixels_match_pillow(samples):
    for name in ("photo.png", "gray.png", "rgba.png"):
        with Image.open(samples / name) as im:
            expected = np.asarray(im, dtype=np.float32)
        assert np.array_equal(read_image(samples / name).pixels, expected)


# --------------------------------------------------------------------------
# round trips


LOSSLESS = [
    ("gray.png", "png"), ("gray.png", "tif"), ("gray.png", "bmp"), ("gray.png", "npy"),
    ("photo.png", "png"), ("photo.png", "tif"), ("photo.png", "bmp"), ("photo.png", "npy"),
    ("rgba.png", "png"), ("rgba.png", "tif"), ("rgba.png", "npy"),
    ("gray16.png", "png"), ("gray16.png", "tif"), ("gray16.png", "npy"),
    ("gray16.tif", "png"), ("gray16.tif", "tif"),
]


@pytest.mark.parametrize("name,ext", LOSSLESS)
def test_round_trip_is_lossless_and_keeps_the_mode(samples, tmp_path, name, ext):
    pic = read_image(samples / name)
    out = tmp_path / f"out.{ext}"
    notes = write_image(out, pic)
    assert notes == []
    back = read_image(out)
    assert back.pixels.shape == pic.pixels.shape
    assert np.array_equal(back.pixels, pic.pixels)
    assert back.mode == pic.mode  # .npy carries the mode in kernelcli's metadata
    if ext != "npy":
        with Image.open(out) as im:
            assert im.format == {"png": "PNG", "tif": "TIFF", "bmp": "BMP"}[ext]


def _encoded(im, fmt, **kwargs):
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_la_png_round_trip(tmp_path):
    a = (np.arange(120).reshape(12, 10) * 2).astype(np.uint8)
    im = Image.merge("LA", [Image.fromarray(a), Image.fromarray(255 - a)])
    pic = read_image(_encoded(im, "PNG"))
    assert pic.mode == "LA" and pic.pixels.shape == (12, 10, 2)
    write_image(tmp_path / "la.png", pic)
    back = read_image(tmp_path / "la.png")
    assert back.mode == "LA" and np.array_equal(back.pixels, pic.pixels)


def test_float_tiff_round_trip_keeps_values(tmp_path):
    a = np.arange(120, dtype=np.float32).reshape(12, 10) * 1.5 - 20.25
    pic = read_image(_encoded(Image.fromarray(a), "TIFF"))
    assert pic.mode == "F" and np.array_equal(pic.pixels, a)
    write_image(tmp_path / "f.tif", pic)
    back = read_image(tmp_path / "f.tif")
    assert back.mode == "F" and np.array_equal(back.pixels, a)


def test_palette_with_transparency_reads_as_rgba():
    im = Image.fromarray((np.arange(120).reshape(12, 10) % 256).astype(np.uint8)).convert("P")
    pic = read_image(_encoded(im, "PNG", transparency=0))
    assert pic.mode == "RGBA" and pic.pixels.shape == (12, 10, 4)
    assert pic.pixels[..., 3].min() == 0 and pic.pixels[..., 3].max() == 255


def test_16_bit_stays_16_bit_on_disk(samples, tmp_path):
    pic = read_image(samples / "gray16.png")
    for ext in ("png", "tif"):
        write_image(tmp_path / f"o.{ext}", pic)
        with Image.open(tmp_path / f"o.{ext}") as im:
            assert im.mode.startswith("I;16") or im.mode == "I"
            assert np.asarray(im).max() > 255


def test_8_bit_stays_8_bit_on_disk(samples, tmp_path):
    write_image(tmp_path / "o.png", read_image(samples / "gray.png"))
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "L"


def test_npy_output_is_plain_numpy(samples, tmp_path):
    """The .npy kernelcli writes (with its metadata) still loads with np.load, unpickled."""
    pic = read_image(samples / "rgba.png")
    write_image(tmp_path / "p.npy", pic)
    loaded = np.load(tmp_path / "p.npy", allow_pickle=False)
    assert loaded.dtype == np.float32
    assert np.array_equal(loaded, pic.pixels)


def test_npy_round_trip_keeps_float_values(tmp_path):
    arr = np.array([[-1.5, 0.25], [300.75, 1e-3]], dtype=np.float32)
    write_image(tmp_path / "a.npy", arr)
    loaded = np.load(tmp_path / "a.npy", allow_pickle=False)
    assert loaded.dtype == np.float32
    assert np.array_equal(loaded, arr)
    assert np.array_equal(read_image(tmp_path / "a.npy").pixels, arr)


def test_jpeg_of_rgba_drops_alpha_with_a_note(samples, tmp_path):
    pic = read_image(samples / "rgba.png")
    notes = write_image(tmp_path / "o.jpg", pic)
    assert any("alpha" in n for n in notes)
    with Image.open(tmp_path / "o.jpg") as im:
        assert im.format == "JPEG"
        assert im.mode == "RGB"
    back = read_image(tmp_path / "o.jpg")
    # colour survives (lossy): close to the original colour channels
    assert np.abs(back.pixels - pic.pixels[..., :3]).mean() < 8


def test_16_bit_to_jpeg_is_scaled_to_8_bit_with_a_note(samples, tmp_path):
    pic = read_image(samples / "gray16.png")
    notes = write_image(tmp_path / "o.jpg", pic)
    assert any("8-bit" in n for n in notes)
    back = read_image(tmp_path / "o.jpg")
    assert back.mode == "L"
    assert np.abs(back.pixels - pic.pixels / 257).mean() < 3


# --------------------------------------------------------------------------
# detection by content


def test_png_under_a_jpg_name_is_read_as_png(samples, tmp_path):
    target = tmp_path / "really-a-png.jpg"
    target.write_bytes((samples / "gray.png").read_bytes())
    pic = read_image(target)
    assert pic.source_format == "PNG"
    assert np.array_equal(pic.pixels, read_image(samples / "gray.png").pixels)


def test_npy_under_a_png_name_is_read_as_npy(samples, tmp_path):
    target = tmp_path / "really-an-npy.png"
    target.write_bytes((samples / "example-5x5.npy").read_bytes())
    pic = read_image(target)
    assert pic.source_format == "NPY" and pic.mode is None
    assert pic.pixels.shape == (5, 5)


def test_bytes_input(samples):
    for name in ("gray.png", "example-5x5.npy", "photo.jpg"):
        data = (samples / name).read_bytes()
        assert np.array_equal(read_image(data).pixels, read_image(samples / name).pixels)
        assert np.array_equal(read_image(bytearray(data)).pixels, read_image(samples / name).pixels)


def test_file_object_input(samples):
    with open(samples / "rgba.png", "rb") as f:
        pic = read_image(f)
    assert pic.mode == "RGBA"
    pic2 = read_image(io.BytesIO((samples / "gray16.tif").read_bytes()))
    assert pic2.mode == "I;16"


# --------------------------------------------------------------------------
# refused inputs


def test_npy_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled-marker"

    class Sneaky:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Sneaky(), 1
    path = tmp_path / "objects.npy"
    np.save(path, np.array([arr, arr]), allow_pickle=True)
    assert path.read_bytes().startswith(b"\x93NUMPY")
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(path) in str(e.value)
    assert "unpickle" in str(e.value) or "object" in str(e.value).lower()
    assert not marker.exists()


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_npy_with_wrong_dimensions_is_refused(tmp_path, shape):
    path = tmp_path / "arr.npy"
    np.save(path, np.zeros(shape, dtype=np.float32))
    with pytest.raises(ImageReadError, match="shape"):
        read_image(path)


def test_npy_string_array_is_refused(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ImageReadError):
        read_image(path)


def test_empty_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_truncated_png_is_refused_naming_it(samples, tmp_path):
    data = (samples / "gray.png").read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_random_bytes_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_truncated_npy_is_refused(samples, tmp_path):
    data = (samples / "example-5x5.npy").read_bytes()
    path = tmp_path / "cut.npy"
    path.write_bytes(data[:-20])
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


# --------------------------------------------------------------------------
# decompression bombs


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory):
    """A 20000x20000 1-bit PNG: a few tens of KB on disk, 400 million pixels."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    assert path.stat().st_size < 200_000
    return path


def test_decompression_bomb_is_refused_by_default(bomb_png):
    with pytest.raises(ImageReadError) as e:
        read_image(bomb_png)
    message = str(e.value)
    assert "--max-pixels" in message
    assert str(bomb_png) in message


def test_decompression_bomb_message_gives_the_size(bomb_png):
    """The message should say how many pixels the file claims (it knows the header)."""
    with pytest.raises(ImageReadError) as e:
        read_image(bomb_png)
    assert "20000x20000" in str(e.value)


def test_max_pixels_refuses_and_accepts(tmp_path):
    path = tmp_path / "small.png"
    Image.new("1", (300, 200), 1).save(path)
    with pytest.raises(ImageReadError, match="--max-pixels"):
        read_image(path, max_pixels=10_000)
    # just over the limit (Pillow only warns below twice the limit): also refused
    with pytest.raises(ImageReadError, match="--max-pixels"):
        read_image(path, max_pixels=59_999)
    pic = read_image(path, max_pixels=60_000)
    assert pic.mode == "L" and pic.pixels.shape == (200, 300)
    assert pic.pixels.max() == 255
    assert any("1-bit" in n for n in pic.notes)


def test_max_pixels_does_not_leak_into_pillow(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "small.png"
    Image.new("L", (10, 10)).save(path)
    read_image(path, max_pixels=1000)
    with pytest.raises(ImageReadError):
        read_image(path, max_pixels=50)
    assert Image.MAX_IMAGE_PIXELS == before


# --------------------------------------------------------------------------
# scaling


def test_clip_rounds_half_up_and_clips():
    v = np.array([-3.4, 0.5, 1.49, 254.6, 300.0], dtype=np.float32)
    assert scale_values(v, 255, "clip", 0.0).tolist() == [0, 1, 1, 255, 255]


@pytest.mark.parametrize("top", [255, 65535])
@pytest.mark.parametrize("scaling, factor, offset", [("clip", 1.0, 0.0), ("clip", 0.5, 128.0), ("abs", 1.0, 0.0),
                                                     ("abs", 3.0, -2.0)])
def test_quantize_matches_a_plain_reference_with_nan_and_infinities(top, scaling, factor, offset):
    rng = np.random.default_rng(top)
    v = rng.uniform(-2.0 * top, 2.0 * top, (37, 29)).astype(np.float32)
    v[::5] = np.round(v[::5]) + 0.5  # exact halves round up
    v[1, :6] = [np.nan, np.inf, -np.inf, -0.5, 0.5, top - 0.5]
    v[2, :2] = [np.float32(3e38), np.float32(-3e38)]
    mapped = (np.abs(v) if scaling == "abs" else v).astype(np.float64) * factor + offset
    with np.errstate(invalid="ignore"):
        want = np.where(np.isnan(mapped), 0, np.clip(np.floor(mapped + 0.5), 0, top))
    got = quantize(v, top, scaling, offset, factor)
    assert got.dtype == (np.uint8 if top == 255 else np.uint16)
    assert np.array_equal(got, want.astype(got.dtype))
    assert got[1, 0] == 0 and got[1, 1] == top and got[1, 2] == (top if scaling == "abs" else 0)


def test_clip_through_write_image(tmp_path):
    arr = np.array([[-3.4, 0.5, 1.49, 254.6, 300.0]], dtype=np.float32)
    write_image(tmp_path / "c.png", arr)
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "L"
        assert np.asarray(im).tolist() == [[0, 1, 1, 255, 255]]


def test_abs_scaling(tmp_path):
    arr = np.array([[-3.4, -200.0, 10.0, -300.0]], dtype=np.float32)
    assert scale_values(arr, 255, "abs", 0.0).tolist() == [[3, 200, 10, 255]]
    write_image(tmp_path / "a.png", arr, scaling="abs")
    with Image.open(tmp_path / "a.png") as im:
        assert np.asarray(im).tolist() == [[3, 200, 10, 255]]


def test_stretch_scaling(tmp_path):
    arr = np.array([[-10.0, 0.0, 10.0], [20.0, 30.0, 40.0]], dtype=np.float32)
    out = scale_values(arr, 255, "stretch", 0.0)
    assert out.min() == 0 and out.max() == 255
    assert out.tolist() == [[0, 51, 102], [153, 204, 255]]
    write_image(tmp_path / "s.png", arr, scaling="stretch")
    with Image.open(tmp_path / "s.png") as im:
        assert np.asarray(im).tolist() == [[0, 51, 102], [153, 204, 255]]


def test_stretch_of_a_constant_image_is_zero():
    assert scale_values(np.full((2, 2), 7.0, np.float32), 255, "stretch", 0.0).tolist() == [[0, 0], [0, 0]]


def test_stretch_16_bit_uses_the_full_16_bit_range(tmp_path):
    pic = Picture(np.array([[-5.0, 5.0]], dtype=np.float32), "I;16")
    write_image(tmp_path / "s16.png", pic, scaling="stretch")
    assert read_image(tmp_path / "s16.png").pixels.tolist() == [[0, 65535]]


def test_offset_128(tmp_path):
    arr = np.array([[-128.0, -10.0, 0.0, 100.0, 127.0, 200.0]], dtype=np.float32)
    assert scale_values(arr, 255, "clip", 128.0).tolist() == [[0, 118, 128, 228, 255, 255]]
    write_image(tmp_path / "o.png", arr, offset=128)
    with Image.open(tmp_path / "o.png") as im:
        assert np.asarray(im).tolist() == [[0, 118, 128, 228, 255, 255]]


def test_scaling_does_not_touch_npy(tmp_path):
    arr = np.array([[-3.4, 300.0]], dtype=np.float32)
    write_image(tmp_path / "n.npy", arr, scaling="stretch", offset=128)
    assert np.load(tmp_path / "n.npy").tolist() == arr.tolist()


# --------------------------------------------------------------------------
# atomic writing


def test_write_leaves_no_temporary_file(samples, tmp_path):
    pic = read_image(samples / "gray.png")
    for ext in ("png", "npy", "jpg", "tif"):
        write_image(tmp_path / f"out.{ext}", pic)
    assert _files(tmp_path) == ["out.jpg", "out.npy", "out.png", "out.tif"]


def test_overwrite_replaces_the_file(samples, tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old contents")
    write_image(target, read_image(samples / "gray.png"))
    assert read_image(target).mode == "L"
    assert _files(tmp_path) == ["out.png"]


def test_failing_encode_keeps_previous_output(tmp_path, monkeypatch):
    from PIL import Image

    target = tmp_path / "out.jpg"
    target.write_bytes(b"previous output")

    def refuse(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise ValueError("the encoder refuses")

    monkeypatch.setattr(Image.Image, "save", refuse)
    with pytest.raises(ImageWriteError, match="cannot encode RGB pixels as JPEG: the encoder refuses"):
        write_image(target, np.zeros((4, 4, 3), np.float32))
    assert target.read_bytes() == b"previous output"
    assert _files(tmp_path) == ["out.jpg"]
    assert not any(name.endswith(".part") for name in _files(tmp_path))


def test_metadata_the_encoder_refuses_is_dropped_with_a_note(tmp_path, monkeypatch):
    # JPEG holds 65533 bytes of EXIF: dropped before encoding; and when Pillow
    # refuses metadata for a reason not known in advance, the picture is
    # encoded again without it
    from PIL import Image

    target = tmp_path / "out.jpg"
    pic = Picture(np.zeros((4, 4, 3), np.float32), "RGB", "PNG", {"exif": b"x" * 70000})
    notes = write_image(target, pic)
    assert notes == [f"{target}: dropped the EXIF (70,000 bytes): JPEG holds at most 65,533"]
    assert Image.open(target).size == (4, 4)

    save = Image.Image.save

    def picky(self, fp, fmt=None, **kwargs):
        if "exif" in kwargs:
            fp.write(b"partial")
            raise ValueError("no EXIF today")
        return save(self, fp, fmt, **kwargs)

    monkeypatch.setattr(Image.Image, "save", picky)
    pic = Picture(np.zeros((4, 4, 3), np.float32), "RGB", "PNG", {"exif": b"Exif\0\0tiny", "dpi": (72, 72)})
    notes = write_image(target, pic)
    assert notes == [f"{target}: dropped the dpi and EXIF: the JPEG encoder refused them (no EXIF today)"]
    assert Image.open(target).size == (4, 4) and not target.read_bytes().startswith(b"partial")
    assert _files(tmp_path) == ["out.jpg"]


def test_failing_write_removes_the_part_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous output")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sinks.os, "replace", broken_replace)
    with pytest.raises(ImageWriteError):
        write_image(target, np.zeros((3, 3), np.float32))
    assert target.read_bytes() == b"previous output"
    assert _files(tmp_path) == ["out.png"]


def test_disk_full_while_encoding_into_the_file(tmp_path, monkeypatch):
    # Pillow's formats are encoded straight into the temporary file: an OS
    # error while it writes names the file, and nothing is left behind.
    from PIL import Image

    target = tmp_path / "out.jpg"
    target.write_bytes(b"previous output")

    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(ImageWriteError) as e:
        write_image(target, np.zeros((4, 4, 3), np.float32))
    assert str(e.value) == f"{target}: cannot write: No space left on device"
    assert target.read_bytes() == b"previous output"
    assert _files(tmp_path) == ["out.jpg"]


@pytest.mark.parametrize("ext", ["jpg", "tif", "webp", "bmp"])
def test_a_file_gets_the_bytes_a_stream_gets(tmp_path, ext):
    rng = np.random.default_rng(3)
    pic = Picture(rng.integers(0, 256, (37, 53, 3)).astype(np.float32), "RGB", "PNG", {"dpi": (72.0, 72.0)})
    stream = io.BytesIO()
    write_image(stream, pic, ext)
    write_image(tmp_path / f"out.{ext}", pic)
    assert (tmp_path / f"out.{ext}").read_bytes() == stream.getvalue()
    assert _files(tmp_path) == [f"out.{ext}"]


def test_writing_to_a_missing_folder_fails(tmp_path):
    target = tmp_path / "no" / "such" / "folder" / "out.png"
    with pytest.raises(ImageWriteError) as e:
        write_image(target, np.zeros((3, 3), np.float32))
    assert "folder" in str(e.value)
    assert not (tmp_path / "no").exists()


def test_write_to_a_file_object(samples):
    buf = io.BytesIO()
    write_image(buf, read_image(samples / "gray.png"), "png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_unknown_output_extension_is_refused(tmp_path):
    from kernelcli.errors import UsageError

    with pytest.raises(UsageError):
        write_image(tmp_path / "out.xyz", np.zeros((3, 3), np.float32))
    assert _files(tmp_path) == []


def test_new_file_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_image(tmp_path / "new.png", np.zeros((3, 3), np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o644


def test_overwrite_keeps_the_permissions_of_the_existing_file(tmp_path):
    target = tmp_path / "old.png"
    target.write_bytes(b"x")
    target.chmod(0o600)
    write_image(target, np.zeros((3, 3), np.float32))
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes().startswith(b"\x89PNG")


def test_output_that_is_a_folder_fails(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageWriteError):
        write_image(tmp_path / "d.png", np.zeros((3, 3), np.float32))
    assert _files(tmp_path) == ["d.png"]
    assert os.listdir(tmp_path / "d.png") == []


def test_gray_webp_stays_gray_or_says_so(samples, tmp_path):
    """kernelcli.io.pixels._FORMAT_MODES says WebP stores L, so no note is given; the file must then be gray."""
    pic = read_image(samples / "gray.png")
    notes = write_image(tmp_path / "g.webp", pic)
    back = read_image(tmp_path / "g.webp")
    assert back.mode == "L" or notes, (back.mode, notes)


def test_rgba_webp_keeps_alpha(samples, tmp_path):
    pic = read_image(samples / "rgba.png")
    assert write_image(tmp_path / "a.webp", pic, quality=100) == []
    back = read_image(tmp_path / "a.webp")
    assert back.mode == "RGBA"
    assert np.abs(back.pixels[..., 3] - pic.pixels[..., 3]).max() <= 2


@pytest.mark.parametrize("name", ["photo.png", "gray.png", "gray16.png", "rgba.png", "photo.jpg", "gray16.tif"])
def test_integer_read_hands_out_the_same_pixels_by_rows(samples, name):
    whole = read_image(samples / name)
    rows = read_image(samples / name, integers=True)
    px = rows.pixels
    assert px.dtype.kind == "u" and px.shape == whole.pixels.shape and rows.mode == whole.mode
    assert np.array_equal(np.asarray(px).astype(np.float32), whole.pixels)
    assert np.array_equal(px.astype(np.float32), whole.pixels)
    h = px.shape[0]
    for a, b in ((0, 1), (3, 17), (h - 2, h), (0, h), (h, h)):
        band = px[a:b]
        assert band.shape == (b - a,) + px.shape[1:] and band.dtype == px.dtype
        assert np.array_equal(band.astype(np.float32), whole.pixels[a:b])


@pytest.mark.parametrize("ext", ["tif", "gif", "png"])
def test_a_file_of_several_frames_is_decoded_before_it_is_closed(tmp_path, ext):
    # Pillow reads files a block at a time; counting frames can leave the first
    # to be decoded anew, which must happen while the file is still open
    rng = np.random.default_rng(4)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)) for _ in range(3)]
    path = tmp_path / f"frames.{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as im:
        first = np.asarray(im.convert("RGB") if im.mode == "P" else im)
    pic = read_image(path, integers=True)
    assert any("3 frames" in n for n in pic.notes)
    assert np.array_equal(np.asarray(pic.pixels), first)
    assert np.array_equal(pic.pixels[5:9], first[5:9])


@pytest.mark.parametrize("shape, dtype", [((9, 7), np.uint8), ((9, 7, 2), np.uint8), ((9, 7, 3), np.uint8),
                                          ((9, 7, 4), np.uint8), ((9, 7), np.uint16)])
def test_pillow_canvas_stores_bands_in_place(shape, dtype):
    rng = np.random.default_rng(len(shape))
    values = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    canvas = PillowCanvas(shape, dtype)
    for a, b in ((4, 9), (0, 1), (1, 4)):  # out of order, one row, the rest
        canvas[a:b] = values[a:b]
    assert np.array_equal(np.asarray(canvas), values)
    canvas[2:3] = np.asfortranarray(values[2:3] // 2)  # not C-ordered: copied first
    assert np.array_equal(np.asarray(canvas)[2], values[2] // 2)


def test_clips_to_8bit_only_for_plain_8bit_conversions():
    def pic(mode):
        return Picture(np.zeros((2, 2, 3) if mode == "RGB" else (2, 2), np.uint8), mode, "PNG")

    assert clips_to_8bit(pic("RGB"), "JPEG") and clips_to_8bit(pic("L"), "PNG")
    assert clips_to_8bit(pic("L"), "TIFF") and clips_to_8bit(pic("RGB"), "WEBP")
    assert not clips_to_8bit(pic("RGB"), "PNG", "abs")
    assert not clips_to_8bit(pic("RGB"), "PNG", "clip", 0.5)
    assert not clips_to_8bit(pic("RGB"), "NPY")
    for mode in ("LA", "RGBA", "I;16", "F", None):
        assert not clips_to_8bit(Picture(np.zeros((2, 2), np.uint8), mode, "PNG"), "PNG"), mode


def test_on_header_is_called_before_the_pixels_are_decoded(tmp_path, monkeypatch):
    from PIL import Image, ImageFile

    events = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        events.append("decode")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    rgba = np.zeros((7, 9, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgba[:, :, 0]).save(tmp_path / "g.jpg")
    for name, want in (("a.png", (7, 9, 4)), ("g.jpg", (7, 9, 1))):
        events.clear()
        read_image(str(tmp_path / name), on_header=lambda *a: events.append(a))
        assert events[0] == want and "decode" in events[1:]
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    events.clear()
    read_image(str(tmp_path / "x.npy"), on_header=lambda *a: events.append(a))
    assert events == []  # a .npy has no pixels to decode
