"""Running the installed ``kernelcli`` with one of its output streams on a
pseudo-terminal, as a user at a terminal would see it."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time

import pytest


def run_on_a_terminal(args, cwd, stream: str = "stderr", timeout: float = 120) -> tuple:
    """Run the installed command with ``stream`` (``"stdin"``, ``"stdout"`` or
    ``"stderr"``) on a pseudo-terminal, stdin otherwise empty and the output
    streams otherwise piped; returns (exit status, what the terminal showed,
    stdout, stderr). Skips where there is no pty or no installed command."""
    pty = pytest.importorskip("pty")
    exe = shutil.which("kernelcli")
    if exe is None:
        pytest.skip("kernelcli is not on PATH")
    try:
        master, slave = pty.openpty()
    except OSError as e:
        pytest.skip(f"no pty available: {e}")
    streams = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    try:
        proc = subprocess.Popen([exe] + [str(a) for a in args], cwd=cwd, **streams)
        os.close(slave)
        slave = None
        shown = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # drain the terminal so the child never blocks on it
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return proc.returncode, shown, out or b"", err or b""
