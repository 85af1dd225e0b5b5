"""What every `python -m rnnkernels <command>` shares: one exception type for
bad input that ends the command with a one-line message, and device checks.

A command module exposes `add_command(subparsers)`, which adds its parser and
sets `run=<function(args) -> exit code>` as a default (see __main__.py).
"""


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
