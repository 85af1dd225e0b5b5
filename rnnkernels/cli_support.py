"""What every `python -m rnnkernels <command>` shares: one exception type for
bad input that ends the command with a one-line message, and the checks of
devices, numbers and output folders.

A command module exposes `add_command(subparsers)`, which adds its parser and
sets `run=<function(args) -> exit code>` as a default (see __main__.py).
"""

import math
import tempfile
from pathlib import Path


class CommandError(Exception):
    """Bad input to a command: printed as `error: <message>`, exit status 2."""


def check_device(device):
    """The torch.device for a --device option, or CommandError when it cannot run here."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise CommandError(f"--device {device!r} is not a device torch knows: {error}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"--device {device} asked for, but torch sees no CUDA device here")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise CommandError(f"--device {device} asked for, but torch sees only "
                               f"{torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type != "cpu":
        raise CommandError(f"--device {device}: rnnkernels runs on 'cpu' or 'cuda' devices")
    return parsed


def check_positive(option, value):
    """CommandError unless `value` is a finite number above zero."""
    if not math.isfinite(value) or value <= 0:
        raise CommandError(f"{option} must be a finite number above 0, got {value}")


def check_writable_folder(option, folder):
    """Creates `folder` if needed and checks a file can be written there, before
    any long work whose results would go there is started."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{option} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CommandError(f"{option} {folder} cannot be written: {error.strerror or error}") from None
