"""Launchers: allocate the buffers of forward.py / backward.py, pick tiles and
the kernel path, run the kernels, and finish backward with large matmuls.

No autograd here; ops.py wraps these as torch.library custom ops.
"""

import functools
import os

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ..contract import CELL_GATES
from . import backward as bwd
from . import checks
from . import forward as fwd
from . import graphs
from . import persistent_launch
from .precision import rnn_fp32_precision

CELL_CODES = {"lstm": fwd.LSTM, "gru": fwd.GRU, "rnn_tanh": fwd.RNN_TANH, "rnn_relu": fwd.RNN_RELU}
PATHS = ("step", "step-graph", "sequence", "persistent")

# The sequence kernel holds all of W_hh in one register tile for the whole
# sequence (one program per block of rows, no launch per step): it exists only
# for H, H_out <= SEQUENCE_MAX_WIDTH. Larger layers take the step path (until
# the persistent kernels land); a W_hh streamed from L2 by one program spilled
# and ran on one SM. On a GPU the step path's loop runs captured in a CUDA
# graph ('step-graph', graphs.py); under the interpreter the loop launches
# directly ('step'). Between the two, on a GPU, the 'persistent' path
# (persistent.py, persistent_launch.py: the whole sequence in one cooperative
# launch, W_hh spread over the SMs) runs where its model admits the layer.
# RNNKERNELS_TRITON_PATH = step | step-graph | sequence | persistent forces a
# path (step-graph on CPU tensors replays fake_graph.FakeGraph; persistent
# under the interpreter launches each stage on its own).
SEQUENCE_MAX_WIDTH = 64


# Read once, at import: a capture (fake_graph.py) or a recording (record.py)
# swaps the kernel objects for stand-ins while it lasts.
_KERNELS_INTERPRETED = isinstance(fwd.forward_step_kernel, InterpretedFunction)


def is_interpreted():
    """True when the kernels were created under TRITON_INTERPRET=1 (they run on CPU tensors)."""
    return _KERNELS_INTERPRETED


def _forced():
    return os.environ.get("RNNKERNELS_TRITON_PATH", "")


# The benchmark suite's cell names, which the hand-off tables use.
_BENCH_CELLS = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn_relu"}


def _runnable(path, cell, hidden, hidden_out, dtype, fits):
    if path == "sequence":
        return fits
    if path == "persistent":
        return persistent_launch.refusal(cell, hidden, hidden_out, dtype, False) is None
    return path in PATHS


def _measured_path(cell, batch, hidden, hidden_out, dtype, fits, device, steps, training, packed):
    """The path a hand-off table measured fastest near this call (rnnkernels/handoff.py:
    the suite's 'triton:<path>' implementations on this GPU), where it can run it; else None."""
    from .. import handoff

    name = handoff.dtype_name(dtype)
    if device is None or device.type != "cuda" or name is None or steps is None:
        return None
    path = handoff.fastest_path("cuda", handoff.device_name(device), None, "triton", _BENCH_CELLS[cell], name,
                                training, 1, False, packed, hidden_out != hidden, batch, hidden, steps)
    return path if path is not None and _runnable(path, cell, hidden, hidden_out, dtype, fits) else None


def choose_path(cell, batch, hidden, hidden_out, dtype, device=None, steps=None, training=False, packed=False):
    """'sequence', 'persistent', 'step-graph' or 'step' for a layer of these sizes
    (pure: no launch, no sync). RNNKERNELS_TRITON_PATH first; then, on a GPU
    and given the call's device, steps and mode, the path a measured table
    found fastest near it; then the stated model: the sequence kernel where
    one tile holds W_hh, the persistent kernels where persistent_launch's
    model admits the layer, the graph-captured step loop elsewhere."""
    fits = max(hidden, hidden_out) <= SEQUENCE_MAX_WIDTH
    forced = _forced()
    if forced:
        if forced not in PATHS:
            raise ValueError(f"RNNKERNELS_TRITON_PATH must be one of {', '.join(PATHS)}, got {forced!r}")
        if forced == "sequence" and not fits:
            raise ValueError(f"RNNKERNELS_TRITON_PATH=sequence needs hidden and output sizes <= "
                             f"{SEQUENCE_MAX_WIDTH} (W_hh in one tile), got {hidden} and {hidden_out}")
        if forced == "persistent":
            refused = persistent_launch.refusal(cell, hidden, hidden_out, dtype, is_interpreted(), forced=True)
            if refused is not None:
                raise ValueError(f"RNNKERNELS_TRITON_PATH=persistent cannot run this layer: {refused}")
        return forced
    if is_interpreted():
        return "sequence" if fits else "step"
    measured = _measured_path(cell, batch, hidden, hidden_out, dtype, fits, device, steps, training, packed)
    if measured is not None:
        return measured
    if fits:
        return "sequence"
    if persistent_launch.refusal(cell, hidden, hidden_out, dtype, False) is None:
        return "persistent"
    return "step-graph"


# The largest tile edge of the step kernels; None picks 32 on a GPU (a step's
# grid stays wide at small batch) and 64 under the interpreter (fewer of its
# slow programs). Tests lower it to 16 to make small sizes span several tiles.
MAX_BLOCK = None
# The sequence kernel's unit tile covers W_hh, held in registers; 16 rows per
# program (tl.dot's minimum) keep each thread's share from spilling (64 rows
# spilled 2 KB per thread at H = 64, compiled for sm_90), and more programs
# spread a batch over more SMs.
SEQUENCE_BLOCK_B = 16
# Warps per launch where 4 (triton's default) is not what the compile gate
# (tests/test_gpu_compile.py) found spill-free under both triton 3.6 and 3.9
# for sm_90. The sequence kernels hold W_hh in registers: the backward (W in
# fp32) needs 16 warps, the forward 8, except with a projection and H <= 32,
# where ptxas spilled 8 bytes of addresses at 8 warps (and capped registers
# at 128) but not at 4. The projection step kernel spilled 48 bytes in fp64
# at 4 warps, none at 8.
PROJECTION_STEP_NUM_WARPS = 8


def _sequence_num_warps(backward, block_u, has_projection):
    if backward:
        return 16
    return 4 if has_projection and block_u <= 32 else 8


def _block(n, largest):
    """A power-of-two tile edge covering n, at least 16 (tl.dot's minimum), at most `largest`."""
    return max(16, min(triton.next_power_of_2(n), largest))


def _tiles(batch, hidden, hidden_out, path):
    """(BLOCK_B, BLOCK_U, BLOCK_K): rows, units (and projection outputs), reduction."""
    if path == "sequence":  # one tile each: units, and h's columns (H_out)
        return SEQUENCE_BLOCK_B, _block(hidden, SEQUENCE_MAX_WIDTH), _block(hidden_out, SEQUENCE_MAX_WIDTH)
    largest = MAX_BLOCK or (64 if is_interpreted() else 32)
    width = _block(max(hidden, hidden_out), largest)
    return _block(batch, largest), width, width


def _numerics(dtype):
    """(accumulator type, tl.dot input precision) for input dtype."""
    if dtype == torch.float64:
        return tl.float64, "ieee"
    return tl.float32, rnn_fp32_precision() if dtype == torch.float32 else "ieee"


def acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def forward(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, save):
    """y [T, B, H_out], h_n, c_n (empty unless lstm), and hs, cs, gates, aux (see forward.py)."""
    checks.check_forward(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths)
    checks.check_length_values(lengths, xg.shape[0])
    persistent_launch.raise_pending_error(xg.device)
    steps, batch, gate_width = xg.shape
    g = CELL_GATES[cell]
    hidden, hidden_out = gate_width // g, w_hh.shape[1]
    dtype, acc = xg.dtype, acc_dtype(xg.dtype)
    acc_tl, precision = _numerics(dtype)
    xg, w_hh = xg.contiguous(), w_hh.contiguous()
    slots = steps + 1 if save else 2
    hs = xg.new_empty((slots, batch, hidden_out))
    hs[0] = h0
    cs = xg.new_empty((slots if cell == "lstm" else 0, batch, hidden), dtype=acc)
    if cell == "lstm":
        cs[0] = c0
    y = xg.new_empty((steps, batch, hidden_out))
    gates = xg.new_empty((steps if save else 0, batch, gate_width), dtype=acc)
    if cell == "gru":
        aux = xg.new_empty((steps if save else 0, batch, hidden), dtype=acc)
    elif w_hr is not None:
        aux = xg.new_empty((slots, batch, hidden), dtype=acc)
        w_hr = w_hr.contiguous()
    else:
        aux = xg.new_empty((0,), dtype=acc)
    dummy = xg.new_empty((1,))
    flags = dict(CELL=CELL_CODES[cell], G=g, HAS_LENGTHS=lengths is not None, HAS_BHN=b_hn is not None,
                 HAS_PROJ=w_hr is not None, SAVE=save, ACC=acc_tl, PRECISION=precision)
    path = choose_path(cell, batch, hidden, hidden_out, dtype, xg.device, steps, save, lengths is not None)
    block_b, block_u, block_k = _tiles(batch, hidden, hidden_out, path)
    tiles = dict(BLOCK_B=block_b, BLOCK_U=block_u, BLOCK_K=block_k)
    pointers = (xg, w_hh, dummy if b_hn is None else b_hn.contiguous(),
                dummy if lengths is None else lengths, hs, cs if cell == "lstm" else dummy, y,
                gates if save else dummy, aux if aux.numel() else dummy)
    rows = triton.cdiv(batch, block_b)
    if path == "persistent" and not persistent_launch.forward(
            (steps, batch, hidden, hidden_out, slots), flags,
            dict(zip(_FORWARD_BUFFERS, pointers), w_hr=dummy if w_hr is None else w_hr),
            is_interpreted(), _forced() == "persistent"):
        path = "step-graph"  # the GPU cannot hold the grid (persistent_launch warned)
    if path == "persistent":
        pass  # it ran in the condition above
    elif path == "sequence":  # steps >= 1: check_forward refuses empty sequences
        fwd.forward_sequence_kernel[(rows,)](
            steps, *pointers[:3], dummy if w_hr is None else w_hr, *pointers[3:],
            batch, hidden, hidden_out, slots, **flags, **tiles,
            num_warps=_sequence_num_warps(False, block_u, w_hr is not None))
    else:
        sizes = (steps, batch, hidden, hidden_out, slots)
        grids = ((rows, triton.cdiv(hidden, block_u)), (rows, triton.cdiv(hidden_out, block_u)))
        loop = functools.partial(_forward_steps, sizes, grids, flags, tiles)
        buffers = dict(zip(_FORWARD_BUFFERS, pointers), w_hr=dummy if w_hr is None else w_hr)
        if path == "step-graph":
            reads = {"xg": None, "w_hh": None, "hs": 0}  # slot 0 of the states: h0 (and c0)
            if cell == "lstm":
                reads["cs"] = 0
            reads.update((name, None) for name, given in (("b_hn", b_hn), ("lengths", lengths), ("w_hr", w_hr))
                         if given is not None)
            writes = ("y", "hs") + ("cs",) * (cell == "lstm") + ("gates",) * save + ("aux",) * (aux.numel() > 0)
            graphs.run_steps(loop, buffers, reads, writes)
        else:
            loop(buffers)
    h_n = hs[steps % slots].clone()
    c_n = cs[steps % slots].to(dtype, copy=True) if cell == "lstm" else xg.new_empty((0,))
    return y, h_n, c_n, hs, cs, gates, aux


# The step kernel's tensor arguments, in order (forward's `pointers`).
_FORWARD_BUFFERS = ("xg", "w_hh", "b_hn", "lengths", "hs", "cs", "y", "gates", "aux")


def _forward_steps(sizes, grids, flags, tiles, buffers):
    """The step path's forward loop: launches only, on `buffers` (graphs.run_steps may capture it)."""
    steps, batch, hidden, hidden_out, slots = sizes
    cell_grid, projection_grid = grids
    b = buffers
    for t in range(steps):
        fwd.forward_step_kernel[cell_grid](
            t, *(b[name] for name in _FORWARD_BUFFERS), batch, hidden, hidden_out, slots, **flags, **tiles)
        if flags["HAS_PROJ"]:
            fwd.forward_projection_step_kernel[projection_grid](
                t, b["w_hr"], b["lengths"], b["hs"], b["y"], b["aux"], batch, hidden, hidden_out, slots,
                HAS_LENGTHS=flags["HAS_LENGTHS"], ACC=flags["ACC"], PRECISION=flags["PRECISION"],
                BLOCK_B=tiles["BLOCK_B"], BLOCK_P=tiles["BLOCK_U"], BLOCK_K=tiles["BLOCK_K"],
                num_warps=PROJECTION_STEP_NUM_WARPS)


def _backward_steps(sizes, grids, cut, flags, tiles, buffers):
    """The step path's backward loop, t = T-1 down to -1 (dh0): launches only, on `buffers`."""
    steps, batch, hidden, hidden_out = sizes
    cell_grid, carry_grid = grids
    b = buffers
    common = dict(HAS_LENGTHS=flags["HAS_LENGTHS"], ACC=flags["ACC"], PRECISION=flags["PRECISION"])
    for t in range(steps - 1, -2, -1):
        if not flags["HAS_PROJ"]:
            bwd.backward_step_kernel[cell_grid](
                t, steps, cut, b["w_hh"], b["lengths"], b["dy"], b["hs"], b["cs"], b["gates"], b["aux"],
                b["d_gates"], b["d_n"], b["carry"], b["d_c"], b["direct"], batch, hidden,
                CELL=flags["CELL"], G=flags["G"], **common, **tiles)
            continue
        bwd.backward_projection_carry_step_kernel[carry_grid](
            t, steps, cut, b["w_hh"], b["lengths"], b["dy"], b["d_gates"], b["d_ht"], b["carry"],
            batch, hidden, hidden_out, **common,
            BLOCK_B=tiles["BLOCK_B"], BLOCK_P=tiles["BLOCK_U"], BLOCK_K=tiles["BLOCK_K"])
        if t >= 0:
            bwd.backward_projection_cell_step_kernel[cell_grid](
                t, cut, b["w_hr"], b["lengths"], b["cs"], b["gates"], b["d_gates"], b["d_ht"], b["d_c"],
                batch, hidden, hidden_out, **common, **tiles)


def backward(cell, tbptt, w_hh, w_hr, lengths, hs, cs, gates, aux, dy, dh_n, dc_n, has_b_hn):
    """dxg, dw_hh, dh0, dc0, db_hn, dw_hr (the last three empty when the cell lacks them)."""
    steps, batch, gate_width = gates.shape
    g = CELL_GATES[cell]
    hidden, hidden_out = gate_width // g, w_hh.shape[1]
    dtype = hs.dtype
    acc = acc_dtype(dtype)
    acc_tl, precision = _numerics(dtype)
    persistent_launch.raise_pending_error(dy.device)
    w_hh, dy = w_hh.contiguous(), dy.contiguous()
    d_gates = torch.empty_like(gates)
    d_n = gates.new_empty((steps, batch, hidden) if cell == "gru" else (1,))
    d_ht = gates.new_empty((steps, batch, hidden_out) if w_hr is not None else (1,))
    carry = gates.new_zeros((2, batch, hidden_out))
    carry[(steps - 1 + 2) % 2] = dh_n
    d_c = gates.new_zeros((2, batch, hidden) if cell == "lstm" else (1,))
    if cell == "lstm":
        d_c[(steps - 1 + 2) % 2] = dc_n
    direct = gates.new_empty((2, batch, hidden) if cell == "gru" else (1,))
    dummy = gates.new_empty((1,))
    cut = tbptt if tbptt else steps + 1  # a period that never divides a step index: no cut
    lengths_arg = dummy if lengths is None else lengths
    flags = dict(HAS_LENGTHS=lengths is not None, ACC=acc_tl, PRECISION=precision)
    path = choose_path(cell, batch, hidden, hidden_out, dtype, gates.device, steps, True, lengths is not None)
    block_b, block_u, block_k = _tiles(batch, hidden, hidden_out, path)
    tiles = dict(BLOCK_B=block_b, BLOCK_U=block_u, BLOCK_K=block_k)
    rows = triton.cdiv(batch, block_b)
    buffers = dict(w_hh=w_hh, w_hr=dummy if w_hr is None else w_hr.contiguous(), lengths=lengths_arg, dy=dy,
                   hs=hs, cs=cs if cell == "lstm" else dummy, gates=gates, aux=aux if aux.numel() else dummy,
                   d_gates=d_gates, d_n=d_n, d_ht=d_ht, carry=carry, d_c=d_c, direct=direct)
    loop_flags = dict(CELL=CELL_CODES[cell], G=g, HAS_PROJ=w_hr is not None, **flags)
    if path == "persistent" and not persistent_launch.backward(
            (steps, batch, hidden, hidden_out), cut, loop_flags, buffers, is_interpreted(),
            _forced() == "persistent"):
        path = "step-graph"  # the GPU cannot hold the grid (persistent_launch warned)
    if path == "persistent":
        pass  # it ran in the condition above
    elif path == "sequence":
        bwd.backward_sequence_kernel[(rows,)](
            steps, cut, w_hh, dummy if w_hr is None else w_hr.contiguous(), lengths_arg, dy, hs,
            cs if cell == "lstm" else dummy, gates, aux if aux.numel() else dummy,
            d_gates, d_n, d_ht, carry, d_c, direct, batch, hidden, hidden_out,
            CELL=CELL_CODES[cell], G=g, HAS_PROJ=w_hr is not None, **flags, **tiles,
            num_warps=_sequence_num_warps(True, block_u, w_hr is not None))
    else:
        grids = ((rows, triton.cdiv(hidden, block_u)), (rows, triton.cdiv(hidden_out, block_u)))
        loop = functools.partial(_backward_steps, (steps, batch, hidden, hidden_out), grids, cut, loop_flags, tiles)
        if path == "step-graph":
            # the carries hold dh_n (dc_n) in one slot and zeros in the other; dG's buffers are all written
            reads = dict.fromkeys(("w_hh", "dy", "hs", "gates", "carry", "d_c"))
            reads.update((name, None) for name, used in (("w_hr", w_hr is not None), ("lengths", lengths is not None),
                                                         ("cs", cell == "lstm"), ("aux", aux.numel() > 0)) if used)
            writes = ("d_gates", "carry") + ("d_c",) * (cell == "lstm") + ("d_n",) * (cell == "gru") + (
                ("d_ht",) * (w_hr is not None))
            graphs.run_steps(loop, buffers, reads, writes)
        else:
            loop(buffers)
    # dW_hh = sum_t dG_t^T h_{t-1}: one matmul over all steps, in ACC
    h_prev = hs[:steps].reshape(steps * batch, hidden_out).to(acc)
    d_w_hh = (d_gates.reshape(steps * batch, gate_width).T @ h_prev).to(w_hh.dtype)
    if cell == "gru":
        d_xg = torch.cat([d_gates[..., :2 * hidden], d_n], dim=2).to(dtype)
        d_b_hn = d_gates[..., 2 * hidden:].sum(dim=(0, 1)).to(dtype) if has_b_hn else dummy.new_empty((0,))
    else:
        d_xg = d_gates.to(dtype)
        d_b_hn = dummy.new_empty((0,))
    if w_hr is not None:  # h_t = W_hr m_t: dW_hr = sum_t dht_t^T m_t
        m = aux[:steps]  # forward kept o * tanh(c_t) in slot t
        d_w_hr = (d_ht.reshape(steps * batch, hidden_out).T @ m.reshape(steps * batch, hidden)).to(w_hr.dtype)
    else:
        d_w_hr = dummy.new_empty((0,)).to(dtype)
    d_h0 = carry[1].to(dtype, copy=True)  # the slot of t = -1
    d_c0 = d_c[1].to(dtype, copy=True) if cell == "lstm" else dummy.new_empty((0,)).to(dtype)
    return d_xg, d_w_hh, d_h0, d_c0, d_b_hn, d_w_hr
