"""Persistent cooperative recurrence kernels: the whole sequence in one launch,
W_hh spread over the programs and held on-chip, one grid barrier per step.

Buffers, their layouts and the cell math are those of forward.py and
backward.py (these kernels call the same tiles), so a persistent forward can
be followed by a step backward and the other way round.

Forward. The grid has P programs; program p owns hidden units
U_p = [p*BLOCK_U, (p+1)*BLOCK_U) with all G gate rows of each, so the
pointwise update stays in the program. Before the time loop it loads its
W_hh slice once, its gates' rows stacked into one [4*BLOCK_U, BLOCK_K >=
H_out] tile (compiled for sm_90 the tile stays in shared memory for the
whole loop). Each step it reads h_{t-1} (all H_out columns, once per block
of BLOCK_B rows), computes all its gates with one tl.dot, units as the M side
and batch as N (a warpgroup MMA on Hopper), applies the cell and
writes its units of h_t / y / c / gates / aux, then waits at the grid
barrier, after which every program's h_t is visible to all. An LSTM with a
projection takes two phases per step: the cell phase writes m = o*tanh(c)
for its units into aux, a barrier, then the projection phase, in which
program p owns output columns [p*BLOCK_U, (p+1)*BLOCK_U) of h = W_hr m (its
W_hr rows resident too, [BLOCK_H >= H, BLOCK_U]), and a second barrier.

Backward transposes the ownership (DESIGN.md's persistent notes, sec. 2):
program p holds the COLUMNS U_p of W_hh (all G*H rows), so after the barrier
it reads all of dG_{t+1} and forms the carry into its own columns of h_t;
without a projection those columns are its units, so the pointwise backward
(dc stays local) follows in the same phase and writes dG_t for them. With a
projection: a carry phase over output columns (dht_t), a barrier, and a cell
phase over units (dm = dht_t @ W_hr[:, U_p], W_hr's columns resident). At a
truncated-BPTT cut the carry is zero: every program skips the product (the
condition is the same for all) and keeps the barrier. dG is rounded to the
weights' dtype for the product (tensor cores for fp16/bf16), as in the step
path. dW_hh and dW_hr stay large matmuls after the loop (launch.backward).

Stages. The loop runs stages [stage_begin, stage_end) of the sequence, one
phase each: forward stage s is step s // PHASES, phase s % PHASES; backward
stage s is step T-1 - s // PHASES (down to -1, the carry into h0, dh0), phase
s % PHASES (0 carry, 1 cell). A stage ends with a grid barrier (none after
the last one of a launch). BARRIER (constexpr) False compiles the barrier out:
under Triton's interpreter, which runs a grid's programs one after another,
the launcher then launches every stage on its own with the full grid of P
programs, so the launch boundary stands in for the barrier and the
partitioning, the h exchange and the tbptt cuts run as on the GPU.

Barrier and failure (grid_sync.py). Every program passes the same barriers:
none sits in a branch that differs between programs (row blocks, masks and
lengths never decide whether a barrier runs). When a wait runs out of time
every program leaves the loop at that barrier, writes NaN into everything it
owns (so no partial result passes for a result) and sets the error word
`p_error[0]` to 1, which the launcher reports (persistent_launch.py).

The time loop is a `while` on purpose: Triton's software pipeliner
transforms `for` loops only, so no load of the next step's h (dG) can be
issued ahead of the barrier that publishes it; only the loop over row
blocks inside a step is pipelined (its loads read this step's data). A
program whose barrier failed leaves the loop and never arrives again, so
the others' counts are not inflated by it.

p_sync: int32 [grid_sync.SYNC_WORDS], zeroed by the launcher; p_error: int32
[1], sticky, reset only by the launcher. `limit`: the barrier's time bound
(grid_sync.grid_barrier). Offsets are int32 (checks.check_index_range).
"""

import triton
import triton.language as tl

from .backward import _projection_carry, backward_carry_tile, backward_cell_tile
from .forward import _load_rows, _store_rows, forward_cell_update
from .grid_sync import grid_barrier


@triton.jit
def _stacked_unit_rows(p_w, u0, H, H_out, G: tl.constexpr, GATE_ROWS: tl.constexpr, BLOCK_U: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    """Forward slice of W_hh [G*H, H_out] as one [GATE_ROWS, BLOCK_K] tile: row g*BLOCK_U + u
    holds W[g*H + u0 + u, :] (GATE_ROWS = 4*BLOCK_U, a GRU's fourth gate zero; BLOCK_U for
    G = 1); zeros where the tile overhangs H or H_out."""
    o_r = tl.arange(0, GATE_ROWS)
    gate = o_r // BLOCK_U
    o_u = u0 + o_r % BLOCK_U
    o_k = tl.arange(0, BLOCK_K)
    mask = ((gate < G) & (o_u < H))[:, None] & (o_k < H_out)[None, :]
    return tl.load(p_w + (gate * H + o_u)[:, None] * H_out + o_k[None, :], mask=mask, other=0.0)


@triton.jit
def _gate_blocks(acc_t, G: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr):
    """[GATE_ROWS, BLOCK_B] (rows as in _stacked_unit_rows) -> four [BLOCK_B, BLOCK_U]
    blocks, gate by gate (G = 1: the one block four times)."""
    acc = tl.trans(acc_t)
    acc0, acc1, acc2, acc3 = acc, acc, acc, acc
    if G > 1:
        quad = tl.reshape(tl.permute(tl.reshape(acc, [BLOCK_B, 4, BLOCK_U]), [0, 2, 1]), [BLOCK_B, BLOCK_U, 2, 2])
        even, odd = tl.split(quad)  # gate 2a + b: b = 0, then b = 1
        acc0, acc2 = tl.split(even)
        acc1, acc3 = tl.split(odd)
    return acc0, acc1, acc2, acc3


@triton.jit
def _unit_columns_of_w(p_w, o0, H, H_out, G: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """Backward slice of W_hh [G*H, H_out]: for each gate g, rows g*H + [0, BLOCK_K) and
    columns o0 + [0, BLOCK_O), as [BLOCK_K, BLOCK_O]; zeros where the tile overhangs."""
    o_k = tl.arange(0, BLOCK_K)
    o_o = o0 + tl.arange(0, BLOCK_O)
    p_block = p_w + o_k[:, None] * H_out + o_o[None, :]
    mask = (o_k < H)[:, None] & (o_o < H_out)[None, :]
    w0 = tl.load(p_block, mask=mask, other=0.0)
    w1, w2, w3 = w0, w0, w0
    if G > 1:
        w1 = tl.load(p_block + H * H_out, mask=mask, other=0.0)
        w2 = tl.load(p_block + 2 * H * H_out, mask=mask, other=0.0)
    if G > 3:
        w3 = tl.load(p_block + 3 * H * H_out, mask=mask, other=0.0)
    return w0, w1, w2, w3


@triton.jit
def _poison_columns(p, rows, row_len, c0, C, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """NaN into columns c0 + [0, BLOCK_C) (below C) of every one of `rows` rows of a
    row-major [rows, row_len] buffer: the part of an output one program owns."""
    o_c = c0 + tl.arange(0, BLOCK_C)
    mask_c = o_c < C
    nan = tl.full([BLOCK_B, BLOCK_C], float("nan"), tl.float32)
    for r0 in range(0, rows, BLOCK_B):
        o_r = r0 + tl.arange(0, BLOCK_B)
        _store_rows(p, nan, o_r, o_c, row_len, o_r < rows, mask_c)


@triton.jit
def _barrier_after(s, stage_begin, stage_end, ok, p_sync, limit,
                   BARRIER: tl.constexpr, USE_CLOCK: tl.constexpr):
    """The barrier that ends stage s (none after a launch's last stage); ok stays False once False."""
    if BARRIER:
        if s + 1 < stage_end:
            ok = ok & grid_barrier(p_sync, s - stage_begin + 1, tl.num_programs(0), limit, USE_CLOCK)
    return ok


@triton.jit
def _forward_projection_rows(t, pid_p, wr, p_lengths, p_hs, p_y, p_aux, B, H, P, S,
                             HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr):
    """h_t = m_t @ W_hr^T for output columns pid_p*BLOCK_P.., every row; wr: W_hr's rows
    of those columns, [BLOCK_H >= H, BLOCK_P] in the input dtype. As
    forward.forward_projection_tile, with W_hr resident instead of streamed."""
    o_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    o_k = tl.arange(0, BLOCK_H)
    mask_p = o_p < P
    mask_k = o_k < H
    p_m = p_aux + (t % S) * B * H
    for r0 in range(0, B, BLOCK_B):
        o_b = r0 + tl.arange(0, BLOCK_B)
        mask_b = o_b < B
        b_m = _load_rows(p_m, o_b, o_k, H, mask_b, mask_k).to(wr.dtype)
        acc = tl.dot(b_m, wr, input_precision=PRECISION, out_dtype=ACC)
        if HAS_LENGTHS:
            active = (t < tl.load(p_lengths + o_b, mask=mask_b, other=0))[:, None]
        else:
            active = tl.full([BLOCK_B, 1], 1, tl.int1)
        h_prev = _load_rows(p_hs + (t % S) * B * P, o_b, o_p, P, mask_b, mask_p)
        h_out = acc.to(p_hs.dtype.element_ty)
        _store_rows(p_hs + ((t + 1) % S) * B * P, tl.where(active, h_out, h_prev), o_b, o_p, P, mask_b, mask_p)
        _store_rows(p_y + t * B * P, tl.where(active, h_out, 0.0), o_b, o_p, P, mask_b, mask_p)


@triton.jit
def _forward_cell_rows(t, pid, p_xg, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux, B, H, H_out, S, w_t,
                       CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_BHN: tl.constexpr,
                       HAS_PROJ: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """Step t's cell for units pid*BLOCK_U.., every block of rows. The product runs
    units-as-M, w_t [GATE_ROWS, BLOCK_K] @ h_{t-1}^T [BLOCK_K, BLOCK_B]: with all
    gates stacked, 64 rows fill a Hopper warpgroup MMA whose operands stay in
    shared memory, and the batch needs padding only to 16."""
    o_k = tl.arange(0, BLOCK_K)
    p_h_prev = p_hs + (t % S) * B * H_out
    for pid_b in range(0, tl.cdiv(B, BLOCK_B)):
        o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        b_h = _load_rows(p_h_prev, o_b, o_k, H_out, o_b < B, o_k < H_out)
        acc_t = tl.dot(w_t, tl.trans(b_h), input_precision=PRECISION, out_dtype=ACC)
        acc0, acc1, acc2, acc3 = _gate_blocks(acc_t, G, BLOCK_B, BLOCK_U)
        forward_cell_update(t, pid_b, pid, acc0, acc1, acc2, acc3,
                            p_xg, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux, B, H, H_out, S,
                            CELL, G, HAS_LENGTHS, HAS_BHN, HAS_PROJ, SAVE, ACC, BLOCK_B, BLOCK_U)


# Stage bounds and sizes that change with every call are not specialized.
@triton.jit(do_not_specialize=["stage_begin", "stage_end", "T", "S", "limit"])
def forward_persistent_kernel(stage_begin, stage_end,
                              p_xg, p_w, p_bhn, p_w_hr, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux,
                              p_sync, p_error, T, B, H, H_out, S, limit,
                              CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                              HAS_BHN: tl.constexpr, HAS_PROJ: tl.constexpr, SAVE: tl.constexpr,
                              ACC: tl.constexpr, PRECISION: tl.constexpr,
                              BARRIER: tl.constexpr, USE_CLOCK: tl.constexpr,
                              BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
                              BLOCK_H: tl.constexpr):
    """Forward stages [stage_begin, stage_end); grid (P,), P >= cdiv(H, BLOCK_U) and
    cdiv(H_out, BLOCK_U) with a projection. Buffers as forward.forward_step_kernel;
    p_w_hr: W_hr [H_out, H] (HAS_PROJ). BLOCK_K >= H_out, BLOCK_H >= H (HAS_PROJ)."""
    pid = tl.program_id(0)
    w_t = _stacked_unit_rows(p_w, pid * BLOCK_U, H, H_out, G, BLOCK_U * (4 if G > 1 else 1), BLOCK_U, BLOCK_K)
    if HAS_PROJ:  # rows o of W_hr, transposed: [BLOCK_H (units), BLOCK_U (outputs)]
        o_o = pid * BLOCK_U + tl.arange(0, BLOCK_U)
        o_h = tl.arange(0, BLOCK_H)
        wr = tl.load(p_w_hr + o_o[None, :] * H + o_h[:, None], mask=(o_h < H)[:, None] & (o_o < H_out)[None, :],
                     other=0.0)
    ok = tl.full([], 1, tl.int1)
    s = stage_begin
    while (s < stage_end) & ok:
        if HAS_PROJ:
            t = s // 2
            if s % 2 == 0:
                _forward_cell_rows(t, pid, p_xg, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux,
                                   B, H, H_out, S, w_t, CELL, G, HAS_LENGTHS, HAS_BHN, HAS_PROJ,
                                   SAVE, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)
            else:
                _forward_projection_rows(t, pid, wr, p_lengths, p_hs, p_y, p_aux, B, H, H_out, S,
                                         HAS_LENGTHS, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_H)
        else:
            _forward_cell_rows(s, pid, p_xg, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux,
                               B, H, H_out, S, w_t, CELL, G, HAS_LENGTHS, HAS_BHN, HAS_PROJ,
                               SAVE, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)
        ok = _barrier_after(s, stage_begin, stage_end, ok, p_sync, limit, BARRIER, USE_CLOCK)
        s += 1
    if BARRIER:
        if ok == 0:  # a barrier timed out: poison what this program owns, raise the flag
            c0 = pid * BLOCK_U
            _poison_columns(p_y, T * B, H_out, c0, H_out, BLOCK_B, BLOCK_U)
            _poison_columns(p_hs, S * B, H_out, c0, H_out, BLOCK_B, BLOCK_U)
            if CELL == 0:
                _poison_columns(p_cs, S * B, H, c0, H, BLOCK_B, BLOCK_U)
            tl.atomic_xchg(p_error, 1)


@triton.jit
def _backward_step_rows(t, pid, T, tbptt, p_w, p_lengths, p_dy, p_hs, p_cs, p_gates, p_aux,
                        p_dG, p_dn, p_carry, p_dc, p_direct, B, H, w0, w1, w2, w3,
                        CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr,
                        PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    """Without a projection: step t's carry into h_t and pointwise backward for units
    pid*BLOCK_U.., every block of rows (as backward.backward_step_kernel, W resident)."""
    for pid_b in range(0, tl.cdiv(B, BLOCK_B)):
        dh = backward_carry_tile(t, pid_b, pid, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_carry, p_direct,
                                 B, H, H, w0, w1, w2, w3, CELL, G, HAS_LENGTHS, ACC, PRECISION, True,
                                 BLOCK_B, BLOCK_U, BLOCK_K)
        if t >= 0:
            backward_cell_tile(t, pid_b, pid, dh, tbptt, p_w, p_lengths, p_hs, p_cs, p_gates, p_aux,
                               p_dG, p_dn, p_dG, p_dc, p_direct, B, H, H,
                               CELL, G, HAS_LENGTHS, False, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)


@triton.jit
def _backward_projection_cell_rows(t, pid, tbptt, wr, p_lengths, p_cs, p_gates, p_dG, p_dht, p_dc, B, H, P,
                                   HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                                   BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_P: tl.constexpr):
    """LSTM+proj, step t's cell phase for units pid*BLOCK_U..: dm = dht_t @ W_hr[:, units]
    (wr: [BLOCK_P >= P, BLOCK_U], resident), then the pointwise backward."""
    o_k = tl.arange(0, BLOCK_P)
    mask_k = o_k < P
    for pid_b in range(0, tl.cdiv(B, BLOCK_B)):
        o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        b_dht = _load_rows(p_dht + t * B * P, o_b, o_k, P, o_b < B, mask_k).to(wr.dtype)
        dm = tl.dot(b_dht, wr, input_precision=PRECISION, out_dtype=ACC)
        backward_cell_tile(t, pid_b, pid, dm, tbptt, p_dht, p_lengths, p_cs, p_cs, p_gates, p_cs,
                           p_dG, p_dG, p_dht, p_dc, p_dc, B, H, P,
                           0, 4, HAS_LENGTHS, False, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_P)


@triton.jit(do_not_specialize=["stage_begin", "stage_end", "T", "tbptt", "limit"])
def backward_persistent_kernel(stage_begin, stage_end, T, tbptt,
                               p_w, p_w_hr, p_lengths, p_dy, p_hs, p_cs, p_gates, p_aux,
                               p_dG, p_dn, p_dht, p_carry, p_dc, p_direct, p_sync, p_error,
                               B, H, H_out, limit,
                               CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                               HAS_PROJ: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                               BARRIER: tl.constexpr, USE_CLOCK: tl.constexpr,
                               BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
                               BLOCK_P: tl.constexpr):
    """Backward stages [stage_begin, stage_end) of T*PHASES + 1; grid (P,) as the forward's.
    Buffers as backward.py's kernels (tbptt: the cut period, T + 1 for none).
    BLOCK_K >= H (all units of a gate), BLOCK_P >= H_out (HAS_PROJ)."""
    pid = tl.program_id(0)
    w0, w1, w2, w3 = _unit_columns_of_w(p_w, pid * BLOCK_U, H, H_out, G, BLOCK_U, BLOCK_K)
    if HAS_PROJ:  # W_hr [H_out, H], columns of this program's units: [BLOCK_P, BLOCK_U]
        o_u = pid * BLOCK_U + tl.arange(0, BLOCK_U)
        o_p = tl.arange(0, BLOCK_P)
        wr = tl.load(p_w_hr + o_p[:, None] * H + o_u[None, :], mask=(o_p < H_out)[:, None] & (o_u < H)[None, :],
                     other=0.0)
    ok = tl.full([], 1, tl.int1)
    s = stage_begin
    while (s < stage_end) & ok:
        if HAS_PROJ:
            t = T - 1 - s // 2
            if s % 2 == 0:  # the carry into h_t over this program's output columns
                for pid_b in range(0, tl.cdiv(B, BLOCK_B)):
                    _projection_carry(t, pid_b, pid, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_dht, p_carry,
                                      B, H, H_out, w0, w1, w2, w3, HAS_LENGTHS, ACC, PRECISION, True,
                                      BLOCK_B, BLOCK_U, BLOCK_K)
            else:
                _backward_projection_cell_rows(t, pid, tbptt, wr, p_lengths, p_cs, p_gates, p_dG, p_dht, p_dc,
                                               B, H, H_out, HAS_LENGTHS, ACC, PRECISION,
                                               BLOCK_B, BLOCK_U, BLOCK_P)
        else:
            _backward_step_rows(T - 1 - s, pid, T, tbptt, p_w, p_lengths, p_dy, p_hs, p_cs, p_gates, p_aux,
                                p_dG, p_dn, p_carry, p_dc, p_direct, B, H, w0, w1, w2, w3,
                                CELL, G, HAS_LENGTHS, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)
        ok = _barrier_after(s, stage_begin, stage_end, ok, p_sync, limit, BARRIER, USE_CLOCK)
        s += 1
    if BARRIER:
        if ok == 0:  # poison what this program owns: its units' dG (and dn, dc), its columns' carries
            u0 = pid * BLOCK_U
            for g in tl.static_range(G):
                _poison_columns(p_dG + g * H, T * B, G * H, u0, H, BLOCK_B, BLOCK_U)
            _poison_columns(p_carry, 2 * B, H_out, u0, H_out, BLOCK_B, BLOCK_U)
            if CELL == 0:
                _poison_columns(p_dc, 2 * B, H, u0, H, BLOCK_B, BLOCK_U)
            if CELL == 1:
                _poison_columns(p_dn, T * B, H, u0, H, BLOCK_B, BLOCK_U)
            if HAS_PROJ:
                _poison_columns(p_dht, T * B, H_out, u0, H_out, BLOCK_B, BLOCK_U)
            tl.atomic_xchg(p_error, 1)


@triton.jit(do_not_specialize=["barriers", "limit"])
def barrier_floor_kernel(barriers, p_sync, p_error, limit, USE_CLOCK: tl.constexpr):
    """`barriers` grid barriers and nothing else: the per-step floor of the kernels
    above (persistent_launch.measure_barrier_floor). p_sync, p_error as above."""
    ok = tl.full([], 1, tl.int1)
    epoch = 1
    while (epoch <= barriers) & ok:
        ok = grid_barrier(p_sync, epoch, tl.num_programs(0), limit, USE_CLOCK)
        epoch += 1
    if ok == 0:
        tl.atomic_xchg(p_error, 1)
