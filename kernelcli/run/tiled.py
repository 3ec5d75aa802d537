"""Arrays larger than memory: a ``.npy`` file band by band into a ``.npy`` file.

The input file is memory-mapped and read one band at a time
(:mod:`kernelcli.run.bands`); each band of output rows is computed by the
ordinary stages and written into its place in a memory-mapped ``.npy``
output, so memory holds a band or two, never the image. Bands run on local
threads (reading and writing overlap the computation), or as tasks on a Dask
cluster whose workers see the same files.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import _memory
from ..errors import ImageReadError, ImageWriteError
from ..io.npy import check_npy_header, header_of, npy_header, npy_metadata, npy_trailer
from ..io.sinks import atomic_file
from ..stages import Stages
from .bands import Job, Source, band_rows, compute_band, plan
from .progress import Progress

#: At most this much kernelcli metadata is read after the array data.
_MAX_TRAILER = 64 * 2**20


def open_source(path) -> Source:
    """Read and check a ``.npy`` header; nothing of the data is read."""
    name = str(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageReadError(f"{name}: cannot open: {e.strerror or e}") from None
    with f:
        shape, fortran, dtype = header_of(f, name)
        offset = f.tell()
        check_npy_header(shape, dtype, name)  # no pixel limit: memory holds a band
        if fortran:
            raise ImageReadError(f"{name}: the .npy is Fortran-ordered; bands of rows need C order "
                                 "(save it with np.ascontiguousarray)")
        nbytes = math.prod(shape) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
        if size < offset + nbytes:
            raise ImageReadError(f"{name}: truncated .npy: {size - offset:,} of {nbytes:,} data bytes")
        f.seek(offset + nbytes)
        trailer = f.read(_MAX_TRAILER)
    meta = npy_metadata(shape, trailer, name, dtype)
    return Source(os.path.abspath(path), tuple(shape), dtype.str, offset, meta)


#: A ``.npy`` file with more float32 data than this goes out of core (bands
#: read from and written to the files) when its output is a ``.npy`` file:
#: past it, reading it whole costs more in fresh memory than the bands'
#: extra passes (docs: Performance).
OUT_OF_CORE_BYTES = 512 * 2**20


def goes_out_of_core(source: Source) -> bool:
    """Should a ``.npy`` file into a ``.npy`` file run band by band between the files?"""
    return math.prod(source.shape) * 4 >= OUT_OF_CORE_BYTES or too_big_for_memory(source)


def too_big_for_memory(source: Source) -> bool:
    """Would the in-memory engine need more than half the available memory?
    (Input and result as float32, plus one intermediate.)"""
    free = _memory.available_memory()
    need = 3 * math.prod(source.shape) * 4
    return free is not None and need > free // 2


def run_band(job: Job, f0: int, f1: int, lock=None) -> None:
    """Compute final rows ``[f0, f1)`` and write them into their place in the output file."""
    result = compute_band(job, f0, f1, lock)
    mm = np.memmap(job.target, dtype=np.float32, mode="r+", offset=job.out_offset, shape=job.out_shape)
    try:
        mm[f0:f1] = result.pixels
        mm.flush()
    finally:
        del mm


# --------------------------------------------------------------------------
# the whole file


@dataclass
class Report:
    bands: int
    rows_per_band: int
    shape: tuple
    seconds: float
    notes: list


def run(input_path, output_path, stages: Stages, tile_rows: int | None = None, client=None, threads: int = 2,
        progress: bool = False) -> Report:
    """Run ``stages`` over the ``.npy`` at ``input_path`` band by band into ``output_path``.

    ``client``: a Dask client to run the bands on its cluster (workers must
    see both paths); otherwise ``threads`` local threads, one computing at a
    time while the others read and write.
    """
    import threading

    started = time.monotonic()
    source = open_source(input_path)
    output_path = Path(output_path)
    job, final_h = plan(source, stages.conv, stages.relu, stages.pool, stages.gray, stages.alpha)
    # One output row tells the output's width, channels and metadata.
    probe = compute_band(job, 0, 1)
    out_shape = (final_h,) + probe.pixels.shape[1:]
    out_row_bytes = math.prod(probe.pixels.shape[1:]) * 4
    rows = band_rows(job, final_h, out_row_bytes, tile_rows)
    bands = [(f0, min(f0 + rows, final_h)) for f0 in range(0, final_h, rows)]
    header = npy_header(out_shape)
    trailer = npy_trailer(probe.metadata())
    nbytes = final_h * out_row_bytes
    _check_space(output_path, len(header) + nbytes + len(trailer))
    with atomic_file(output_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.truncate(len(header) + nbytes)
        job = replace(job, target=os.path.abspath(tmp), out_offset=len(header), out_shape=out_shape)
        bar = Progress(len(bands), progress, unit="bands")
        if client is not None:
            _run_cluster(client, job, bands, bar)
        else:
            lock = threading.Lock()
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool_:
                futures = [pool_.submit(run_band, job, f0, f1, lock) for f0, f1 in bands]
                try:
                    for i, future in enumerate(futures, 1):
                        future.result()
                        bar.update(i)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        bar.close()
        with open(tmp, "ab") as f:
            f.write(trailer)
    return Report(len(bands), rows, out_shape, time.monotonic() - started, probe.notes)


def _run_cluster(client, job: Job, bands, bar) -> None:
    from distributed import as_completed

    from .cluster import serial

    futures = [client.submit(serial, run_band, job, f0, f1, pure=False) for f0, f1 in bands]
    try:
        for i, future in enumerate(as_completed(futures, loop=client.loop), 1):
            try:
                future.result()
            except Exception as e:
                f0, f1 = bands[futures.index(future)]
                raise ImageWriteError(f"rows {f0}-{f1 - 1} failed on the cluster: {e}") from None
            bar.update(i)
    except BaseException:
        client.cancel(futures)
        raise


def _check_space(path: Path, nbytes: int) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will say what is wrong
    if nbytes > free:
        raise ImageWriteError(
            f"{path}: the output needs {nbytes / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free"
        )
