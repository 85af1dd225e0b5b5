"""The GPU compile gate, on a machine without a GPU: the Triton kernels as the
launchers really launch them, compiled for sm_90 and sm_80 under triton 3.9
(this environment's) and triton 3.6 (the GPU machines'), must compile, must
not spill, and must fit the device's shared memory.

What is recorded (rnnkernels/triton_kernels/record.py: the launchers run on
CPU tensors with the GPU's tile choices and every launch recorded, nothing
run): every cell (lstm, lstm+proj, gru, rnn_tanh, rnn_relu) x float32 (TF32
and IEEE), bfloat16, float16 (float64 at two sizes) x (B, H) in SHAPES x
every path choose_path returns or can be forced to x lengths or not x
saving for backward or not, forward and backward. The persistent path is
recorded where the rule takes it (PERSISTENT_SHAPES add B in {16, 64} and H
up to 1024): forced beyond the rule, the launch checks the compiled kernel's
resources on the device and refuses what cannot be resident.

What is compiled by default: a greedy cover of the distinct launches
(`_sample`): every kernel in every dtype and fp32 precision, with every cell,
every tile it is launched with (the sequence kernels: with every cell), and
each optional input on, the largest tiles first; the persistent kernels
with the largest tiles the rule admits for every cell x dtype x projection.
The sequence (register-resident W_hh) kernels of every cell are
among them, so the audit's failures (RESIDENT at H <= 64: "Return type
mismatch"; lstm+proj backward_sequence_kernel at B = 64: spills) are always
compiled. sm_90 for all of them, sm_80 for one launch of each kernel.
`-m slow` compiles every recorded launch for both.

The persistent kernels' PTX is linted too (ptx_lint.py): the grid barrier's
arrive a release and its spin an acquire at GPU scope, no `.nc` loads, no
load of the weights inside the time loop, tensor-core instructions where the
products are 16-bit or TF32; tests/gate_faults.py plants a relaxed arrive and
a weight reload that the lint must report. The same facts give an analytical
per-step estimate, printed and kept in ESTIMATES_FILE.

A spill is STACK or LOCAL in `cuobjdump --dump-resource-usage` or LDL/STL in
the SASS. triton 3.9 and 3.6 run at once, one process each; compiled kernels
stay in RNNKERNELS_CACHE (default ~/.cache/rnnkernels)/triton-gate between
runs, and triton 3.6 is pip-installed there on first use (the 3.6 half skips,
saying why, where that fails). tests/gate_faults.py holds a deliberate
compile error and spill that the gate must report.
"""

import json
import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from rnnkernels.triton_kernels import compile_gate, launch, record  # noqa: E402

CELLS = [("lstm", None), ("lstm", "proj"), ("gru", None), ("rnn_tanh", None), ("rnn_relu", None)]
# B = 1 and multiples of 16 are specialized; H <= 64 takes the sequence path;
# B = 64 gives the sequence kernel its largest row tile.
SHAPES = [(1, 18), (3, 64), (64, 32), (64, 64), (16, 768), (64, 1024)]
# The persistent path's sizes (B = 16 and 64 are one specialization class):
# the rule admits some of them per dtype, the largest tiles it admits among them.
PERSISTENT_SHAPES = [(16, 256), (64, 256), (16, 512), (16, 768), (64, 768), (16, 1024), (64, 1024)]
STEPS = 3
# Optional inputs (constexpr flags); sampled on, where they add code.
FLAGS = ("HAS_LENGTHS", "SAVE", "HAS_BHN")
# The kernel whose launch shows that a forced path ran. step-graph launches
# the step kernels: the graph's warm-up runs them directly, so the recorder
# sees them (the capture itself records into the stand-in graph).
PATH_KERNELS = {"step": "forward_step_kernel", "step-graph": "forward_step_kernel",
                "sequence": "forward_sequence_kernel", "persistent": "forward_persistent_kernel"}
CACHE_DIR = os.path.join(compile_gate.CACHE_ROOT, "triton-gate")
RESULTS_FILE = os.path.join(compile_gate.CACHE_ROOT, "triton-gate-results.json")
ESTIMATES_FILE = os.path.join(compile_gate.CACHE_ROOT, "triton-gate-estimates.txt")


def _precisions(dtype):
    return ("tf32", "ieee") if dtype == torch.float32 else (None,)


def _cases():
    for cell, proj in CELLS:
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            shapes = SHAPES + PERSISTENT_SHAPES if dtype != torch.float64 else [(3, 64), (16, 768)]
            for batch, hidden in shapes:
                p = None if proj is None else (16 if hidden <= 64 else 256)
                for precision in _precisions(dtype):
                    yield cell, p, dtype, batch, hidden, precision


@pytest.fixture(scope="module")
def recorded():
    """(specs in recording order, {case: set of paths recorded}, {case: paths the rule returns})."""
    saved_env = os.environ.pop("RNNKERNELS_TRITON_PATH", None)
    saved_precision = torch.backends.cudnn.rnn.fp32_precision
    recorded_paths, rule_paths = {}, {}
    try:
        with record.recording() as rec:
            for cell, proj, dtype, batch, hidden, precision in _cases():
                case = (cell, proj, str(dtype), batch, hidden, precision)
                if precision is not None:
                    torch.backends.cudnn.rnn.fp32_precision = precision
                rule = launch.choose_path(cell, batch, hidden, proj or hidden, dtype)
                rule_paths[case] = {rule}
                for path in launch.PATHS:
                    if path == "persistent" and rule != path:
                        # forced beyond the rule, the launch's residency check (not this gate) decides
                        continue
                    os.environ["RNNKERNELS_TRITON_PATH"] = path
                    try:
                        launch.choose_path(cell, batch, hidden, proj or hidden, dtype)
                    except ValueError:  # a path this shape cannot be forced to
                        del os.environ["RNNKERNELS_TRITON_PATH"]
                        continue
                    for lengths in (False, True):
                        for save in (False, True):
                            rec.launched.clear()
                            record.record_case(cell, dtype, STEPS, batch, hidden, proj=proj, lengths=lengths,
                                               save=save, tbptt=2 if lengths else None)
                            if PATH_KERNELS[path] in rec.launched:
                                recorded_paths.setdefault(case, set()).add(path)
                    del os.environ["RNNKERNELS_TRITON_PATH"]
    finally:
        os.environ.pop("RNNKERNELS_TRITON_PATH", None)
        if saved_env is not None:
            os.environ["RNNKERNELS_TRITON_PATH"] = saved_env
        torch.backends.cudnn.rnn.fp32_precision = saved_precision
    return list(rec.specs.values()), recorded_paths, rule_paths


def _tensor_dtype(spec):
    return next(a["tensor"] for a in spec["args"] if isinstance(a, dict) and "tensor" in a)


def _tile(spec):
    o = spec["options"]
    return o.get("BLOCK_B"), o.get("BLOCK_U", o.get("BLOCK_P")), o.get("BLOCK_K"), o.get("num_warps", 4)


def _features(spec):
    """What a compile of spec checks: its kernel with its dtype and precision,
    with its cell, with its tile, with each optional input on."""
    k, o = spec["kernel"], spec["options"]
    features = {(k, _tensor_dtype(spec), o.get("PRECISION")), (k, o.get("CELL"), o.get("HAS_PROJ")),
                (k, _tile(spec))}
    if k.endswith("sequence_kernel"):  # W_hh in registers: what it costs grows with gates x tile
        features.add((k, o.get("CELL"), o.get("HAS_PROJ"), _tile(spec)))
    if k.endswith("persistent_kernel"):  # W slices on chip: every cell x dtype x projection
        features.add((k, o.get("CELL"), o.get("HAS_PROJ"), _tensor_dtype(spec), o.get("PRECISION")))
    return features | {(k, flag) for flag in FLAGS if o.get(flag) is True}


def _sample(specs):
    """(specs to compile, with "archs" set): a greedy cover of every spec's
    features, each time the launch that adds most of them, the largest tile
    with the most optional inputs on among equals (the most registers). sm_80
    for the first launch of each kernel."""
    def weight(spec):
        b, u, k, _ = _tile(spec)
        return (b or 0) * (u or 0) * (k or 0), sum(spec["options"].get(flag) is True for flag in FLAGS)

    def add(spec):
        first = not any(c["kernel"] == spec["kernel"] for c in chosen)
        persistent = spec["kernel"].endswith("persistent_kernel")  # sm_80 below: the rule admits less there
        chosen.append(dict(spec, archs=[90, 80] if first and not persistent else [90]))

    candidates = [(spec, _features(spec)) for spec in specs]
    chosen, seen = [], set()
    while True:
        spec, features = max(candidates, key=lambda c: (len(c[1] - seen), weight(c[0])))
        if not features - seen:
            break
        add(spec)
        seen |= features
    # persistent kernels: also the largest tiles the rule admits, per cell x dtype x projection
    largest = {}
    for spec in specs:
        if spec["kernel"].endswith("persistent_kernel"):
            o = spec["options"]
            group = (spec["kernel"], o["CELL"], o["HAS_PROJ"], _tensor_dtype(spec), o.get("PRECISION"))
            size = (o["BLOCK_K"] * max(o.get("BLOCK_H", 1), o.get("BLOCK_P", 1)), weight(spec)[1])
            if group not in largest or size > largest[group][0]:
                largest[group] = (size, spec)
    taken = [{k: v for k, v in c.items() if k != "archs"} for c in chosen]
    for _, spec in largest.values():
        if spec not in taken:
            add(spec)
    # sm_80 once per persistent kernel: its smallest W slice (an A100 admits 72 % of sm_90's budget)
    for kernel in {c["kernel"] for c in chosen if c["kernel"].endswith("persistent_kernel")}:
        smallest = min((c for c in chosen if c["kernel"] == kernel), key=lambda c: c["options"]["BLOCK_K"])
        smallest["archs"] = [90, 80]
    return chosen


def _compile(specs):
    jobs = {"triton-3.9": ("here", specs, [90]), "triton-3.6": ("3.6", specs, [90])}
    outcome = compile_gate.compile_all(jobs, CACHE_DIR)
    with open(RESULTS_FILE, "w") as f:
        json.dump({"specs": specs, "results": outcome}, f, indent=1)
    return outcome


# The Triton barrier floor's empty loop (persistent_launch.measure_barrier_floor),
# which no launcher records: its launch as the GPU script makes it.
_WORD = {"tensor": "int32", "align16": True}
BARRIER_FLOOR_SPEC = {"module": "persistent", "kernel": "barrier_floor_kernel", "args": [17, _WORD, _WORD, 17],
                      "options": {"USE_CLOCK": True, "launch_cooperative_grid": True, "num_warps": 4},
                      "grid": [132], "archs": [90, 80]}


@pytest.fixture(scope="module")
def gate(recorded):
    specs = _sample(recorded[0]) + [BARRIER_FLOOR_SPEC]
    return specs, _compile(specs)


def test_every_path_the_rule_returns_was_recorded(recorded):
    _, recorded_paths, rule_paths = recorded
    missing = {case: rule - recorded_paths.get(case, set()) for case, rule in rule_paths.items()
               if rule - recorded_paths.get(case, set())}
    assert not missing, f"paths the rule returns but no launch recorded: {missing}"
    assert {p for paths in recorded_paths.values() for p in paths} == set(launch.PATHS)


def test_sample_holds_the_audits_failing_cases(gate):
    specs, _ = gate
    resident = {(s["kernel"], s["options"]["CELL"], s["options"]["HAS_PROJ"]) for s in specs
                if s["kernel"].endswith("sequence_kernel")}
    for kernel in ("forward_sequence_kernel", "backward_sequence_kernel"):
        for code, proj in [(0, False), (0, True), (1, False), (2, False), (3, False)]:
            assert (kernel, code, proj) in resident, f"{kernel} CELL={code} HAS_PROJ={proj} not sampled"
    # the audit's spill: lstm+proj backward_sequence_kernel at B = 64 (BLOCK_B was 64 then)
    block_b = launch._tiles(64, 64, 16, "sequence")[0]
    assert any(s["kernel"] == "backward_sequence_kernel" and s["options"]["HAS_PROJ"]
               and s["options"]["BLOCK_B"] == block_b for s in specs), "lstm+proj backward_sequence_kernel, B=64"
    assert any(80 in s["archs"] for s in specs) and all(90 in s["archs"] for s in specs)


@pytest.mark.parametrize("job", ["triton-3.9", "triton-3.6"])
def test_kernels_compile_without_spills_within_shared_memory(gate, job):
    specs, outcome = gate
    results = outcome[job]
    if isinstance(results, str) and job == "triton-3.6" and "could not install" in results:
        pytest.skip(f"{job}: {results}")
    assert not isinstance(results, str), f"{job}: {results}"
    assert len(results) == sum(len(s["archs"]) for s in specs), f"{job}: not every compile reported"
    found = compile_gate.findings(specs, results)
    assert not found, f"{job}: {len(found)} findings (all results in {RESULTS_FILE}):\n" + "\n".join(found)


def _fault(kernel, options):
    pointer = {"tensor": "float32", "align16": True}
    return {"module": "tests/gate_faults.py", "kernel": kernel, "args": [pointer, pointer], "options": options,
            "grid": [1], "archs": [90]}


def test_gate_reports_planted_faults():
    """A compile error (the RESIDENT bug's two return types) and a spill."""
    specs = [_fault("return_type_mismatch_kernel", {"FLAG": True}),
             _fault("spilling_kernel", {"BLOCK": 8192, "num_warps": 1})]
    results = compile_gate.compile_all({"faults": ("here", specs, [90])}, CACHE_DIR)["faults"]
    assert not isinstance(results, str), results
    found = compile_gate.findings(specs, results)
    assert len(found) == 2, found
    assert "Return type mismatch" in found[0], found[0]
    assert "spills" in found[1] and "LDL/STL" in found[1], found[1]


def test_lint_reports_planted_barrier_faults():
    """A relaxed arrive and weights reloaded inside the time loop are reported; the same
    kernel without them passes the lint (its control)."""
    pointer, flags = {"tensor": "float32", "align16": True}, {"tensor": "int32", "align16": True}

    def spec(relaxed, reload):
        return {"module": "tests/gate_faults.py", "kernel": "barrier_fault_kernel",
                "args": [pointer, flags, pointer, 17],
                "options": {"RELAXED_ARRIVE": relaxed, "W_IN_LOOP": reload}, "grid": [4], "archs": [90]}

    specs = [spec(True, True), spec(False, False)]
    results = compile_gate.compile_all({"faults": ("here", specs, [90])}, CACHE_DIR)["faults"]
    assert not isinstance(results, str), results
    faulty = compile_gate.findings(specs[:1], [r for r in results if r["index"] == 0])
    assert any("arrive is not a release at GPU scope" in f and "relaxed" in f for f in faulty), faulty
    assert any("loads of the weights inside the time loop" in f for f in faulty), faulty
    assert not compile_gate.findings(specs, [r for r in results if r["index"] == 1])


def test_persistent_kernels_linted_and_estimated(gate, capsys):
    """Every sampled persistent launch carries the PTX lint's facts (its findings fail
    the compile test above); prints the analytical per-step estimate of each, to be
    checked against the first GPU run (also in ESTIMATES_FILE)."""
    from rnnkernels.triton_kernels import ptx_lint

    specs, outcome = gate
    lines = []
    for job, results in outcome.items():
        if isinstance(results, str):
            continue
        for r in results:
            spec = specs[r["index"]]
            if not spec["kernel"].endswith("persistent_kernel") or r["arch"] != 90 or "error" in r:
                continue
            assert "lint" in r, f"{job}: {spec['kernel']} not linted"
            o, facts = spec["options"], r["lint"]
            phases = 2 if o["HAS_PROJ"] else 1
            estimate = ptx_lint.per_step_estimate_us(facts, 32 * o["num_warps"], spec["grid"][0], 1, phases)
            lines.append(f"{job} {spec['kernel']} CELL={o['CELL']} PROJ={o['HAS_PROJ']} {_tensor_dtype(spec)}/"
                         f"{o['PRECISION']} K={o['BLOCK_K']} P={spec['grid'][0]}: {estimate:.2f} us/step (B<=16) "
                         f"[{facts['loop_global_bytes_per_thread']} B/thread/step, {facts['loop_mma']} MMA "
                         f"({facts['loop_wgmma']} wgmma), regs {r['regs']}]")
    assert lines, "no persistent launch compiled"
    with open(ESTIMATES_FILE, "w") as f:
        f.write("\n".join(lines) + "\n")
    with capsys.disabled():
        print("\nper-step estimates (est.: barrier 1 us, L2 5.5 TB/s, 20 ns per MMA):\n" + "\n".join(lines))


def _fits_sm80(spec):
    """Whether the rule admits a persistent launch's weights on an A100 (its budget
    shrinks with its shared memory, persistent_launch.shared_memory_share)."""
    from rnnkernels.triton_kernels import persistent_launch

    o = spec["options"]
    if not spec["kernel"].endswith("persistent_kernel"):
        return True
    if spec["kernel"].startswith("forward"):
        elements = (4 if o["G"] > 1 else 1) * o["BLOCK_U"] * o["BLOCK_K"] + o["HAS_PROJ"] * o["BLOCK_H"] * o["BLOCK_U"]
    else:
        elements = o["G"] * o["BLOCK_K"] * o["BLOCK_U"] + o["HAS_PROJ"] * o["BLOCK_P"] * o["BLOCK_U"]
    dtype = _tensor_dtype(spec)
    kind = o["PRECISION"] if dtype == "float32" else dtype
    share = compile_worker_shared_limit(80) / persistent_launch.BUDGET_SHARED_MEMORY
    return elements * {"float64": 8, "float32": 4}.get(dtype, 2) <= persistent_launch.RESIDENT_BUDGET[kind] * share


def compile_worker_shared_limit(arch):
    from rnnkernels.triton_kernels.compile_worker import SHARED_LIMIT

    return SHARED_LIMIT[arch]


@pytest.mark.slow
def test_every_recorded_launch_compiles(recorded):
    specs = [dict(s, archs=[90, 80] if _fits_sm80(s) else [90]) for s in recorded[0]]
    outcome = _compile(specs)
    for job, results in outcome.items():
        assert not isinstance(results, str), f"{job}: {results}"
        found = compile_gate.findings(specs, results)
        assert not found, f"{job}: {len(found)} findings:\n" + "\n".join(found)


def test_cache_warm_up_fills_a_cache_that_then_hits(tmp_path):
    """scripts/warm_triton_cache.py (the GPU script's first stage), on two
    launches under this environment's triton: the first run compiles into
    the cache, the second finds both there."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "warm_triton_cache.py")
    summaries = []
    for run in range(2):
        summary = tmp_path / f"summary{run}.json"
        done = subprocess.run([sys.executable, script, "--cache", str(tmp_path / "cache"), "--triton", "here",
                               "--anchors-only", "--limit", "2", "--summary", str(summary)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        summaries.append(json.loads(summary.read_text()))
    assert [(s["specs"], s["misses"], s["hits"]) for s in summaries] == [(2, 2, 0), (2, 0, 2)], summaries
    assert not summaries[0]["findings"] and not summaries[0]["failures"], summaries[0]
