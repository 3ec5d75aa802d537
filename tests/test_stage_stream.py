"""kernelcli relu / kernelcli pool on a .npy a band of rows at a time
(files.run_stage): the same bytes and notes as reading the array whole."""

from __future__ import annotations

import io

import numpy as np
import pytest

from kernelcli import stages
from kernelcli.run import files
from kernelcli.errors import ImageReadError, UsageError
from kernelcli.io.encode import write_image
from kernelcli.io.inputs import read_image
from kernelcli.io.npy import npy_trailer
from kernelcli.io.picture import Picture
from kernelcli.io.encode import OutputSpec
from kernelcli.stages import Pool, Relu


def npy_bytes(arr, meta=None) -> bytes:
    """A .npy of ``arr`` as it is (any dtype), with kernelcli's metadata after it."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue() + (npy_trailer(meta) if meta else b"")


def whole(data: bytes, stage) -> tuple[bytes, list]:
    """What reading the whole array, running the stage and writing it gives."""
    picture = read_image(io.BytesIO(data))
    notes, picture.notes = picture.notes, []
    if isinstance(stage, Relu):
        out = stages.relu_stage(picture, stage.slope, inplace=True)
    else:
        out = stages.pool_stage(picture, stage)
    target = io.BytesIO()
    notes += out.notes + write_image(target, out, "NPY")
    return target.getvalue(), notes


class Reads(io.BytesIO):
    """A stream that records the largest single read."""

    largest = 0

    def readinto(self, view):
        self.largest = max(self.largest, len(view))
        return super().readinto(view)

    def readinto1(self, view):  # (what a pipe is read with: one read at a time)
        self.largest = max(self.largest, len(view))
        return super().readinto1(view)


def streamed(data: bytes, stage, band_bytes=None, monkeypatch=None):
    if band_bytes is not None:
        monkeypatch.setattr(files, "STREAM_BAND_BYTES", band_bytes)
    source, target = Reads(data), io.BytesIO()
    notes = files.run_stage(source, target, stage, OutputSpec(fmt="npy"))
    return target.getvalue(), notes, source


STAGES = [Relu(), Relu(0.1), Pool("max"), Pool("avg", 3), Pool("sum", (3, 2), (2, 1)), Pool("max", 2, 3),
          Pool("avg", (2, 5), (5, 2)), Pool("max", 1)]


@pytest.mark.parametrize("stage", STAGES, ids=repr)
@pytest.mark.parametrize("shape", [(37, 23), (40, 19, 3), (29, 8, 5), (1, 30), (6, 1, 3)])
@pytest.mark.parametrize("band_bytes", [1, 700, 10_000, None])
def test_bands_give_the_bytes_of_the_whole_array(stage, shape, band_bytes, monkeypatch):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    arr = rng.normal(0, 50, shape).astype(np.float32)
    if isinstance(stage, Pool) and (np.atleast_1d(stage.size)[0] > shape[0] or np.atleast_1d(stage.size)[-1] > shape[1]):
        with pytest.raises(UsageError, match="larger than its input"):
            streamed(npy_bytes(arr), stage, band_bytes, monkeypatch)
        return
    data = npy_bytes(arr, {"range_max": 1000.0, "labels": [f"m{i}" for i in range(arr.shape[2])]}
                     if arr.ndim == 3 else {"mode": "F"})
    got, notes, _ = streamed(data, stage, band_bytes, monkeypatch)
    want, want_notes = whole(data, stage)
    assert got == want
    assert notes == want_notes


def test_it_really_goes_a_band_at_a_time(monkeypatch):
    arr = np.arange(200 * 50, dtype=np.float32).reshape(200, 50) - 5000
    got, _, source = streamed(npy_bytes(arr), Relu(), 4 * 50 * 10, monkeypatch)
    assert source.largest == 4 * 50 * 10  # ten rows per read, never the whole array
    assert np.array_equal(np.load(io.BytesIO(got)), np.maximum(arr, 0))


@pytest.mark.parametrize("dtype", ["uint8", "int16", ">f4", "float64"])
def test_other_dtypes_are_made_float32_as_when_read_whole(dtype, monkeypatch):
    arr = (np.random.default_rng(3).normal(0, 100, (21, 17, 3))).astype(dtype)
    data = npy_bytes(arr)
    for stage in (Relu(), Pool("avg", 2)):
        got, notes, _ = streamed(data, stage, 500, monkeypatch)
        assert (got, notes) == whole(data, stage)


def test_nan_and_infinity_note_counts_every_row(monkeypatch):
    arr = np.ones((30, 10, 3), np.float32)
    arr[0, 0, 0] = np.nan  # read by the first band
    arr[29, 9, 2] = np.inf  # in the row pooling drops
    arr[13, 4, 1] = -np.inf
    data = npy_bytes(arr)
    got, notes, _ = streamed(data, Pool("max", 2, 3), 300, monkeypatch)
    want, want_notes = whole(data, Pool("max", 2, 3))
    assert got == want and notes == want_notes
    assert any("holds 3 NaN or infinite values" in n for n in notes)


@pytest.mark.parametrize("channels", [2, 4])
def test_two_or_four_channels_are_read_whole_for_their_alpha(channels, monkeypatch):
    """Whether the last channel is alpha is known from the metadata after the data."""
    arr = np.random.default_rng(1).normal(0, 50, (12, 9, channels)).astype(np.float32)
    data = npy_bytes(arr, {"mode": "LA" if channels == 2 else "RGBA"})
    for stage in (Relu(), Pool("sum", 2)):
        got, notes, source = streamed(data, stage, 100, monkeypatch)
        assert (got, notes) == whole(data, stage)
        assert source.largest == arr.nbytes  # read whole
    out = np.load(io.BytesIO(streamed(data, Relu(), 100, monkeypatch)[0]))
    assert np.array_equal(out[..., -1], arr[..., -1])  # alpha passes through ReLU


def test_truncated_stream_is_an_error_naming_the_bytes(tmp_path, monkeypatch):
    arr = np.ones((40, 10), np.float32)
    data = npy_bytes(arr)[:-100]
    target = tmp_path / "out.npy"
    monkeypatch.setattr(files, "STREAM_BAND_BYTES", 400)
    with pytest.raises(ImageReadError, match=r"truncated \.npy: 1,500 of 1,600 data bytes"):
        files.run_stage(io.BytesIO(data), target, Relu())
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_pictures_and_image_outputs_go_whole(tmp_path):
    gray = Picture(np.random.default_rng(2).normal(100, 80, (16, 20)).astype(np.float32), "L", "PNG")
    png = tmp_path / "in.png"
    write_image(png, gray)
    out = tmp_path / "out.png"
    files.run_stage(png, out, Pool("max", 2))
    assert read_image(out).pixels.shape == (8, 10)
    data = npy_bytes(np.full((6, 6, 3), -3.0, np.float32))
    target = io.BytesIO()
    files.run_stage(io.BytesIO(data), target, Relu(), OutputSpec(fmt="png"))  # npy in, picture out: whole
    assert target.getvalue().startswith(b"\x89PNG")
