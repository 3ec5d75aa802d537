"""Watching a running ``kernelcli`` from outside, through /proc (Linux).

A folder run is held mid-way without racing it: the test waits until the
command's worker processes exist and stops them (SIGSTOP); they are then
certainly mid-run, whatever the speed of the machine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

if not Path("/proc/self/stat").exists():  # pragma: no cover
    pytest.skip("needs /proc", allow_module_level=True)


def command() -> list:
    exe = shutil.which("kernelcli")
    return [exe] if exe else [sys.executable, "-m", "kernelcli"]


def start(args, **kwargs) -> subprocess.Popen:
    """The installed command, leading a process group of its own (setsid)."""
    env = dict(os.environ)
    env.pop("KERNELCLI_DEBUG", None)
    return subprocess.Popen(command() + [str(a) for a in args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, **kwargs)


def _stat(pid: int):
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _living(pred) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z" and pred(st):
                found.append(int(entry))
    return found


def children(pid: int) -> list:
    return _living(lambda st: st[1] == pid)


def group(pgid: int) -> list:
    """Living processes of a process group (its leader's pid is its id)."""
    return _living(lambda st: st[2] == pgid)


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def wait_for_children(proc: subprocess.Popen, count: int, timeout: float = 120) -> list:
    """The command's first ``count`` child processes, once each runs its own
    program (a child stopped between fork and exec would hold its parent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Read each time: a process that has children is past its own exec (just
        # after it, its cmdline may still be empty, and would match every child).
        own = _cmdline(proc.pid)
        kids = [pid for pid in children(proc.pid) if _cmdline(pid) not in (own, None, b"")]
        if len(kids) >= count:
            return kids
        assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")
        time.sleep(0.01)
    raise AssertionError(f"the command did not start {count} workers in {timeout} s")


def unread_input(pid: int) -> int:
    """Bytes waiting in the pipes a process reads from (its task stream)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if not target.startswith("pipe:") or flags & os.O_ACCMODE != os.O_RDONLY:
            continue
        ours = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
        try:
            total += struct.unpack("i", fcntl.ioctl(ours, termios.FIONREAD, b"\0\0\0\0"))[0]
        finally:
            os.close(ours)
    return total


def wait_until_gone(pids, timeout: float = 30) -> list:
    """The pids still alive after ``timeout`` seconds (normally none at once)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _stat(p) is not None and _stat(p)[0] != "Z"]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _stat(p) is not None and _stat(p)[0] != "Z"]
    return alive


def kill_group(proc: subprocess.Popen) -> None:
    """Cleanup after a failed test: nothing of the command survives it."""
    for pid in group(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.communicate()
