"""Command line: `python -m rnnkernels <command>`.

Each command lives in its own module, which adds its parser (see cli_support.py).
"""

import argparse
import importlib
import sys

from .backends import BACKEND_NAMES, BackendUnavailableError, backend_implementation, unavailable_reason
from .cli_support import CommandError

# Modules with an `add_command(subparsers)`, in the order `--help` lists them.
COMMAND_MODULES = ("rnnkernels.charlm.cli", "rnnkernels.bench.cli", "rnnkernels.bench.handoff_table",
                   "rnnkernels.demo")


def _backends(_args):
    paths = {name: ", ".join(getattr(backend_implementation(name), "paths", ())) or "-" for name in BACKEND_NAMES}
    width = max(len(p) for p in paths.values()) + 1  # the reasons line up after the longest list
    for name in BACKEND_NAMES:
        reason = unavailable_reason(name)
        status = "available" if reason is None else "unavailable"
        print(f"{name:<9} {status:<11} paths: {paths[name]:<{width}}{'' if reason is None else ' ' + reason}".rstrip())
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m rnnkernels")
    commands = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_command(commands)
    backends = commands.add_parser("backends", help="list the backends, their kernel paths and whether they run here")
    backends.set_defaults(run=_backends)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, BackendUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, CommandError) else 1


if __name__ == "__main__":
    sys.exit(main())
