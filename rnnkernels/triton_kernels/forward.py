"""Forward recurrence kernels: one tile of one step, and two ways to run it.

Layouts (all contiguous; T steps, B rows, H units per gate, G gates, H_out =
H or the LSTM projection size P, ACC = float32, or float64 for float64 input):

    xg    [T, B, G*H]     input dtype   gate pre-activations from x (and biases)
    w     [G*H, H_out]    input dtype   W_hh, gate rows in torch's order
    hs    [S, B, H_out]   input dtype   h state, slot t % S holds h_t (hs[0] = h0)
    cs    [S, B, H]       ACC           LSTM cell state, slot t % S holds c_t
    y     [T, B, H_out]   input dtype   output; zero where a row has ended
    gates [T, B, G*H]     ACC           activated gates (i|f|g|o, r|z|n, or h)
    aux   [T, B, H]       ACC           GRU: W_hn h + b_hn; LSTM+proj: o*tanh(c)

S = T + 1 when backward needs every state, else 2 (a ring). An ended row
(t >= lengths[b]) carries h and c unchanged and writes zeros to y.

A step tile computes, for BLOCK_B rows and BLOCK_U units, all G gate rows of
those units, so the pointwise update never leaves the program. The step
kernel runs one tile per program and is launched once per step; the sequence
kernel (small layers only: all of W_hh in one register tile) gives each
program a block of rows and loops over all steps itself, with a CTA barrier
between steps, so one launch runs the whole sequence and nothing waits on
another program.

Offsets are int32: the launcher refuses sizes whose buffers reach 2**31
elements (checks.check_index_range).
"""

import triton
import triton.language as tl

from .activations import sigmoid, tanh

LSTM, GRU, RNN_TANH, RNN_RELU = 0, 1, 2, 3


@triton.jit
def _load_rows(p, o_b, o_c, row_len, mask_b, mask_c):
    """A [BLOCK_B, BLOCK_C] block of a row-major [*, row_len] matrix."""
    return tl.load(p + o_b[:, None] * row_len + o_c[None, :], mask=mask_b[:, None] & mask_c[None, :],
                   other=0.0, cache_modifier=".cg")


@triton.jit
def _store_rows(p, value, o_b, o_c, row_len, mask_b, mask_c):
    tl.store(p + o_b[:, None] * row_len + o_c[None, :], value.to(p.dtype.element_ty),
             mask=mask_b[:, None] & mask_c[None, :])


@triton.jit
def _gate_matmul(p_h, p_w, o_b, mask_b, o_u, mask_u, H, H_out,
                 G: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """h [B, H_out] @ W_hh^T for the rows g*H + o_u of each gate g (up to 4)."""
    acc0 = tl.zeros([BLOCK_B, BLOCK_U], ACC)
    acc1 = tl.zeros([BLOCK_B, BLOCK_U], ACC)
    acc2 = tl.zeros([BLOCK_B, BLOCK_U], ACC)
    acc3 = tl.zeros([BLOCK_B, BLOCK_U], ACC)
    for k0 in range(0, H_out, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = o_k < H_out
        b_h = _load_rows(p_h, o_b, o_k, H_out, mask_b, mask_k)
        # W block transposed on load: [BLOCK_K, BLOCK_U] with element (k, u) = W[g*H + u, k]
        p_wt = p_w + o_u[None, :] * H_out + o_k[:, None]
        mask_w = mask_k[:, None] & mask_u[None, :]
        acc0 += tl.dot(b_h, tl.load(p_wt, mask=mask_w, other=0.0), input_precision=PRECISION, out_dtype=ACC)
        if G > 1:
            acc1 += tl.dot(b_h, tl.load(p_wt + H * H_out, mask=mask_w, other=0.0),
                           input_precision=PRECISION, out_dtype=ACC)
            acc2 += tl.dot(b_h, tl.load(p_wt + 2 * H * H_out, mask=mask_w, other=0.0),
                           input_precision=PRECISION, out_dtype=ACC)
        if G > 3:
            acc3 += tl.dot(b_h, tl.load(p_wt + 3 * H * H_out, mask=mask_w, other=0.0),
                           input_precision=PRECISION, out_dtype=ACC)
    return acc0, acc1, acc2, acc3


@triton.jit
def _resident_weights(p_w, H, H_out, G: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """Each gate's whole W_hh block, transposed to [BLOCK_K, BLOCK_U] (zeros where
    the tile overhangs). One return of one type: the code generator rejects a
    function that returns tensors on one path and placeholders on another."""
    o_u = tl.arange(0, BLOCK_U)
    o_k = tl.arange(0, BLOCK_K)
    p_wt = p_w + o_u[None, :] * H_out + o_k[:, None]
    mask = (o_k < H_out)[:, None] & (o_u < H)[None, :]
    w0 = tl.load(p_wt, mask=mask, other=0.0)
    w1, w2, w3 = w0, w0, w0
    if G > 1:
        w1 = tl.load(p_wt + H * H_out, mask=mask, other=0.0)
        w2 = tl.load(p_wt + 2 * H * H_out, mask=mask, other=0.0)
    if G > 3:
        w3 = tl.load(p_wt + 3 * H * H_out, mask=mask, other=0.0)
    return w0, w1, w2, w3


@triton.jit
def forward_cell_tile(t, pid_b, pid_u,
                      p_xg, p_w, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux,
                      B, H, H_out, S, w0, w1, w2, w3,
                      CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_BHN: tl.constexpr,
                      HAS_PROJ: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                      RESIDENT: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """Step t for rows pid_b*BLOCK_B.. and units pid_u*BLOCK_U.. (see module docstring).

    RESIDENT: one tile spans all units and all of h, and w0..w3 hold each
    gate's W_hh block [BLOCK_K, BLOCK_U], loaded once by the caller; else
    W_hh is streamed through K tiles (w0..w3 unused)."""
    o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_u = pid_u * BLOCK_U + tl.arange(0, BLOCK_U)
    mask_b = o_b < B
    mask_u = o_u < H
    p_h_prev = p_hs + (t % S) * B * H_out
    if RESIDENT:
        o_k = tl.arange(0, BLOCK_K)
        b_h = _load_rows(p_h_prev, o_b, o_k, H_out, mask_b, o_k < H_out)
        acc0 = tl.dot(b_h, w0, input_precision=PRECISION, out_dtype=ACC)
        acc1, acc2, acc3 = acc0, acc0, acc0
        if G > 1:
            acc1 = tl.dot(b_h, w1, input_precision=PRECISION, out_dtype=ACC)
            acc2 = tl.dot(b_h, w2, input_precision=PRECISION, out_dtype=ACC)
        if G > 3:
            acc3 = tl.dot(b_h, w3, input_precision=PRECISION, out_dtype=ACC)
    else:
        acc0, acc1, acc2, acc3 = _gate_matmul(p_h_prev, p_w, o_b, mask_b, o_u, mask_u, H, H_out,
                                              G, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)
    forward_cell_update(t, pid_b, pid_u, acc0, acc1, acc2, acc3,
                        p_xg, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux, B, H, H_out, S,
                        CELL, G, HAS_LENGTHS, HAS_BHN, HAS_PROJ, SAVE, ACC, BLOCK_B, BLOCK_U)


@triton.jit
def forward_cell_update(t, pid_b, pid_u, acc0, acc1, acc2, acc3,
                        p_xg, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux, B, H, H_out, S,
                        CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_BHN: tl.constexpr,
                        HAS_PROJ: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr):
    """The pointwise half of step t's tile: acc0..acc3 [BLOCK_B, BLOCK_U] hold h_{t-1} @ W_hh^T
    for each gate's rows of units pid_u*BLOCK_U.. (in ACC); applies the cell and stores."""
    o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_u = pid_u * BLOCK_U + tl.arange(0, BLOCK_U)
    mask_b = o_b < B
    mask_u = o_u < H
    # slots: h_{t-1} / c_{t-1} live in slot t % S, this step writes slot (t + 1) % S
    p_h_prev = p_hs + (t % S) * B * H_out
    p_h_next = p_hs + ((t + 1) % S) * B * H_out
    if HAS_LENGTHS:
        active = (t < tl.load(p_lengths + o_b, mask=mask_b, other=0))[:, None]
    else:
        active = tl.full([BLOCK_B, 1], 1, tl.int1)
    p_xg_t = p_xg + t * B * G * H
    row_gates = G * H
    if CELL == 0:  # LSTM
        gi = sigmoid(_load_rows(p_xg_t, o_b, o_u, row_gates, mask_b, mask_u).to(ACC) + acc0)
        gf = sigmoid(_load_rows(p_xg_t, o_b, H + o_u, row_gates, mask_b, mask_u).to(ACC) + acc1)
        gg = tanh(_load_rows(p_xg_t, o_b, 2 * H + o_u, row_gates, mask_b, mask_u).to(ACC) + acc2)
        go = sigmoid(_load_rows(p_xg_t, o_b, 3 * H + o_u, row_gates, mask_b, mask_u).to(ACC) + acc3)
        c_prev = _load_rows(p_cs + (t % S) * B * H, o_b, o_u, H, mask_b, mask_u)
        c = tl.where(active, gf * c_prev + gi * gg, c_prev)
        _store_rows(p_cs + ((t + 1) % S) * B * H, c, o_b, o_u, H, mask_b, mask_u)
        h_cell = go * tanh(c)
        if SAVE:
            p_gates_t = p_gates + t * B * row_gates
            _store_rows(p_gates_t, gi, o_b, o_u, row_gates, mask_b, mask_u)
            _store_rows(p_gates_t, gf, o_b, H + o_u, row_gates, mask_b, mask_u)
            _store_rows(p_gates_t, gg, o_b, 2 * H + o_u, row_gates, mask_b, mask_u)
            _store_rows(p_gates_t, go, o_b, 3 * H + o_u, row_gates, mask_b, mask_u)
    elif CELL == 1:  # GRU: n = tanh(xg_n + r * (W_hn h + b_hn)), h' = (1 - z) n + z h
        gr = sigmoid(_load_rows(p_xg_t, o_b, o_u, row_gates, mask_b, mask_u).to(ACC) + acc0)
        gz = sigmoid(_load_rows(p_xg_t, o_b, H + o_u, row_gates, mask_b, mask_u).to(ACC) + acc1)
        hn = acc2
        if HAS_BHN:
            hn += tl.load(p_bhn + o_u, mask=mask_u, other=0.0).to(ACC)[None, :]
        gn = tanh(_load_rows(p_xg_t, o_b, 2 * H + o_u, row_gates, mask_b, mask_u).to(ACC) + gr * hn)
        h_prev_u = _load_rows(p_h_prev, o_b, o_u, H_out, mask_b, mask_u).to(ACC)
        h_cell = (1.0 - gz) * gn + gz * h_prev_u
        if SAVE:
            p_gates_t = p_gates + t * B * row_gates
            _store_rows(p_gates_t, gr, o_b, o_u, row_gates, mask_b, mask_u)
            _store_rows(p_gates_t, gz, o_b, H + o_u, row_gates, mask_b, mask_u)
            _store_rows(p_gates_t, gn, o_b, 2 * H + o_u, row_gates, mask_b, mask_u)
            _store_rows(p_aux + t * B * H, hn, o_b, o_u, H, mask_b, mask_u)
    else:  # Elman RNN
        pre = _load_rows(p_xg_t, o_b, o_u, row_gates, mask_b, mask_u).to(ACC) + acc0
        if CELL == 2:
            h_cell = tanh(pre)
        else:
            h_cell = tl.maximum(pre, 0.0)
        if SAVE:
            _store_rows(p_gates + t * B * row_gates, h_cell, o_b, o_u, row_gates, mask_b, mask_u)
    if HAS_PROJ:  # the projection tile publishes h once every unit of the row is done
        _store_rows(p_aux + (t % S) * B * H, h_cell, o_b, o_u, H, mask_b, mask_u)
    else:
        h_prev_u = _load_rows(p_h_prev, o_b, o_u, H_out, mask_b, mask_u)
        h_out = h_cell.to(p_hs.dtype.element_ty)  # rounded as stored: fed back in the input dtype
        _store_rows(p_h_next, tl.where(active, h_out, h_prev_u), o_b, o_u, H_out, mask_b, mask_u)
        _store_rows(p_y + t * B * H_out, tl.where(active, h_out, 0.0), o_b, o_u, H_out, mask_b, mask_u)


@triton.jit
def forward_projection_tile(t, pid_b, pid_p, p_w_hr, p_lengths, p_hs, p_y, p_aux,
                            B, H, P, S,
                            HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """LSTM with proj_size: h_t = (o * tanh(c_t)) @ W_hr^T for rows pid_b.., outputs pid_p..

    p_w_hr: W_hr [P, H]; p_aux: o * tanh(c) [S, B, H] in ACC, slot t % S."""
    o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_b = o_b < B
    mask_p = o_p < P
    p_m = p_aux + (t % S) * B * H
    acc = tl.zeros([BLOCK_B, BLOCK_P], ACC)
    for k0 in range(0, H, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = o_k < H
        b_m = _load_rows(p_m, o_b, o_k, H, mask_b, mask_k)
        b_wt = tl.load(p_w_hr + o_p[None, :] * H + o_k[:, None], mask=mask_k[:, None] & mask_p[None, :],
                       other=0.0).to(ACC)
        acc += tl.dot(b_m, b_wt, input_precision=PRECISION, out_dtype=ACC)
    if HAS_LENGTHS:
        active = (t < tl.load(p_lengths + o_b, mask=mask_b, other=0))[:, None]
    else:
        active = tl.full([BLOCK_B, 1], 1, tl.int1)
    h_prev = _load_rows(p_hs + (t % S) * B * P, o_b, o_p, P, mask_b, mask_p)
    h_out = acc.to(p_hs.dtype.element_ty)
    _store_rows(p_hs + ((t + 1) % S) * B * P, tl.where(active, h_out, h_prev), o_b, o_p, P, mask_b, mask_p)
    _store_rows(p_y + t * B * P, tl.where(active, h_out, 0.0), o_b, o_p, P, mask_b, mask_p)


# t is not specialized: 0 (divisible by 16), 1 (a constant) and the rest would
# compile three variants of every configuration.
@triton.jit(do_not_specialize=["t"])
def forward_step_kernel(t, p_xg, p_w, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux,
                        B, H, H_out, S,
                        CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_BHN: tl.constexpr,
                        HAS_PROJ: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """One step; grid (row blocks, unit blocks)."""
    forward_cell_tile(t, tl.program_id(0), tl.program_id(1),
                      p_xg, p_w, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux, B, H, H_out, S, 0, 0, 0, 0,
                      CELL, G, HAS_LENGTHS, HAS_BHN, HAS_PROJ, SAVE, ACC, PRECISION, False,
                      BLOCK_B, BLOCK_U, BLOCK_K)


@triton.jit(do_not_specialize=["t"])
def forward_projection_step_kernel(t, p_w_hr, p_lengths, p_hs, p_y, p_aux, B, H, P, S,
                                   HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                                   BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """One step's projection; grid (row blocks, projection blocks), after forward_step_kernel."""
    forward_projection_tile(t, tl.program_id(0), tl.program_id(1), p_w_hr, p_lengths, p_hs, p_y, p_aux,
                            B, H, P, S, HAS_LENGTHS, ACC, PRECISION, BLOCK_B, BLOCK_P, BLOCK_K)


@triton.jit(do_not_specialize=["T", "S"])
def forward_sequence_kernel(T, p_xg, p_w, p_bhn, p_w_hr, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux,
                            B, H, H_out, S,
                            CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_BHN: tl.constexpr,
                            HAS_PROJ: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """All T steps for one block of rows; grid (row blocks,). One tile covers
    W_hh (BLOCK_U >= H units, BLOCK_K >= H_out columns; the launcher takes
    this path only then): the weights are loaded once and stay in registers for the whole
    sequence. The program owns its rows' whole recurrence, so a CTA barrier
    orders the steps. p_w_hr: W_hr [P, H] (HAS_PROJ), streamed per step."""
    pid_b = tl.program_id(0)
    w0, w1, w2, w3 = _resident_weights(p_w, H, H_out, G, BLOCK_U, BLOCK_K)
    for t in range(T):
        forward_cell_tile(t, pid_b, 0,
                          p_xg, p_w, p_bhn, p_lengths, p_hs, p_cs, p_y, p_gates, p_aux, B, H, H_out, S,
                          w0, w1, w2, w3,
                          CELL, G, HAS_LENGTHS, HAS_BHN, HAS_PROJ, SAVE, ACC, PRECISION, True,
                          BLOCK_B, BLOCK_U, BLOCK_K)
        tl.debug_barrier()
        if HAS_PROJ:
            # outputs tiled by BLOCK_K (>= H_out), the reduction over units in one BLOCK_U (>= H)
            forward_projection_tile(t, pid_b, 0, p_w_hr, p_lengths, p_hs, p_y, p_aux, B, H, H_out, S,
                                    HAS_LENGTHS, ACC, PRECISION, BLOCK_B, BLOCK_K, BLOCK_U)
            tl.debug_barrier()
