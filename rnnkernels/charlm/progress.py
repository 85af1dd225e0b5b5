"""A one-line progress bar (no dependency): redrawn in place with `\\r` on a
terminal, and written as plain lines at intervals when output goes to a file
or a pipe, where carriage returns would pile up."""

import sys
import time


class Progress:
    def __init__(self, total, label="", stream=None, width=24, plain_interval_s=15.0):
        self.total = total
        self.label = label
        self.stream = stream or sys.stdout
        self.width = width
        self.interactive = self.stream.isatty()
        self.plain_interval_s = plain_interval_s
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_plain = self.start
        self._line_open = False

    def update(self, done, text=""):
        """Shows `done` of `total`, then `text` (e.g. "loss 1.93, 12,345 chars/s")."""
        now = time.perf_counter()
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - done) / rate if rate > 0 else 0.0
        status = f"{self.label}{done}/{self.total} {text}, {elapsed:.0f} s elapsed, ~{remaining:.0f} s left"
        if self.interactive:
            if now - self._last_draw < 0.1 and done < self.total:
                return  # redrawing faster than the eye reads costs time for nothing
            filled = int(self.width * done / max(self.total, 1))
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {status}\033[K")
            self._line_open = True
            self._last_draw = now
        elif now - self._last_plain >= self.plain_interval_s or done == self.total:
            self.stream.write(status + "\n")
            self._last_plain = now
        self.stream.flush()

    def write(self, line):
        """A line of its own above the bar."""
        self._end_line()
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        self._end_line()
        self.stream.flush()

    def _end_line(self):
        if self._line_open:
            self.stream.write("\r\033[K")
            self._line_open = False
