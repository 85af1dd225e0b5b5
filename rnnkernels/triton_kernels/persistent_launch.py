"""The 'persistent' path: launch persistent.py's kernels, one cooperative
launch per direction of a layer, on the buffers launch.py allocates.

When the path is taken (launch.choose_path; a stated model until a GPU
measures it):
- P = max(cdiv(H, BLOCK_U), cdiv(H_out, BLOCK_U)) programs (BLOCK_U = 16
  units each, tl.dot's minimum N), each owning its units' W_hh slice on chip;
- taken by `auto` on a GPU where P <= the device's SMs (one program per SM)
  and each program's resident weights (`resident_bytes`: forward W_hh rows
  [pow2(H_out), 16] x G, plus W_hr rows with a projection; backward the
  columns [pow2(H), 16] x G, plus W_hr columns) are at most
  RESIDENT_BUDGET bytes for the products' precision (scaled down on a GPU
  with less shared memory than sm_90), the sizes that
  tests/test_gpu_compile.py compiles spill-free within shared memory under
  triton 3.6 and 3.9 for sm_90; elsewhere the step path runs. Layers with H, H_out <= 64 keep the
  sequence kernel (one launch, no barrier at all).

Before each GPU launch the kernel is compiled (kernel.warmup, cached by the
JIT) and checked against the device: no spills, registers x threads and
shared memory within one SM's limits, P <= SMs. A cooperative launch
(`launch_cooperative_grid=True`) then either runs every program at once or
fails cleanly, so the grid barrier cannot wait on a program that never
started. A forced path (RNNKERNELS_TRITON_PATH=persistent) that fails the
check raises RuntimeError; `auto` falls back to the step path, with a warning
naming the reason (`last_refusal`).

Failure reporting: a barrier that times out (grid_sync.py) makes the kernel
poison its outputs with NaN and set a per-device error word. After each
launch an async copy (graph-capturable) mirrors that word into pinned host
memory; the next call of the triton backend on that device reads the host
copy at its entry, without a device sync, outside any graph capture, and
raises RuntimeError. RNNKERNELS_TRITON_SYNC_CHECK=1 syncs after each launch
and raises from the call itself (debugging).

Under Triton's interpreter the kernels run with the barrier compiled out,
one launch per stage with the full grid of P programs (persistent.py), so
any run with RNNKERNELS_TRITON_PATH=persistent exercises the partitioning on
CPU. INTERPRETER_BARRIER = True launches the whole grid once with the real
barrier instead (bounded by INTERPRETER_POLLS polls): for an executor that
runs the programs as threads (the sequential interpreter times out there
for P > 1, which is how the failure path is tested on CPU).
"""

import os
import warnings

import torch
import triton

from . import graphs, grid_sync
from . import persistent as kernels
from .precision import rnn_fp32_precision

# Units (and projection outputs) per program, and rows of the batch per tl.dot
# (its minimum). The forward stacks the gates of its units as the MMA's M
# side (persistent.py), so a single-gate RNN takes 64 units per program on a
# GPU to fill a Hopper warpgroup's 64 rows; under the interpreter every cell
# takes 16, so small layers span several programs.
BLOCK_U = 16
RNN_FORWARD_BLOCK_U = 64
BLOCK_B = 16
# Assumed SM count where no GPU can be asked (recording for the compile gate): H100 SXM / H200.
ASSUMED_SMS = 132
# Per-program resident weight bytes that `auto` admits, by the precision of the
# products (see the module docstring). Measured with the compile gate, sm_90,
# triton 3.9, at the warps and stages below: 16-bit and TF32 slices up to
# 128 KiB (LSTM H = 1024 in 16 bits, 512 in TF32) compiled spill-free within
# shared memory; IEEE fp32 dots run on FMA units with their operands in
# registers and spilled past 32 KiB; fp64 spilled with a projection already
# at 32 KiB, so `auto` leaves fp64 to the step path (forcing still runs it,
# behind the launch's residency check).
RESIDENT_BUDGET = {"float16": 128 * 1024, "bfloat16": 128 * 1024, "tf32": 128 * 1024, "ieee": 32 * 1024,
                   "float64": 0}
# Launch options: the forward's h loads are pipelined two deep (three stages
# put a 16-bit LSTM at H = 1024 1 KiB over the 227 KiB of shared memory); the
# backward's per-gate products (batch as M, mma.sync) need 8 warps to stay
# spill-free at 512 columns of fp32.
FORWARD_NUM_WARPS = 4
FORWARD_NUM_STAGES = 2
BACKWARD_NUM_WARPS = 8
# ... except with a projection, where 8 warps spilled 16 B at H = 512 (16-bit), 4 none.
BACKWARD_PROJECTION_NUM_WARPS = 4
# sm_90's opt-in shared memory per block: RESIDENT_BUDGET holds there, and
# shrinks in proportion on a GPU with less (an A100's 163 KiB: 72 %).
BUDGET_SHARED_MEMORY = 232448
# Test knobs for the interpreter (module docstring).
INTERPRETER_BARRIER = False
INTERPRETER_POLLS = grid_sync.INTERPRETER_POLLS
TIMEOUT_NS = grid_sync.TIMEOUT_NS

last_refusal = None


def cell_name(code):
    return ("lstm", "gru", "rnn_tanh", "rnn_relu")[code]


def _pow2(n):
    return max(16, triton.next_power_of_2(n))


def block_u(cell, backward, interpreted):
    """Units (and projection outputs) per program."""
    if cell in ("rnn_tanh", "rnn_relu") and not backward and not interpreted:
        return RNN_FORWARD_BLOCK_U
    return BLOCK_U


def programs(hidden, hidden_out, units=None):
    """P, the number of programs: one per `units` (default BLOCK_U) units or projection outputs."""
    units = units or BLOCK_U
    return max(triton.cdiv(hidden, units), triton.cdiv(hidden_out, units))


def resident_bytes(cell, hidden, hidden_out, dtype, has_projection):
    """The larger of forward's and backward's per-program resident weights, in bytes."""
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    size = torch.empty((), dtype=dtype).element_size()
    units = block_u(cell, False, False)
    forward = (4 if gates > 1 else 1) * units * _pow2(hidden_out) + (_pow2(hidden) * units if has_projection else 0)
    backward = gates * _pow2(hidden) * BLOCK_U + (_pow2(hidden_out) * BLOCK_U if has_projection else 0)
    return max(forward, backward) * size


def sm_count():
    """The current GPU's SMs, or ASSUMED_SMS without one (no sync either way)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    return ASSUMED_SMS


def shared_memory_share():
    """The current GPU's opt-in shared memory per block over BUDGET_SHARED_MEMORY,
    at most 1 (1 without a GPU)."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        optin = getattr(props, "shared_memory_per_block_optin", BUDGET_SHARED_MEMORY)
        return min(1.0, optin / BUDGET_SHARED_MEMORY)
    return 1.0


def refusal(cell, hidden, hidden_out, dtype, interpreted, forced=False):
    """Why the model does not take the persistent path for this layer, or None.
    A forced path is refused only where the grid cannot fit the SMs (the launch
    checks the compiled kernel's resources); `auto` also keeps to RESIDENT_BUDGET."""
    if interpreted:
        return None  # the launch-per-stage form has no residency limits
    has_projection = hidden_out != hidden
    count, sms = programs(hidden, hidden_out), sm_count()
    if count > sms:
        return f"it needs {count} programs (one per {BLOCK_U} units), more than the GPU's {sms} SMs"
    kind = budget_kind(dtype)
    need = resident_bytes(cell, hidden, hidden_out, dtype, has_projection)
    budget = int(RESIDENT_BUDGET[kind] * shared_memory_share())
    if need > budget and not forced:
        return (f"each program would hold {need} bytes of weights, over the {budget} bytes "
                f"admitted for {kind} products (RESIDENT_BUDGET)")
    return None


def budget_kind(dtype):
    """RESIDENT_BUDGET's key for a layer in dtype: its name, or fp32's product precision."""
    if dtype == torch.float32:
        return rnn_fp32_precision()
    return str(dtype).removeprefix("torch.")


# ---- the error flag ----------------------------------------------------------------------------

class _ErrorFlag:
    """The kernels' sticky error word on the device and its host mirror."""

    def __init__(self, device):
        self.device_word = torch.zeros(1, dtype=torch.int32, device=device)
        self.host_word = torch.zeros(1, dtype=torch.int32, pin_memory=device.type == "cuda")

    def publish(self):
        """Mirror the device word into host memory, asynchronously on the current stream."""
        self.host_word.copy_(self.device_word, non_blocking=True)

    def reset(self):
        self.device_word.zero_()
        self.host_word.zero_()


_FLAGS = {}


def error_flag(device):
    key = str(device)
    if key not in _FLAGS:
        _FLAGS[key] = _ErrorFlag(device)
    return _FLAGS[key]


def _capturing(device):
    """A CUDA graph capture on device's stream, or the CPU tests' stand-in (fake_graph.py)."""
    return graphs.capturing(device)


def raise_pending_error(device):
    """RuntimeError if a persistent launch on device has reported a timed-out
    barrier since the last check (reads host memory only; skipped while
    capturing a graph, where a replay, not this call, runs the kernels)."""
    flag = _FLAGS.get(str(device))
    if flag is None or _capturing(device) or int(flag.host_word[0]) == 0:
        return
    flag.reset()
    raise RuntimeError(
        "rnnkernels triton backend: a persistent kernel's grid barrier timed out on "
        f"{device} in an earlier call (a program waited for the others past the bound, {TIMEOUT_NS / 1e9:g} s "
        "on a GPU); that "
        "call's outputs were filled with NaN. Set RNNKERNELS_TRITON_PATH=step to avoid the "
        "persistent path, or RNNKERNELS_TRITON_SYNC_CHECK=1 to have the failing call itself raise.")


def _sync_check_enabled():
    return os.environ.get("RNNKERNELS_TRITON_SYNC_CHECK", "") == "1"


# ---- residency ---------------------------------------------------------------------------------

_RESIDENCY = {}


def _residency_problem(kernel, args, options, count, device):
    """Why a cooperative grid of `count` programs of this compiled kernel cannot be
    resident on device (one per SM), or None. Compiles (cached) but launches nothing."""
    compiled = kernel.warmup(*args, grid=(count,), **options)
    key = (compiled.hash, count, str(device))
    if key not in _RESIDENCY:
        compiled._init_handles()
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = triton.runtime.driver.active.utils.get_device_properties(index)
        threads = 32 * options["num_warps"]
        problems = []
        if compiled.n_spills:
            problems.append(f"it spills {compiled.n_spills} bytes of registers")
        if compiled.n_regs * threads > props["max_num_regs"]:
            problems.append(f"{compiled.n_regs} registers x {threads} threads exceed {props['max_num_regs']}")
        if compiled.metadata.shared > props["max_shared_mem"]:
            problems.append(f"{compiled.metadata.shared} B of shared memory exceed {props['max_shared_mem']} B")
        if count > props["multiprocessor_count"]:
            problems.append(f"{count} programs exceed the {props['multiprocessor_count']} SMs")
        _RESIDENCY[key] = "; ".join(problems) or None
    return _RESIDENCY[key]


# ---- launching ---------------------------------------------------------------------------------

def _refuse(problem, count, device, forced):
    """RuntimeError when the path was forced; else False (the step path runs), warned."""
    global last_refusal
    message = f"the persistent path cannot run its {count} programs on {device}: {problem}"
    if forced:
        raise RuntimeError(f"rnnkernels triton backend: RNNKERNELS_TRITON_PATH=persistent, but {message}")
    last_refusal = message
    warnings.warn(f"rnnkernels: {message}; running the step path instead", RuntimeWarning, stacklevel=4)
    return False


def _run(kernel, device, count, stages, make_args, options, interpreted, forced):
    """Run stages [0, stages) of kernel on a grid of `count` programs; False if
    the GPU cannot hold the grid and the path was not forced."""
    grid = (count,)
    if interpreted and not INTERPRETER_BARRIER:
        unused = torch.zeros(grid_sync.SYNC_WORDS, dtype=torch.int32, device=device)
        for stage in range(stages):
            kernel[grid](*make_args(stage, stage + 1, unused, unused, 0), BARRIER=False, USE_CLOCK=False,
                         **options)
        return True
    problem = None
    if str(device) not in _FLAGS and _capturing(device):
        # pinned host memory cannot be allocated while a graph is being captured
        problem = "its error flag is created by a first call outside any graph capture"
    elif stages * count >= 2**31:  # the barrier's int32 counter reaches stages * programs
        problem = f"{stages} stages x {count} programs overflow the barrier's int32 counter"
    if problem is not None:
        return _refuse(problem, count, device, forced)
    flag = error_flag(device)
    sync = torch.zeros(grid_sync.SYNC_WORDS, dtype=torch.int32, device=device)  # an async fill
    limit = INTERPRETER_POLLS if interpreted else TIMEOUT_NS
    args = make_args(0, stages, sync, flag.device_word, limit)
    options = dict(options, BARRIER=True, USE_CLOCK=not interpreted, launch_cooperative_grid=True)
    if device.type == "cuda":
        problem = _residency_problem(kernel, args, options, count, device)
        if problem is not None:
            return _refuse(problem, count, device, forced)
    kernel[grid](*args, **options)
    flag.publish()
    if _sync_check_enabled():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        raise_pending_error(device)
    return True


def forward(sizes, flags, buffers, interpreted, forced):
    """The persistent forward on launch.forward's buffers ({name: tensor}, names of
    launch._FORWARD_BUFFERS plus w_hr); sizes (T, B, H, H_out, S). Returns whether it ran."""
    steps, batch, hidden, hidden_out, slots = sizes
    b = buffers
    has_projection = flags["HAS_PROJ"]
    units = block_u(cell_name(flags["CELL"]), False, interpreted)
    options = dict(flags, BLOCK_B=BLOCK_B, BLOCK_U=units, BLOCK_K=_pow2(hidden_out),
                   BLOCK_H=_pow2(hidden) if has_projection else 16, num_warps=FORWARD_NUM_WARPS,
                   num_stages=FORWARD_NUM_STAGES)

    def make_args(begin, end, sync, error, limit):
        return (begin, end, b["xg"], b["w_hh"], b["b_hn"], b["w_hr"], b["lengths"], b["hs"], b["cs"], b["y"],
                b["gates"], b["aux"], sync, error, steps, batch, hidden, hidden_out, slots, limit)

    stages = steps * (2 if has_projection else 1)
    return _run(kernels.forward_persistent_kernel, b["xg"].device, programs(hidden, hidden_out, units), stages,
                make_args, options, interpreted, forced)


def backward(sizes, cut, flags, buffers, interpreted, forced):
    """The persistent backward loop on launch.backward's buffers; sizes (T, B, H,
    H_out); cut: the tbptt period (T + 1: none). Returns whether it ran."""
    steps, batch, hidden, hidden_out = sizes
    b = buffers
    has_projection = flags["HAS_PROJ"]
    options = dict(flags, BLOCK_B=BLOCK_B, BLOCK_U=BLOCK_U, BLOCK_K=_pow2(hidden),
                   BLOCK_P=_pow2(hidden_out) if has_projection else 16,
                   num_warps=BACKWARD_PROJECTION_NUM_WARPS if has_projection else BACKWARD_NUM_WARPS)

    def make_args(begin, end, sync, error, limit):
        return (begin, end, steps, cut, b["w_hh"], b["w_hr"], b["lengths"], b["dy"], b["hs"], b["cs"], b["gates"],
                b["aux"], b["d_gates"], b["d_n"], b["d_ht"], b["carry"], b["d_c"], b["direct"], sync, error,
                batch, hidden, hidden_out, limit)

    stages = steps * (2 if has_projection else 1) + 1
    return _run(kernels.backward_persistent_kernel, b["dy"].device, programs(hidden, hidden_out), stages, make_args,
                options, interpreted, forced)


def measure_barrier_floor(steps=1000, programs=0):
    """Microseconds per empty grid barrier (grid_sync.grid_barrier) on the current
    CUDA device: cooperative launches of `programs` programs (0: one per SM) running
    2*steps and `steps` barriers, timed with CUDA events, the difference divided by
    steps so the launch overhead cancels. Syncs (a measurement, not a launch path);
    RuntimeError without a GPU, or where a barrier timed out."""
    if not torch.cuda.is_available():
        raise RuntimeError("measure_triton_barrier_floor needs a CUDA GPU")
    device = torch.device("cuda", torch.cuda.current_device())
    count = programs or sm_count()
    flag = error_flag(device)
    raise_pending_error(device)

    def run(barriers):
        sync = torch.zeros(grid_sync.SYNC_WORDS, dtype=torch.int32, device=device)
        kernels.barrier_floor_kernel[(count,)](barriers, sync, flag.device_word, TIMEOUT_NS, USE_CLOCK=True,
                                               num_warps=4, launch_cooperative_grid=True)

    run(2)  # compiles, and loads the module
    times = {}
    for barriers in (steps, 2 * steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(barriers)
        end.record()
        end.synchronize()
        times[barriers] = start.elapsed_time(end) * 1000.0  # microseconds
    flag.publish()
    torch.cuda.synchronize(device)
    raise_pending_error(device)
    return (times[2 * steps] - times[steps]) / steps
