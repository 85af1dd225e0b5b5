"""`python -m rnnkernels bench`: the command line of the benchmark suite.

    python -m rnnkernels bench                  # the full suite on a GPU; the quick one on a CPU
    python -m rnnkernels bench --quick          # about a minute
    python -m rnnkernels bench --cell lstm --dtype bf16 --mode fwd --shape fastrnns,long
    python -m rnnkernels bench --list-shapes

Writes <date>-<device>-<commit>.json, .txt (the table) and PNG plots into
--out (default benchmarks/results/ of this checkout). Exit status 0; 1 when
an implementation gave a wrong result; 2 for bad options.
"""

import dataclasses
import os
import signal
import sys
import time

from ..cli_support import CommandError, check_device
from . import implementations, suite
from .timing import CPU_QUICK_SETTINGS, CPU_SETTINGS, GPU_SETTINGS

# Writing the table and plots after the last case takes a few seconds; a
# --time-budget keeps this much for it.
FINISH_RESERVE_S = 15


def add_command(commands):
    """`python -m rnnkernels bench` (see __main__.py)."""
    bench = commands.add_parser(
        "bench", help="benchmark every backend against torch.nn (cuDNN on a GPU)",
        description="Benchmark every rnnkernels backend against torch.nn on the same inputs. "
                    "On a CPU the default suite is the quick one (the full suite is sized for a "
                    "GPU and would take hours); --full forces the full suite.")
    bench.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda if present)")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the quick suite (about a minute)")
    size.add_argument("--full", action="store_true", help="the full suite, also on a CPU")
    for option, choices in (("--cell", suite.CELLS), ("--dtype", tuple(suite.DTYPES)),
                            ("--mode", suite.MODES), ("--shape", tuple(suite.ALL_SHAPES)),
                            ("--impl", implementations.all_names())):
        bench.add_argument(option, action="append", metavar="A,B",
                           help=f"only these (comma-separated): {', '.join(choices)}")
    bench.add_argument("--compile", choices=("auto", "off", "headline", "all"), default="auto",
                       help="torch.compile of the reference backend: on the first shape only "
                            "(headline), on every shape, or off; auto: headline for the full "
                            "suite on a GPU, else off (one compile takes about a minute)")
    bench.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="stop starting new cases after this long; results are still written")
    bench.add_argument("--out", help="folder for the JSON, table and plots "
                                     "(default: benchmarks/results/ of this checkout)")
    bench.add_argument("--note", default="", help="free text stored in the JSON and the table header")
    bench.add_argument("--tf32", action="store_true",
                       help="let cuDNN and cuBLAS use TF32 for float32 (off: float32 is float32 "
                            "everywhere, so its results compare at float32 tolerance)")
    bench.add_argument("--threads", type=int, metavar="N",
                       help="torch CPU threads (torch.set_num_threads); on a shared machine 1 "
                            "thread gives steadier times than threads that wait for each other")
    bench.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bench.add_argument("--from-json", metavar="PATH",
                       help="render the table, .txt and plots of an earlier run's JSON, measuring nothing")
    bench.add_argument("--list-shapes", action="store_true", help="print the named shapes and exit")
    bench.set_defaults(run=run)


def _list_shapes():
    print(f"{'name':<13} {'T':>5} {'B':>4} {'I':>5} {'H':>5}  extra            suites")
    for shape in suite.ALL_SHAPES.values():
        suites = [name for name, shapes in (("full", suite.FULL_SHAPES), ("quick-gpu", suite.QUICK_GPU_SHAPES),
                                            ("quick-cpu", suite.QUICK_CPU_SHAPES)) if shape in shapes]
        print(f"{shape.name:<13} {shape.seq_len:>5} {shape.batch:>4} {shape.input_size:>5} "
              f"{shape.hidden_size:>5}  {shape.describe():<16} {', '.join(suites)}")
    return 0


def _choices(values, choices, what, aliases=None):
    try:
        return suite.parse_choices(values, choices, what, aliases)
    except ValueError as error:
        raise CommandError(str(error)) from None


def _device(name):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device(name)
    return torch.device("cuda", torch.cuda.current_device()) if device == torch.device("cuda") else device


def _plan(args, device):
    """(cases, implementation names, compile cases, suite name, compile policy)
    after the filters."""
    cells = _choices(args.cell, suite.CELLS, "cell")
    dtypes = _choices(args.dtype, tuple(suite.DTYPES), "dtype", suite.DTYPE_ALIASES)
    modes = _choices(args.mode, suite.MODES, "mode")
    impls = _choices(args.impl, implementations.all_names(), "impl",
                     {"compile": implementations.COMPILED, "torch": implementations.BASELINE})
    if not args.impl:
        impls = [name for name in impls if not implementations.runs_only_when_asked(name)]
    if args.shape:
        names = _choices(args.shape, tuple(suite.ALL_SHAPES), "shape")
        shapes, suite_name = [suite.ALL_SHAPES[name] for name in names], "custom"
    else:
        shapes = suite.default_shapes(device.type, args.quick, args.full)
        suite_name = "full" if shapes is suite.FULL_SHAPES else "quick"
    cases = suite.build_cases(shapes, cells, dtypes, modes)
    if not cases:
        raise CommandError("no case matches these filters (the 'proj' shape runs only the lstm cell)")
    policy = args.compile
    if policy == "auto":
        asked = bool(args.impl) and implementations.COMPILED in impls
        policy = "headline" if asked or (device.type == "cuda" and suite_name == "full") else "off"
    if policy == "off":
        impls = [name for name in impls if name != implementations.COMPILED]
    compile_cases = cases if policy == "all" else [c for c in cases if c.shape == shapes[0]]
    if not impls:
        raise CommandError("no implementation left to run (--impl reference-compiled with --compile off?)")
    return cases, impls, compile_cases, suite_name, policy


def _default_out():
    from .results import REPO_ROOT

    folder = REPO_ROOT / "benchmarks" / "results"
    return str(folder) if folder.parent.is_dir() else os.path.join(os.getcwd(), "bench-results")


def run(args):
    if args.list_shapes:
        return _list_shapes()
    if args.from_json:
        return _render(args)
    if args.time_budget is not None and args.time_budget <= 0:
        raise CommandError("--time-budget must be a positive number of seconds")
    if args.threads is not None and args.threads < 1:
        raise CommandError("--threads must be at least 1")
    started = time.monotonic()
    device = _device(args.device)
    cases, impls, compile_cases, suite_name, policy = _plan(args, device)
    out = args.out or _default_out()
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--out {out}: {error}") from None
    return _run_suite(args, device, cases, impls, compile_cases, suite_name, policy, out, started)


def _interrupt(signum, frame):
    """SIGTERM (from `timeout`, say) ends the run as Ctrl-C does: with the
    table, JSON and plots of what was measured."""
    raise KeyboardInterrupt


def _run_suite(args, device, cases, impls, compile_cases, suite_name, policy, out, started):
    import torch

    from . import floor, report, results, runner
    from .progress import Progress

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
        settings = GPU_SETTINGS
    else:
        settings = CPU_SETTINGS if args.full else CPU_QUICK_SETTINGS
    meta = results.metadata(device, implementations.baseline_description(device), {
        "baseline_short": implementations.baseline_short_name(device),
        "suite": suite_name, "cases": len(cases), "implementations": impls, "compile": policy,
        "note": args.note, "time_budget_s": args.time_budget,
        "filters": {name: getattr(args, name) for name in ("cell", "dtype", "mode", "shape", "impl")},
        "timing_settings": dataclasses.asdict(settings),
        # The floor's GEMM rate, the ISA level and GEMM path: measured and read now,
        # at this run's thread count (floor.py).
        "gemm_gflops": floor.gemm_gflops(sorted({case.dtype for case in cases}), device),
        "cpu_backend": floor.cpu_backend_paths() if device.type == "cpu" else None,
        "cpu_flags": floor.cpu_flags() if device.type == "cpu" else None,
    })
    stem = os.path.join(out, results.file_stem(meta))
    print(report.header(meta), flush=True)

    jobs = runner.plan_jobs(cases, impls, compile_cases)
    deadline = None if args.time_budget is None else started + args.time_budget - FINISH_RESERVE_S
    requested = set(impls) if args.impl else set()  # named by the user: run even where the suite would not
    case_order = {(c.shape.name, c.cell, c.dtype, c.mode): i for i, c in enumerate(cases)}
    impl_order = {name: i for i, name in enumerate(impls)}

    def save(outcome):
        # compile jobs run last; their records belong beside their case's
        outcome.records.sort(key=lambda r: (case_order[results.case_key(r)], impl_order[r["impl"]]))
        meta.update(stopped_early=outcome.stopped_early, jobs_not_run=outcome.jobs_not_run,
                    wall_s=round(time.monotonic() - started, 1))
        results.write_json(f"{stem}.json", meta, outcome.records)

    outcome = runner.Outcome(len(jobs))
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        runner.run_jobs(jobs, outcome, device, settings, requested, Progress(len(jobs)), deadline,
                        on_progress=save)
    except KeyboardInterrupt:
        outcome.stopped_early = True
        print("\ninterrupted: writing what was measured", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    save(outcome)
    written = report.write_report(meta, outcome.records, stem, not args.no_plots)
    save(outcome)  # again, with the plots' note
    for path in [f"{stem}.json"] + written:
        print(f"wrote {path}")
    print(f"{outcome.jobs_done} of {len(jobs)} jobs in {meta['wall_s']:.0f} s")
    return 1 if any(r["status"] == "wrong" for r in outcome.records) else 0


def _render(args):
    """--from-json: the table, .txt and plots of an earlier run, measuring nothing."""
    import json

    from . import report

    try:
        with open(args.from_json) as source:
            meta = json.load(source)
        records = meta.pop("records")
        name = os.path.basename(args.from_json)
        out = args.out or os.path.dirname(os.path.abspath(args.from_json))
        os.makedirs(out, exist_ok=True)
        stem = os.path.join(out, name[:-5] if name.endswith(".json") else name)
        written = report.write_report(meta, records, stem, not args.no_plots)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CommandError(f"--from-json {args.from_json}: cannot render it ({type(error).__name__}: "
                           f"{error})") from None
    for path in written:
        print(f"wrote {path}")
    return 0
