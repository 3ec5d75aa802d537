"""Where outputs go: a path, ``"-"`` (stdout) or a caller's binary file.

A path is written to a temporary file beside it and renamed into place, so
an existing file is only ever replaced by a complete new one; the temporary
files being written are listed for the SIGTERM handler to remove. Binary
data is never written to a terminal.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .. import stopping
from ..errors import ImageWriteError, UsageError


def deliver(target, payload, fmt: str) -> None:
    """Send ``payload`` (byte chunks, or a function that writes them into a
    binary file) to a binary file, ``"-"`` or a path. A function writes a
    path's temporary file itself (Pillow encodes straight into it: for a
    12-megapixel JPEG, 10 MB less to grow and copy in memory; TIFF excepted,
    see :func:`kernelcli.io.encode._save`), and a stream's
    bytes into memory first, so that an encoder that fails sends nothing."""
    if callable(payload) and (hasattr(target, "write") or str(target) == "-"):
        buf = io.BytesIO()
        payload(buf)
        payload = [buf.getvalue()]
    if callable(payload):
        stream_to(target, payload, fmt)
    else:
        stream_to(target, lambda f: write_chunks(f, payload), fmt)


def write_chunks(f, chunks) -> None:
    """Write byte chunks into the binary file ``f``, in order."""
    for chunk in chunks:
        f.write(chunk)


def stream_to(target, write, fmt: str) -> None:
    """Let ``write(f)`` write the output into a binary file as it goes: a
    path's temporary file (renamed into place when ``write`` returns), or
    stdout and a caller's stream straight away, not through memory as
    :func:`deliver` does. For outputs made a band at a time; in a pipe, an
    error part way leaves the rows before it sent (the next command then
    finds a truncated stream)."""
    if hasattr(target, "write"):
        write(target)
    elif str(target) == "-":
        out = _stdout(fmt)
        try:
            write(out)
            out.flush()
        except BrokenPipeError:
            raise  # the reader went away: the command line ends quietly
        except OSError as e:
            raise stdout_error(e) from None
    else:
        write_atomic(Path(str(target)), write)


def stdout_error(e: OSError) -> ImageWriteError:
    """The one-line error for a write to stdout that failed (a full disk, a closed stdout)."""
    return ImageWriteError(f"cannot write to stdout: {e.strerror or e}")


def _stdout(fmt: str):
    out = sys.stdout
    if out is None:  # (Python's, when the command started with descriptor 1 closed)
        raise ImageWriteError("cannot write to stdout: it is closed")
    if out.isatty():
        raise UsageError(
            f"refusing to write binary {fmt} data to a terminal; "
            "redirect it (> out.npy) or pipe it into another command"
        )
    return out.buffer


def write_atomic(path: Path, write) -> None:
    """Let ``write(f)`` write into a temporary file beside ``path``, then
    rename it into place."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


#: Temporary files being written now (removed by the SIGTERM handler).
_TEMPORARIES: set = set()


@stopping.at_stop
def remove_temporaries() -> None:
    """Remove every temporary output being written (the process is stopped)."""
    for tmp in list(_TEMPORARIES):
        try:
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.unlink(tmp)
        except OSError:
            pass


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield the name of a new temporary file beside ``path``; when the block
    ends normally the file is synced and renamed to ``path``, otherwise it is
    removed. OS errors become one-line :class:`ImageWriteError` messages."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ImageWriteError(f"{path}: the folder {folder} {what}")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=temporary_prefix(path.name, folder), suffix=".part")
        os.close(fd)
    except OSError as e:
        raise ImageWriteError(f"{path}: cannot write in {folder}: {e.strerror or e}") from None
    _TEMPORARIES.add(tmp)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if path.exists():
            try:
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            except OSError:
                pass
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _TEMPORARIES.discard(tmp)
    except BaseException as e:
        _TEMPORARIES.discard(tmp)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ImageWriteError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


@contextlib.contextmanager
def atomic_folder(path: Path, replaceable):
    """:func:`atomic_file` for an output that is a folder (a Zarr store): yield
    a new temporary folder beside ``path``, renamed to ``path`` when the
    block ends normally, removed otherwise. An existing ``path`` is replaced
    only when ``replaceable(path)`` says it is the same kind of output (the
    old one is removed once the new one is in place)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ImageWriteError(f"{path}: the folder {folder} {what}")
    if (path.exists() or path.is_symlink()) and not replaceable(path):
        raise ImageWriteError(f"{path}: exists and is not a store this output may replace; remove it first")
    try:
        tmp = tempfile.mkdtemp(dir=folder, prefix=temporary_prefix(path.name, folder), suffix=".part")
    except OSError as e:
        raise ImageWriteError(f"{path}: cannot write in {folder}: {e.strerror or e}") from None
    _TEMPORARIES.add(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = tempfile.mkdtemp(dir=folder, prefix=temporary_prefix(path.name, folder), suffix=".old.part")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # the old output stays as it was
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _TEMPORARIES.discard(tmp)
    except BaseException as e:
        _TEMPORARIES.discard(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ImageWriteError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


#: Characters tempfile.mkstemp puts between the prefix and the suffix.
_RANDOM_CHARS = 8


def temporary_prefix(name: str, folder) -> str:
    """``.NAME.`` for the temporary file ``.NAME.XXXXXXXX.part`` beside the
    output ``NAME``, with NAME cut short (at a character) when the whole
    would pass the longest file name ``folder``'s file system takes."""
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # (no pathconf on Windows)
        longest = 255
    if not longest or longest < 0:
        longest = 255
    room = longest - len(b"..") - _RANDOM_CHARS - len(b".part")
    raw = os.fsencode(name)
    if len(raw) > room:
        cut = max(room, 1)
        while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        raw = raw[:cut]
    return f".{os.fsdecode(raw)}."


def temporaries_of(path) -> list:
    """The temporary files that writes of ``path`` may have left beside it
    (a process killed while writing it cannot remove its own)."""
    path = Path(path)
    prefix = temporary_prefix(path.name, path.parent if str(path.parent) else ".")
    return list(path.parent.glob(f"{glob.escape(prefix)}*.part"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
