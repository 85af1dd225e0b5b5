"""Where `auto` hands a whole layer to torch.nn's own implementation (cuDNN on
a GPU, oneDNN/ATen on a CPU): from measured tables, never from a guess.

A table (rnnkernels/handoff_tables/*.json, written by
`python -m rnnkernels handoff-table BENCH.json ...` from the benchmark suite's
JSON files) holds, for one device - a GPU model, or a CPU model at one thread
count - the median times the suite measured for torch.nn and for each
rnnkernels backend, case by case. Before a layer runs, `auto` looks up the
measured case nearest to it: the same cell, dtype, mode (inference or
training), layer count, directions, packing and projection, and within 2x in
batch, hidden size and steps. Where the backend `auto` picks was more than 5%
slower than torch.nn there (MARGIN: closer than that is noise), the layer
runs torch.nn's forward instead, so `auto` is not slower than torch.nn
anywhere a table covers, beyond that margin. Where nothing was measured near,
rnnkernels' own kernels run, on the path each backend's rule picks.

Only calls torch.nn can run the same way are handed over: backend 'auto', no
tbptt (torch.nn cannot cut the gradient inside one call), no torch.func
transform active (torch.nn's layers do not vmap), not while torch.compile
traces (the compiled graph keeps rnnkernels' ops). A handed-over call is
torch.nn's own: last_backend and last_path say 'torch.nn', and it has
torch.nn's limits (cuDNN has no double backward; the CPU LSTM refuses in-place
changes to its outputs).

RNNKERNELS_HANDOFF_TABLES names another folder of tables; 'off' turns the
hand-over off.
"""

import functools
import json
import math
import os
import pathlib
import platform

import torch

BASELINE = "torch.nn"  # the benchmark suite's name for torch.nn's implementation
PATH_SEPARATOR = ":"  # the suite's 'backend:path', a backend with one kernel path forced
TABLE_FORMAT = 1
TABLE_DIR = pathlib.Path(__file__).with_name("handoff_tables")
# A measured case stands for calls within this factor in batch, hidden size and steps.
REACH = 2.0
# torch.nn must have been this much faster to take the call: within it the
# medians differ by less than the noise of the measurements, and handing over
# costs its own check (about 5% of a 0.45 ms layer call on a CPU).
MARGIN = 1.05
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


@functools.lru_cache(maxsize=None)
def cpu_name():
    """The CPU model as /proc/cpuinfo names it (the benchmark suite's device name on a CPU)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device):
    """The name tables are keyed by: the GPU's, or the CPU model's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def table_folder():
    """The folder tables are read from, or None when the hand-over is off."""
    setting = os.environ.get("RNNKERNELS_HANDOFF_TABLES", "")
    if setting.lower() == "off":
        return None
    return setting or str(TABLE_DIR)


def _case_key(cell, dtype, mode, layers, bidirectional, packed, projected):
    return (cell, dtype, mode, int(layers), bool(bidirectional), bool(packed), bool(projected))


def _device_key(device_type, device, threads):
    return (device_type, device, threads if device_type == "cpu" else None)


@functools.lru_cache(maxsize=8)
def _load(folder):
    """{device key: {case key: [(log2 B, log2 H, log2 T, {impl: median ms})]}} of every table in folder."""
    index = {}
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        table = json.loads(path.read_text())
        if table.get("format") != TABLE_FORMAT:
            raise ValueError(f"{path}: not a hand-off table of format {TABLE_FORMAT}")
        cases = index.setdefault(_device_key(table["device_type"], table["device"], table.get("cpu_threads")), {})
        for case in table["cases"]:
            key = _case_key(case["cell"], case["dtype"], case["mode"], case["layers"], case["bidirectional"],
                            case["packed"], case["proj_size"] > 0)
            point = (math.log2(case["batch"]), math.log2(case["hidden_size"]), math.log2(case["seq_len"]))
            cases.setdefault(key, []).append((*point, case["median_ms"]))
    return index


_DECISIONS = {}  # (folder, call, case) -> bool: hands_over's answers, asked once each
_DECISIONS_LIMIT = 4096


def hands_over(call, case, resolve_backend):
    """Whether a layer call hands over to torch.nn: call = (device type,
    device name, threads), case = (cell, dtype, training, layers,
    bidirectional, packed, projected, batch, hidden, steps);
    resolve_backend() names the backend `auto` would run (asked only where a
    table covers the call). Each answer is kept, so a repeated call costs a
    dict lookup: the work of deciding, right before a small layer's kernels,
    measurably slowed them (cache effects: 30-60 us on a 450 us bf16 LSTM)."""
    key = (table_folder(), call, case)
    decision = _DECISIONS.get(key)
    if decision is None:
        decision = covers(*call, *case) and torch_is_faster(*call, resolve_backend(), *case)
        if len(_DECISIONS) >= _DECISIONS_LIMIT:
            _DECISIONS.clear()
        _DECISIONS[key] = decision
    return decision


def covers(device_type, device, threads, cell, dtype, training, layers, bidirectional, packed, projected,
           batch, hidden, steps):
    """Whether a table measured a case near this call (cheap: the layer asks
    this before resolving which backend `auto` would run)."""
    return _nearest_times(table_folder(), device_type, device, threads, cell, dtype,
                          "fwd+bwd" if training else "fwd", layers, bidirectional, packed, projected,
                          batch, hidden, steps) is not None


@torch.compiler.assume_constant_result
def torch_is_faster(device_type, device, threads, backend, cell, dtype, training, layers, bidirectional,
                    packed, projected, batch, hidden, steps):
    """Whether the nearest measured case (see the module docstring) ran torch.nn
    faster than `backend` (on the fastest of its measured paths, which the
    backend then takes: fastest_path); False where no table covers the call."""
    times = _nearest_times(table_folder(), device_type, device, threads, cell, dtype,
                           "fwd+bwd" if training else "fwd", layers, bidirectional, packed, projected,
                           batch, hidden, steps)
    ours = [ms for impl, ms in (times or {}).items() if impl.split(PATH_SEPARATOR)[0] == backend]
    return bool(ours) and BASELINE in times and times[BASELINE] * MARGIN < min(ours)


@torch.compiler.assume_constant_result
def fastest_path(device_type, device, threads, backend, cell, dtype, training, layers, bidirectional,
                 packed, projected, batch, hidden, steps):
    """The kernel path of `backend` that ran the nearest measured case fastest
    (the suite's 'backend:path' implementations), or None where no table
    measured its paths: the backend's own rule decides then."""
    times = _nearest_times(table_folder(), device_type, device, threads, cell, dtype,
                           "fwd+bwd" if training else "fwd", layers, bidirectional, packed, projected,
                           batch, hidden, steps)
    paths = {impl.split(PATH_SEPARATOR)[1]: ms for impl, ms in (times or {}).items()
             if impl.startswith(backend + PATH_SEPARATOR)}
    return min(paths, key=paths.get) if paths else None


@functools.lru_cache(maxsize=4096)
def _nearest_times(folder, device_type, device, threads, cell, dtype, mode, layers, bidirectional, packed,
                   projected, batch, hidden, steps):
    """{implementation: median ms} of the nearest measured case within REACH, or None."""
    if folder is None or min(batch, hidden, steps) < 1:
        return None
    cases = _load(folder).get(_device_key(device_type, device, threads), {})
    points = cases.get(_case_key(cell, dtype, mode, layers, bidirectional, packed, projected), ())
    here = (math.log2(batch), math.log2(hidden), math.log2(steps))
    best = None
    for *point, times in points:
        distance = max(abs(a - b) for a, b in zip(point, here))
        if distance <= math.log2(REACH) and (best is None or distance < best[0]):
            best = (distance, times)
    return None if best is None else best[1]


def call_shape(input, batch_first):
    """(steps, batch) of a recurrent layer's input, or None when it is malformed
    (the layer's own checks then raise torch.nn's error)."""
    if isinstance(input, torch.nn.utils.rnn.PackedSequence):
        sizes = input.batch_sizes
        return (sizes.numel(), int(sizes[0])) if sizes.dim() == 1 and sizes.numel() else None
    if not isinstance(input, torch.Tensor):
        return None
    if input.dim() == 2:
        return input.shape[0], 1
    if input.dim() == 3:
        return (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    return None


def dtype_name(dtype):
    return _DTYPE_NAMES.get(dtype)
