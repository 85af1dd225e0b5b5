"""A one-line progress bar on a terminal; plain lines, one per case, when the
output is a file or a pipe (a log should not fill with carriage returns)."""

import shutil
import sys
import time


def _clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    def __init__(self, total, stream=None, width=24):
        self.total, self.done, self.width = total, 0, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.label = ""

    def _eta(self):
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else None
        return _clock(elapsed) + ("" if left is None else f" ~{_clock(left)} left")

    def start_case(self, label):
        """Case number done+1 begins."""
        self.label = label
        if self.tty:
            self.show()
        else:
            print(f"[{self.done + 1}/{self.total}] {label} ({self._eta()})", file=self.stream, flush=True)

    def show(self, detail=""):
        """Redraws the bar (terminal only), e.g. with the implementation being timed."""
        if not self.tty:
            return
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {self._eta()}  {self.label}"
        text += f": {detail}" if detail else ""
        columns = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r" + text[:columns].ljust(columns))
        self.stream.flush()

    def end_case(self):
        self.done += 1
        self.show()

    def finish(self):
        if self.tty:
            columns = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * columns + "\r")
            self.stream.flush()
