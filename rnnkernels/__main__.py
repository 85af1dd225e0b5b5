"""Command line: `python -m rnnkernels <command>`."""

import argparse
import sys

from .backends import BACKEND_NAMES, unavailable_reason


def _backends(_args):
    for name in BACKEND_NAMES:
        reason = unavailable_reason(name)
        print(f"{name:<9} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def _demo(args):
    import torch

    from .demo import run

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} asked for, but torch sees no CUDA device",
              file=sys.stderr)
        return 2
    return run(backend=args.backend, device=args.device, steps=args.steps)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rnnkernels")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list the backends and whether they run here")
    demo = commands.add_parser(
        "demo", help="train a small model with rnnkernels.LSTM/GRU beside torch.nn")
    demo.add_argument("--backend", default="auto", choices=("auto",) + BACKEND_NAMES)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    handler = {"backends": _backends, "demo": _demo}[args.command]
    try:
        return handler(args)
    except RuntimeError as error:  # e.g. a backend that cannot run here
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
