"""The rows of a picture decoded in order from the top, held for bands.

A PNG (:mod:`kernelcli.io.png_rows`) and a JPEG in strips
(:mod:`kernelcli.io.jpeg_rows`) can only be decoded from the top down. Bands
ask for their rows in order; rows a band has passed are let go, except the
first and last ``keep`` rows of the picture, which padding reads again.
"""

from __future__ import annotations

import numpy as np


class RowWindow:
    """What a reader that decodes rows in order shares: a subclass sets
    ``name``, ``shape`` (its first item the picture's height) and ``keep``,
    calls :meth:`_start` with the shape of one decoded row, and gives
    ``_decode(n)`` (the next ``n`` rows, uint8) and ``_restart()`` (decode
    from the top again)."""

    #: What the rows are, for the message of a planning bug.
    what = "rows"

    def _start(self, row_shape: tuple) -> None:
        """No rows decoded yet, none held."""
        self._next = 0  # the next row to decode
        self._first = 0  # the first row of the window
        self._window = np.empty((0,) + tuple(row_shape), np.uint8)  # decoded rows from _first
        self.head = np.empty((0,) + tuple(row_shape), np.uint8)
        self.tail = np.empty((0,) + tuple(row_shape), np.uint8)

    def read_tail(self) -> None:
        """Decode the whole picture once to keep its last ``keep`` rows, then
        start again at the top (wrap padding reads the bottom rows for the
        first band)."""
        h = self.shape[0]
        while self._next < h:
            start = self._next
            self._keep_edges(self._decode(min(256, h - start)), start)
        head, tail = self.head, self.tail
        self._restart()
        self.head, self.tail = head, tail

    def _keep_edges(self, rows: np.ndarray, start: int) -> None:
        h, k = self.shape[0], self.keep
        if start < k and len(self.head) < k:
            self.head = np.concatenate([self.head, rows[:k - start]])
        if start + len(rows) > h - k and len(self.tail) < k:
            self.tail = np.concatenate([self.tail, rows[max(0, h - k - start):]])

    def take(self, rows: np.ndarray, drop_below: int) -> np.ndarray:
        """Decoded rows (-1: a row of zeros), decoding on to the last one
        needed; afterwards rows before ``drop_below`` (but the first and last
        ``keep``) are let go. A run of rows held in the window comes back as
        a view of it (no copy): read it before the next call."""
        h = self.shape[0]
        rows = np.asarray(rows)
        whole_tail = len(self.tail) == self.keep > 0
        cached = (rows < len(self.head)) | (whole_tail & (rows >= h - self.keep))
        ahead = rows[(rows >= self._first) & ~cached]
        if len(ahead) and ahead.max() >= self._next:
            start = self._next
            new = self._decode(int(ahead.max()) + 1 - start)
            self._keep_edges(new, start)
            self._window = np.concatenate([self._window, new]) if len(self._window) else new
        held = (rows >= self._first) & (rows < self._next)
        first = int(rows[0]) if len(rows) else 0
        if held.all() and np.array_equal(rows, np.arange(first, first + len(rows))):
            out = self._window[first - self._first:first - self._first + len(rows)]
        else:
            out = np.zeros((len(rows),) + self._window.shape[1:], np.uint8)
            out[held] = self._window[rows[held] - self._first]
            head = ~held & (rows >= 0) & (rows < len(self.head))
            out[head] = self.head[rows[head]]
            tail = ~held & ~head & (rows >= 0)
            if tail.any():
                if not (len(self.tail) == self.keep > 0 and (rows[tail] >= h - self.keep).all()):
                    raise RuntimeError(f"{self.what} asked for after they were let go")  # a planning bug
                out[tail] = self.tail[rows[tail] - (h - self.keep)]
        if drop_below > self._first:
            drop = min(drop_below, self._next) - self._first
            self._window, self._first = self._window[drop:], self._first + drop
        return out
