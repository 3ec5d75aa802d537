"""A one-line progress display on stderr, for folder runs and bands."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress display on stderr (only when it is a terminal)."""

    def __init__(self, total: int, enabled: bool, unit: str = "files", unit_bytes: int | None = None):
        """``unit_bytes``: the input bytes each unit stands for (a row of a
        picture in bands); then the rate is shown in MB/s."""
        self.total, self.enabled, self.unit, self.start = total, enabled, unit, time.monotonic()
        self.unit_bytes = unit_bytes

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        shown = f"{rate * self.unit_bytes / 1e6:.1f} MB/s" if self.unit_bytes else f"{rate:.1f}/s"
        sys.stderr.write(f"\r{done}/{self.total} {self.unit}  {shown}  {left:.0f} s left ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
