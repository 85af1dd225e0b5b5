"""`python -m rnnkernels handoff-table`: a hand-off table (rnnkernels/handoff.py)
from the benchmark suite's JSON files.

    python -m rnnkernels handoff-table benchmarks/results/<run>.json [...] \
        --out rnnkernels/handoff_tables/<device>.json

Every JSON must come from one device (and, on a CPU, one thread count). A
case keeps the median time of torch.nn and of every rnnkernels backend that
ran it correctly (and of each forced kernel path, 'backend:path', where the
run measured them); a case measured in several runs keeps each
implementation's fastest median. Only cases measured against torch.nn count, and only
implementations that passed the suite's correctness check.
"""

import json
import os

from .. import handoff
from ..backends import BACKEND_NAMES
from ..cli_support import CommandError
from . import suite

_SOURCE_KEYS = ("device", "device_type", "cpu_threads")


def _runs(paths):
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                run = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise CommandError(f"{path}: not a benchmark JSON ({error})") from None
        if not isinstance(run, dict) or "records" not in run or "device" not in run:
            raise CommandError(f"{path}: not a benchmark JSON (no 'records' or 'device')")
        runs.append((path, run))
    sources = {tuple(run.get(k) if k != "cpu_threads" or run["device_type"] == "cpu" else None
                     for k in _SOURCE_KEYS) for _, run in runs}
    if len(sources) != 1:
        raise CommandError(f"the runs come from more than one device or thread count: {sorted(map(str, sources))}")
    return runs


def build_table(paths):
    """The table (a dict, handoff.TABLE_FORMAT) of the runs in `paths`."""
    runs = _runs(paths)
    cases = {}
    for _, run in runs:
        for record in run["records"]:
            impl = record.get("impl")
            backend = (impl or "").split(handoff.PATH_SEPARATOR)[0]
            if record.get("status") != "ok" or (impl != handoff.BASELINE and backend not in BACKEND_NAMES):
                continue
            shape = suite.ALL_SHAPES.get(record.get("shape"))
            if shape is None:
                continue
            key = (record["cell"], record["dtype"], record["mode"], shape.name)
            case = cases.setdefault(key, {
                "cell": record["cell"], "dtype": record["dtype"], "mode": record["mode"], "shape": shape.name,
                "seq_len": shape.seq_len, "batch": shape.batch, "input_size": shape.input_size,
                "hidden_size": shape.hidden_size, "layers": shape.layers, "bidirectional": shape.bidirectional,
                "packed": shape.packed, "proj_size": shape.proj_size, "median_ms": {}})
            times = case["median_ms"]
            times[impl] = min(times.get(impl, float("inf")), record["median_ms"])
    measured = [case for case in cases.values() if handoff.BASELINE in case["median_ms"] and len(case["median_ms"]) > 1]
    if not measured:
        raise CommandError("no case in these runs was measured for torch.nn and an rnnkernels backend")
    first = runs[0][1]
    return {
        "format": handoff.TABLE_FORMAT, "device_type": first["device_type"], "device": first["device"],
        "cpu_threads": first.get("cpu_threads") if first["device_type"] == "cpu" else None,
        "torch": sorted({run.get("torch") for _, run in runs}, key=str),
        "sources": [{"file": os.path.basename(path), "commit": run.get("commit"), "date": run.get("date"),
                     "note": run.get("note", "")} for path, run in runs],
        "cases": sorted(measured, key=lambda c: (c["cell"], c["dtype"], c["mode"], c["shape"])),
    }


def _run(args):
    table = build_table(args.json)
    out = os.path.abspath(args.out)
    if not os.path.isdir(os.path.dirname(out)):
        raise CommandError(f"--out {args.out}: its folder does not exist")
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    slower = sum(case["median_ms"][handoff.BASELINE] < min(t for name, t in case["median_ms"].items()
                                                             if name != handoff.BASELINE)
                 for case in table["cases"])
    threads = "" if table["cpu_threads"] is None else f" at {table['cpu_threads']} thread(s)"
    print(f"wrote {args.out}: {len(table['cases'])} cases on {table['device']}{threads}; "
          f"torch.nn was the fastest in {slower}")
    return 0


def add_command(commands):
    """`python -m rnnkernels handoff-table` (see __main__.py)."""
    parser = commands.add_parser(
        "handoff-table", help="where `auto` hands a layer to torch.nn: a table from benchmark JSON files",
        description="Write the table rnnkernels/handoff.py reads: for each case the benchmark measured, "
                    "torch.nn's median time beside each rnnkernels backend's.")
    parser.add_argument("json", nargs="+", help="benchmark JSON files of one device (and thread count)")
    parser.add_argument("--out", required=True, help="the table to write (rnnkernels/handoff_tables/<name>.json)")
    parser.set_defaults(run=_run)
