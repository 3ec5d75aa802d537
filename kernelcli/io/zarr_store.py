"""Zarr and OME-Zarr stores a band of rows at a time: reading only the chunks
a band touches, and writing bands of whole chunk rows.

A store is a folder (``x.zarr``, or any folder holding ``zarr.json``,
``.zarray`` or ``.zgroup``), version 2 or 3, read and written through the
optional ``zarr`` package (imported here only, when a store is given). It
holds one picture or array: an array ``H x W`` or ``H x W x C``, or an
OME-Zarr image (a group with ``multiscales`` metadata, v0.4 in its
attributes or v0.5 under ``ome``), of which the full-resolution level is
read, its axes mapped to rows, columns and channels (other axes must be
single planes).

A chunk missing from the store reads as the array's fill value, as the Zarr
specification says (writers leave out chunks that hold nothing else); a
chunk that cannot be decoded is an error naming the store and the rows.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np

from .. import _memory, stopping
from ..errors import ImageReadError, ImageWriteError
from .picture import Picture, bomb_message

INSTALL = "pip install 'kernelcli[zarr]'"

#: Files that make a folder a Zarr store (v3, v2 array, v2 group).
STORE_FILES = ("zarr.json", ".zarray", ".zgroup")

#: Compression of a Zarr output: zstd at this level (fast; pictures with
#: noise compress little more at higher levels).
ZSTD_LEVEL = 1

#: Columns per chunk of a Zarr output (a chunk holds every channel, and the
#: rows of one band).
CHUNK_COLUMNS = 4096

#: Decoded chunk rows kept for the next band (a band of a few rows reads a
#: part of a chunk row that the next bands read on from), when one chunk
#: row holds at most :data:`KEEP_BYTES`; the newest are kept.
KEEP_BLOCKS = 2
KEEP_BYTES = 256 * 2**20


def is_zarr_store(path) -> bool:
    """Is ``path`` a folder that is a Zarr store (by name or by its metadata files)?"""
    try:
        if not os.path.isdir(path):
            return False
    except (OSError, ValueError):
        return False
    if is_zarr_name(path):
        return True
    return any(os.path.isfile(os.path.join(path, name)) for name in STORE_FILES)


def is_zarr_name(path) -> bool:
    """Does ``path`` name a Zarr store (``.zarr``)? (An OUTPUT by that name is written as one.)"""
    return str(path).rstrip("/\\").lower().endswith(".zarr")


def zarr_module(name: str = "Zarr"):
    try:
        import zarr
    except ImportError:
        raise ImageReadError(f"{name}: reading or writing Zarr needs the zarr package: {INSTALL}") from None
    return zarr


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


@dataclass(frozen=True)
class ZarrLayout:
    """Where a store's picture is and how its axes map to rows, columns and channels."""

    array: str  # the array's path inside the store ("" for the store itself)
    axes: tuple  # the axis names as stored: ("y", "x", "c"), ("c", "y", "x"), ("t", "c", "z", "y", "x")...
    zarr_format: int
    block_rows: int  # rows of one chunk (or shard): bands read whole chunk rows
    ome: dict | None = None  # the multiscales entry of an OME-Zarr image (for an OME-Zarr output)
    ome_version: str | None = None


# --------------------------------------------------------------------------
# reading


def open_zarr(path, max_pixels: int | None) -> tuple[tuple, np.dtype, Picture, ZarrLayout]:
    """The picture of a store as ``(shape, dtype, meta, layout)``: ``H x W``
    or ``H x W x C``, its sample type, a Picture with 1 x 1 placeholder
    pixels that carries the mode and value range, and the layout. Only the
    metadata is read; a picture over ``max_pixels`` is refused here."""
    name = str(path)
    zarr = zarr_module(name)
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as e:  # missing or garbled metadata: zarr and json say what is wrong
        raise ImageReadError(f"{name}: not a readable Zarr store: {_first_line(e)}") from None
    ome, version = None, None
    if isinstance(node, zarr.Group):
        array, sub, axes, ome, version = _ome_image(node, name)
    else:
        array, sub = node, ""
        if array.ndim not in (2, 3):
            raise ImageReadError(f"{name}: a Zarr array of shape {tuple(array.shape)} is not a picture "
                                 "(H x W, or H x W x C)")
        axes = ("y", "x", "c")[:array.ndim]
    stored = dict(zip(axes, array.shape))
    for axis, size in stored.items():
        if axis not in ("y", "x", "c") and size != 1:
            raise ImageReadError(f"{name}: its {axis!r} axis has {size} planes; kernelcli reads a picture of "
                                 "one plane (t and z of size 1)")
    h, w = stored["y"], stored["x"]
    if h < 1 or w < 1:
        raise ImageReadError(f"{name}: an empty picture ({w}x{h})")
    if max_pixels is not None and h * w > max_pixels:
        raise ImageReadError(bomb_message(name, (w, h), max_pixels))
    channels = stored.get("c", 1)
    shape = (h, w) if channels == 1 else (h, w, channels)
    dtype = np.dtype(array.dtype.to_native_dtype() if hasattr(array.dtype, "to_native_dtype") else array.dtype)
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise ImageReadError(f"{name}: Zarr samples of type {dtype} are not pixels kernelcli reads")
    chunk = tuple(array.chunks)
    block = tuple(getattr(array, "shards", None) or chunk)
    _memory.ensure_memory(math.prod(chunk) * dtype.itemsize, f"{name}: one chunk of {'x'.join(map(str, chunk))}",
                          "rechunk the store into smaller chunks")
    layout = ZarrLayout(sub, tuple(axes), int(array.metadata.zarr_format), int(block[axes.index("y")]), ome,
                        version)
    return shape, dtype, _meta(dtype, channels if len(shape) == 3 else 1, version), layout


def describe_zarr(path) -> dict:
    """What ``kernelcli info`` shows of a store (as :func:`kernelcli.io.header.describe`): the
    picture's size, mode and bits, its stored shape and dtype, and the store's format, axes and chunks."""
    shape, dtype, meta, layout = open_zarr(path, None)
    zarr = zarr_module(str(path))
    array = zarr.open_array(store=str(path), path=layout.array, mode="r", zarr_format=layout.zarr_format)
    extra = {"zarr_format": layout.zarr_format, "array": layout.array or None, "axes": "".join(layout.axes),
             "chunks": list(array.chunks)}
    if layout.ome_version:
        extra["ome_zarr"] = layout.ome_version
    return {"file": str(path), "format": "ZARR", "width": shape[1], "height": shape[0], "mode": meta.mode,
            "read_as": meta.mode, "bits": dtype.itemsize * 8, "frames": 1, "orientation": None,
            "icc_profile": None, "dpi": None, "shape": list(array.shape), "dtype": dtype.name, "metadata": extra}


def _meta(dtype: np.dtype, channels: int, ome) -> Picture:
    """The mode and value range of a store's pixels: 8- and 16-bit ones are
    pictures, as in a TIFF; any other number is a value, as in a ``.npy``."""
    mode, top = None, None
    if dtype == np.uint8:
        mode, top = ({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(channels), 255.0)
    elif dtype == np.uint16:
        mode, top = ("I;16" if channels == 1 else None), 65535.0
    shape = (1, 1) if channels == 1 else (1, 1, channels)
    return Picture(np.zeros(shape, np.float32), mode=mode, source_format="ZARR",
                   range_max=None if mode is not None else top)


def _ome_image(group, name: str):
    """``(array, path, axes, multiscales entry, version)`` of an OME-Zarr image's full resolution."""
    attrs = group.attrs.asdict()
    version = None
    if isinstance(attrs.get("ome"), dict):
        version = str(attrs["ome"].get("version") or "0.5")
        scales = attrs["ome"].get("multiscales")
    else:
        scales = attrs.get("multiscales")
    if scales is None:
        raise ImageReadError(f"{name}: a Zarr group with no OME-Zarr multiscales metadata; give the folder "
                             "of the array to read")
    try:
        entry = scales[0]
        dataset = entry["datasets"][0]["path"]
        axes = tuple(_axis_name(a) for a in entry["axes"])
        version = version or str(entry.get("version") or "0.4")
        if not isinstance(dataset, str):
            raise TypeError("a dataset path that is not text")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ImageReadError(f"{name}: garbled OME-Zarr multiscales metadata ({_first_line(e)})") from None
    if len(set(axes)) != len(axes) or "y" not in axes or "x" not in axes:
        raise ImageReadError(f"{name}: OME-Zarr axes {list(axes)} do not name one y and one x axis")
    try:
        array = group[dataset]
    except Exception as e:
        raise ImageReadError(f"{name}: its OME-Zarr level {dataset!r} cannot be opened: {_first_line(e)}") \
            from None
    if not hasattr(array, "dtype") or array.ndim != len(axes):
        raise ImageReadError(f"{name}: its OME-Zarr level {dataset!r} is not an array of the "
                             f"{len(axes)} axes {list(axes)}")
    return array, dataset, axes, entry, version


def _axis_name(axis) -> str:
    """An OME-Zarr axis as ``t``, ``c``, ``z``, ``y``, ``x`` (or its own name)."""
    if isinstance(axis, str):
        return axis.lower()
    if axis.get("type") == "channel":
        return "c"
    return str(axis["name"]).lower()


_arrays: dict = {}  # (path, array, stamp) -> the opened zarr array, per process
_kept: list = []  # [(key, rows)], newest last
_lock = threading.Lock()
_decoding: dict = {}  # key -> a lock held while that chunk row is decoded


def _kept_block(key, decode) -> np.ndarray:
    """A chunk row from the kept ones, or ``decode()``d and kept: two bands
    that want the same chunk row at once decode it once (the second waits)."""
    with _lock:
        rows = next((r for k, r in _kept if k == key), None)
        if rows is not None:
            return rows
        busy = _decoding.setdefault(key, threading.Lock())
    with busy:
        with _lock:
            rows = next((r for k, r in _kept if k == key), None)
        if rows is None:
            try:
                rows = decode()
                with _lock:
                    _kept.append((key, rows))
                    del _kept[:-KEEP_BLOCKS]
            finally:
                with _lock:
                    _decoding.pop(key, None)
    return rows


def _stamp(path: str, layout: ZarrLayout):
    """What changes when the array is rewritten: its metadata file's time and size."""
    for meta in ("zarr.json", ".zarray"):
        try:
            st = os.stat(os.path.join(path, layout.array, meta))
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            continue
    return None


def _opened(path: str, layout: ZarrLayout, stamp):
    key = (path, layout.array, stamp)
    with _lock:
        array = _arrays.get(key)
    if array is None:
        zarr = zarr_module(path)
        array = zarr.open_array(store=path, path=layout.array, mode="r", zarr_format=layout.zarr_format)
        with _lock:
            _arrays.clear()  # one store at a time is read: no old ones kept
            _arrays[key] = array
    return array


def read_zarr_rows(path, shape: tuple, dtype, first: int, stop: int, layout: ZarrLayout) -> np.ndarray:
    """Rows ``[first, stop)`` of the store's picture (``H x W`` or ``H x W x
    C``, as :func:`open_zarr` gave them), decoding only the chunks they
    touch; whole chunk rows are kept for the next bands (at most
    :data:`KEEP_BLOCKS`) when one is small enough."""
    name = str(path)
    out = np.empty((stop - first,) + tuple(shape[1:]), np.dtype(dtype))
    row_bytes = math.prod(shape[1:]) * np.dtype(dtype).itemsize
    try:
        stamp = _stamp(name, layout)
        array = _opened(name, layout, stamp)
        if layout.block_rows * row_bytes > KEEP_BYTES:
            out[...] = _rows(array, layout, shape, first, stop)
            return out
        step = layout.block_rows
        for block in range(first // step, (stop - 1) // step + 1):
            b0 = block * step
            rows = _kept_block((name, layout.array, stamp, block),
                               lambda: _rows(array, layout, shape, b0, min(b0 + step, shape[0])))
            y0, y1 = max(first, b0), min(stop, b0 + len(rows))
            out[y0 - first:y1 - first] = rows[y0 - b0:y1 - b0]
    except ImageReadError:
        raise
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # a chunk zarr cannot decode
        raise ImageReadError(f"{name}: cannot decode rows {first}-{stop - 1} (a chunk there is damaged: "
                             f"{_first_line(e)})") from None
    return out


def _selection(axes: tuple, first: int, stop: int) -> tuple:
    return tuple(slice(first, stop) if a == "y" else slice(None) if a in ("x", "c") else 0 for a in axes)


def _rows(array, layout: ZarrLayout, shape: tuple, first: int, stop: int) -> np.ndarray:
    """Rows ``[first, stop)`` as ``rows x W [x C]``, whatever the stored axis order."""
    data = np.asarray(array[_selection(layout.axes, first, stop)])
    kept = [a for a in layout.axes if a in ("y", "x", "c")]
    order = [kept.index(a) for a in ("y", "x", "c") if a in kept]
    data = data.transpose(order)
    return data.reshape((stop - first,) + tuple(shape[1:]))


# --------------------------------------------------------------------------
# writing


def output_layout(source: ZarrLayout | None, shape: tuple, band_rows: int, step: tuple) -> ZarrLayout:
    """The layout of a Zarr output of ``shape`` (``H x W`` or ``H x W x C``)
    in chunks of ``band_rows`` rows: the input's format and, for an OME-Zarr
    input, its axes (a channel axis added when the output has channels and
    the input had none); else a version 3 array ``H x W [x C]``. ``step``:
    input pixels per output pixel along rows and columns (stride and
    pooling), for the OME-Zarr scale."""
    channels = shape[2] if len(shape) == 3 else 1
    if source is None or source.ome is None:
        fmt = 3 if source is None else source.zarr_format
        return ZarrLayout("", ("y", "x", "c")[:len(shape)], fmt, band_rows)
    axes = list(source.axes)
    entry = source.ome
    named = [dict(a) if isinstance(a, dict) else {"name": a} for a in entry["axes"]]
    if "c" not in axes and channels > 1:
        at = axes.index("z") if "z" in axes else axes.index("y")
        axes.insert(at, "c")
        named.insert(at, {"name": "c", "type": "channel"})
    scale = _scale(entry, len(source.axes))
    if len(axes) != len(source.axes):
        scale.insert(axes.index("c"), 1.0)
    scale[axes.index("y")] *= step[0]
    scale[axes.index("x")] *= step[1]
    ome = {"axes": named, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": scale}]}], "name": str(entry.get("name") or "kernelcli")}
    return ZarrLayout("0", tuple(axes), source.zarr_format, band_rows, ome, source.ome_version)


def _scale(entry: dict, ndim: int) -> list:
    """The full-resolution level's scale, one factor per axis (1 where none is given)."""
    try:
        for t in entry["datasets"][0].get("coordinateTransformations") or []:
            if t.get("type") == "scale" and len(t["scale"]) == ndim:
                return [float(v) for v in t["scale"]]
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    return [1.0] * ndim


def create_zarr(folder, layout: ZarrLayout, shape: tuple, dtype) -> None:
    """Create the (empty) array of ``layout`` for pixels of ``shape`` and
    ``dtype`` in ``folder``: zstd-compressed chunks of whole bands
    (``layout.block_rows`` rows, at most :data:`CHUNK_COLUMNS` columns, every
    channel), and OME-Zarr metadata for an OME-Zarr layout."""
    name = str(folder)
    zarr = zarr_module(name)
    sizes = {"y": shape[0], "x": shape[1], "c": shape[2] if len(shape) == 3 else 1}
    full = tuple(sizes.get(a, 1) for a in layout.axes)
    chunks = tuple(layout.block_rows if a == "y" else min(shape[1], CHUNK_COLUMNS) if a == "x"
                   else sizes["c"] if a == "c" else 1 for a in layout.axes)
    if layout.zarr_format == 2:
        import numcodecs

        compressor = numcodecs.Zstd(level=ZSTD_LEVEL)
    else:
        from zarr.codecs import ZstdCodec

        compressor = ZstdCodec(level=ZSTD_LEVEL)
    try:
        if layout.ome is None:
            zarr.create_array(store=name, shape=full, dtype=np.dtype(dtype), chunks=chunks, compressors=compressor,
                              fill_value=0, zarr_format=layout.zarr_format, overwrite=True,
                              **({"dimension_names": layout.axes} if layout.zarr_format == 3 else {}))
            return
        group = zarr.open_group(store=name, mode="w", zarr_format=layout.zarr_format)
        group.create_array(layout.array, shape=full, dtype=np.dtype(dtype), chunks=chunks, compressors=compressor,
                           fill_value=0, **({"dimension_names": layout.axes} if layout.zarr_format == 3 else {}))
        if layout.zarr_format == 3:
            group.attrs["ome"] = {"version": layout.ome_version or "0.5", "multiscales": [layout.ome]}
        else:
            group.attrs["multiscales"] = [dict(layout.ome, version=layout.ome_version or "0.4")]
    except OSError as e:
        raise ImageWriteError(f"{name}: cannot write: {e.strerror or e}") from None


def write_zarr_rows(folder, layout: ZarrLayout, first: int, rows: np.ndarray) -> None:
    """Write output rows (``rows x W [x C]``) starting at row ``first`` into
    the array :func:`create_zarr` made; ``first`` and the number of rows are
    whole chunk rows (the last may end with the array), so no two bands
    write the same chunk. The array must exist: a band that comes after
    the output was given up writes nothing."""
    name = str(folder)
    zarr = zarr_module(name)
    try:
        array = zarr.open_array(store=name, path=layout.array, mode="r+", zarr_format=layout.zarr_format)
        kept = [a for a in layout.axes if a in ("y", "x", "c")]
        data = rows if rows.ndim == 3 else rows[..., None]
        if "c" not in layout.axes:
            data = data[..., 0]
        data = data.transpose([("y", "x", "c").index(a) for a in kept])
        with _writing():
            array[_selection(layout.axes, first, first + len(rows))] = data
    except OSError as e:
        raise ImageWriteError(f"{name}: cannot write: {e.strerror or e}") from None
    except Exception as e:
        raise ImageWriteError(f"{name}: cannot write rows {first}-{first + len(rows) - 1}: {_first_line(e)}") \
            from None


# Chunks being written now: a stop (SIGTERM) waits for them before the
# temporary store is removed (a write that came after would make its
# folders again), and no write starts after it.
_writes = {"active": 0, "stopped": False}
_writes_changed = threading.Condition()

#: Seconds a stop waits for the chunks being written.
STOP_WAIT = 10.0


class _writing:
    def __enter__(self):
        with _writes_changed:
            if _writes["stopped"]:
                raise ImageWriteError("stopped")
            _writes["active"] += 1

    def __exit__(self, *exc):
        with _writes_changed:
            _writes["active"] -= 1
            _writes_changed.notify_all()


def stop_writing() -> None:
    """Let the chunks being written finish and start no other (the process is ending)."""
    with _writes_changed:
        _writes["stopped"] = True
        _writes_changed.wait_for(lambda: _writes["active"] == 0, timeout=STOP_WAIT)


@stopping.at_stop
def _stop_writing() -> None:
    """:func:`stop_writing`, then remove the temporary outputs."""
    from .sinks import remove_temporaries

    stop_writing()
    remove_temporaries()
