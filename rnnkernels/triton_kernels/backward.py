"""Backward recurrence kernels with truncated BPTT cut in-kernel.

Layouts as in forward.py (saved: hs [T+1, B, H_out], cs [T+1, B, H], gates
[T, B, G*H], aux: GRU W_hn h + b_hn [T, B, H], LSTM+proj o*tanh(c) [T+1, B, H]),
plus, all in ACC:

    dG     [T, B, G*H]   out  gradient of the recurrent gate pre-activations:
                              LSTM/RNN = dxg; GRU = (dr | dz | d(W_hn h + b_hn))
    dn     [T, B, H]     out  GRU only: gradient of xg_n
    dht    [T, B, P]     out  LSTM+proj only: total gradient of h_t (0 where ended)
    carry  [2, B, H_out] in/out  gradient reaching h_t from steps after t, slot (t+2)%2;
                              starts as dh_n in slot of T-1, ends as dh0 in the slot of -1
    dc     [2, B, H]     in/out  LSTM: the same for c_t; ends as dc0
    direct [2, B, H]     GRU: z * dh_t, the part of d h_{t-1} that skips W_hh

The matmuls against W_hh and W_hr run in the weights' dtype, the gradient
rounded to it (tensor cores for fp16/bf16, as torch.nn's own backward), and
accumulate in ACC; dG, dc and the carries stay in ACC.

Two slots per carried buffer: a step reads one and writes the other, so no
element is read and written within one step by different threads.

Step t (from T-1 down to 0) first forms the carry into h_t from step t+1,
carry_t = where(t+1 active, dG_{t+1} @ W_hh (+ direct), carry_{t+1}), which is
zero when t+1 is a multiple of tbptt (the cut); then the pointwise backward of
the cell at t. A last carry pass at t = -1 yields dh0. Without a projection
the carry columns are the cell's units, so one tile does both halves.
"""

import triton
import triton.language as tl

from .activations import tanh
from .forward import _load_rows, _store_rows


@triton.jit
def _slot(t):
    return (t + 2) % 2  # t >= -1


@triton.jit
def _active(t, p_lengths, o_b, mask_b, HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr):
    if HAS_LENGTHS:
        return (t < tl.load(p_lengths + o_b, mask=mask_b, other=0))[:, None]
    return tl.full([BLOCK_B, 1], 1, tl.int1)


@triton.jit
def _resident_weights_by_column(p_w, H, H_out, G: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """Each gate's whole W_hh block as [BLOCK_K (units), BLOCK_O (h columns)] in
    the input dtype (zeros where the tile overhangs); one return of one type
    (see forward.py)."""
    o_k = tl.arange(0, BLOCK_K)
    o_o = tl.arange(0, BLOCK_O)
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
def _carry_product(s, p_w, p_lengths, p_dG, p_carry, p_direct, o_b, mask_b, o_o, mask_o, B, H, H_out,
                   w0, w1, w2, w3, CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                   ACC: tl.constexpr, PRECISION: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr,
                   BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """The carry into h_{s-1} where step s is not cut: dG_s @ W_hh (+ GRU's direct
    part) where the row is active at s, else the carry into h_s unchanged."""
    rec = tl.zeros([BLOCK_B, BLOCK_O], ACC)
    p_dG_s = p_dG + s * B * G * H
    if RESIDENT:
        o_k = tl.arange(0, BLOCK_K)
        mask_k = o_k < H
        rec += tl.dot(_load_rows(p_dG_s, o_b, o_k, G * H, mask_b, mask_k).to(w0.dtype), w0,
                      input_precision=PRECISION, out_dtype=ACC)
        if G > 1:
            rec += tl.dot(_load_rows(p_dG_s, o_b, H + o_k, G * H, mask_b, mask_k).to(w0.dtype), w1,
                          input_precision=PRECISION, out_dtype=ACC)
            rec += tl.dot(_load_rows(p_dG_s, o_b, 2 * H + o_k, G * H, mask_b, mask_k).to(w0.dtype), w2,
                          input_precision=PRECISION, out_dtype=ACC)
        if G > 3:
            rec += tl.dot(_load_rows(p_dG_s, o_b, 3 * H + o_k, G * H, mask_b, mask_k).to(w0.dtype), w3,
                          input_precision=PRECISION, out_dtype=ACC)
    else:  # W_hh streamed through K tiles
        for k0 in range(0, G * H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = o_k < G * H
            b_dG = _load_rows(p_dG_s, o_b, o_k, G * H, mask_b, mask_k).to(p_w.dtype.element_ty)
            b_w = tl.load(p_w + o_k[:, None] * H_out + o_o[None, :], mask=mask_k[:, None] & mask_o[None, :],
                          other=0.0)
            rec += tl.dot(b_dG, b_w, input_precision=PRECISION, out_dtype=ACC)
    if CELL == 1:
        rec += _load_rows(p_direct + _slot(s) * B * H, o_b, o_o, H, mask_b, mask_o)
    previous = _load_rows(p_carry + _slot(s) * B * H_out, o_b, o_o, H_out, mask_b, mask_o)
    return tl.where(_active(s, p_lengths, o_b, mask_b, HAS_LENGTHS, BLOCK_B), rec, previous)


@triton.jit
def backward_carry_tile(t, pid_b, pid_o, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_carry, p_direct,
                        B, H, H_out, w0, w1, w2, w3,
                        CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr,
                        PRECISION: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr,
                        BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """carry_t for rows pid_b.. and h columns pid_o..; returns the total gradient
    of h_t there (carry plus dy_t where the row is active; t >= 0).

    RESIDENT: w0..w3 hold each gate's whole W_hh block [BLOCK_K >= H, BLOCK_O
    >= H_out] in ACC, loaded once by the caller; else W_hh is streamed."""
    o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_b = o_b < B
    mask_o = o_o < H_out
    if t < T - 1:
        s = t + 1
        if (s > 0) & (s % tbptt == 0):
            # truncated BPTT: step s passes nothing back to h_{s-1}. The same for every
            # program of a step, so the product is skipped (a persistent grid keeps its barrier)
            carry = tl.zeros([BLOCK_B, BLOCK_O], ACC)
        else:
            carry = _carry_product(s, p_w, p_lengths, p_dG, p_carry, p_direct, o_b, mask_b, o_o, mask_o,
                                   B, H, H_out, w0, w1, w2, w3, CELL, G, HAS_LENGTHS, ACC, PRECISION, RESIDENT,
                                   BLOCK_B, BLOCK_O, BLOCK_K)
        _store_rows(p_carry + _slot(t) * B * H_out, carry, o_b, o_o, H_out, mask_b, mask_o)
    else:  # t == T - 1: the carry is dh_n, put in place by the launcher
        carry = _load_rows(p_carry + _slot(t) * B * H_out, o_b, o_o, H_out, mask_b, mask_o)
    # at t = -1 (the dh0 pass) the return value is unused: any valid row of dy will do
    dy = _load_rows(p_dy + tl.maximum(t, 0) * B * H_out, o_b, o_o, H_out, mask_b, mask_o).to(ACC)
    return carry + tl.where(_active(t, p_lengths, o_b, mask_b, HAS_LENGTHS, BLOCK_B), dy, 0.0)


@triton.jit
def backward_cell_tile(t, pid_b, pid_u, dh, tbptt, p_w_hr, p_lengths, p_hs, p_cs, p_gates, p_aux,
                       p_dG, p_dn, p_dht, p_dc, p_direct,
                       B, H, H_out,
                       CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_PROJ: tl.constexpr,
                       ACC: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """Pointwise backward of step t >= 0 for rows pid_b.. and units pid_u..; dh is
    the total gradient of the cell output there (ignored with a projection,
    where it is dht_t @ W_hr, computed here)."""
    o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_u = pid_u * BLOCK_U + tl.arange(0, BLOCK_U)
    mask_b = o_b < B
    mask_u = o_u < H
    active = _active(t, p_lengths, o_b, mask_b, HAS_LENGTHS, BLOCK_B)
    cut = (t > 0) & (t % tbptt == 0)
    row_gates = G * H
    p_gates_t = p_gates + t * B * row_gates
    p_dG_t = p_dG + t * B * row_gates
    if CELL == 0:  # LSTM
        if HAS_PROJ:  # dm = dht_t @ W_hr, W_hr [P, H]
            dh = tl.zeros([BLOCK_B, BLOCK_U], ACC)
            for k0 in range(0, H_out, BLOCK_K):
                o_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = o_k < H_out
                b_dht = _load_rows(p_dht + t * B * H_out, o_b, o_k, H_out, mask_b, mask_k).to(p_w_hr.dtype.element_ty)
                b_w = tl.load(p_w_hr + o_k[:, None] * H + o_u[None, :], mask=mask_k[:, None] & mask_u[None, :],
                              other=0.0)
                dh += tl.dot(b_dht, b_w, input_precision=PRECISION, out_dtype=ACC)
        gi = _load_rows(p_gates_t, o_b, o_u, row_gates, mask_b, mask_u)
        gf = _load_rows(p_gates_t, o_b, H + o_u, row_gates, mask_b, mask_u)
        gg = _load_rows(p_gates_t, o_b, 2 * H + o_u, row_gates, mask_b, mask_u)
        go = _load_rows(p_gates_t, o_b, 3 * H + o_u, row_gates, mask_b, mask_u)
        c = _load_rows(p_cs + (t + 1) * B * H, o_b, o_u, H, mask_b, mask_u)
        c_prev = _load_rows(p_cs + t * B * H, o_b, o_u, H, mask_b, mask_u)
        dc_in = _load_rows(p_dc + _slot(t) * B * H, o_b, o_u, H, mask_b, mask_u)
        tc = tanh(c)
        dcc = dc_in + dh * go * (1.0 - tc * tc)
        _store_rows(p_dG_t, tl.where(active, dcc * gg * gi * (1.0 - gi), 0.0), o_b, o_u, row_gates, mask_b, mask_u)
        _store_rows(p_dG_t, tl.where(active, dcc * c_prev * gf * (1.0 - gf), 0.0), o_b, H + o_u, row_gates,
                    mask_b, mask_u)
        _store_rows(p_dG_t, tl.where(active, dcc * gi * (1.0 - gg * gg), 0.0), o_b, 2 * H + o_u, row_gates,
                    mask_b, mask_u)
        _store_rows(p_dG_t, tl.where(active, dh * tc * go * (1.0 - go), 0.0), o_b, 3 * H + o_u, row_gates,
                    mask_b, mask_u)
        dc_out = tl.where(active, dcc * gf, dc_in)
        dc_out = tl.where(cut, 0.0, dc_out)
        _store_rows(p_dc + _slot(t - 1) * B * H, dc_out, o_b, o_u, H, mask_b, mask_u)
    elif CELL == 1:  # GRU
        gr = _load_rows(p_gates_t, o_b, o_u, row_gates, mask_b, mask_u)
        gz = _load_rows(p_gates_t, o_b, H + o_u, row_gates, mask_b, mask_u)
        gn = _load_rows(p_gates_t, o_b, 2 * H + o_u, row_gates, mask_b, mask_u)
        hn = _load_rows(p_aux + t * B * H, o_b, o_u, H, mask_b, mask_u)
        h_prev = _load_rows(p_hs + t * B * H_out, o_b, o_u, H_out, mask_b, mask_u).to(ACC)
        d_n = dh * (1.0 - gz) * (1.0 - gn * gn)
        _store_rows(p_dG_t, tl.where(active, d_n * hn * gr * (1.0 - gr), 0.0), o_b, o_u, row_gates,
                    mask_b, mask_u)
        _store_rows(p_dG_t, tl.where(active, dh * (h_prev - gn) * gz * (1.0 - gz), 0.0), o_b, H + o_u,
                    row_gates, mask_b, mask_u)
        _store_rows(p_dG_t, tl.where(active, d_n * gr, 0.0), o_b, 2 * H + o_u, row_gates, mask_b, mask_u)
        _store_rows(p_dn + t * B * H, tl.where(active, d_n, 0.0), o_b, o_u, H, mask_b, mask_u)
        _store_rows(p_direct + _slot(t) * B * H, tl.where(active, dh * gz, 0.0), o_b, o_u, H, mask_b, mask_u)
    else:  # Elman RNN: gates holds the activation h itself
        a = _load_rows(p_gates_t, o_b, o_u, row_gates, mask_b, mask_u)
        if CELL == 2:
            d_pre = dh * (1.0 - a * a)
        else:
            d_pre = tl.where(a > 0, dh, 0.0)
        _store_rows(p_dG_t, tl.where(active, d_pre, 0.0), o_b, o_u, row_gates, mask_b, mask_u)


# Step and length arguments are not specialized (see forward_step_kernel).
@triton.jit(do_not_specialize=["t", "T", "tbptt"])
def backward_step_kernel(t, T, tbptt, p_w, p_lengths, p_dy, p_hs, p_cs, p_gates, p_aux,
                         p_dG, p_dn, p_carry, p_dc, p_direct, B, H,
                         CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr,
                         PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
                         BLOCK_K: tl.constexpr):
    """Step t without a projection, carry and pointwise fused; grid (row blocks,
    unit blocks). t = -1 only forms the last carry, dh0."""
    pid_b, pid_u = tl.program_id(0), tl.program_id(1)
    dh = backward_carry_tile(t, pid_b, pid_u, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_carry, p_direct, B, H, H,
                             0, 0, 0, 0, CELL, G, HAS_LENGTHS, ACC, PRECISION, False, BLOCK_B, BLOCK_U, BLOCK_K)
    if t >= 0:
        backward_cell_tile(t, pid_b, pid_u, dh, tbptt, p_w, p_lengths, p_hs, p_cs, p_gates, p_aux,
                           p_dG, p_dn, p_dG, p_dc, p_direct, B, H, H,
                           CELL, G, HAS_LENGTHS, False, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)


@triton.jit(do_not_specialize=["t", "T", "tbptt"])
def backward_projection_carry_step_kernel(t, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_dht, p_carry, B, H, P,
                                          HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                                          BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """LSTM+proj, step t: the carry into h_t [B, P]; stores dht_t (zero where the
    row has ended, so dW_hr gets nothing from it). Grid (row blocks, P blocks)."""
    pid_b, pid_p = tl.program_id(0), tl.program_id(1)
    _projection_carry(t, pid_b, pid_p, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_dht, p_carry, B, H, P, 0, 0, 0, 0,
                      HAS_LENGTHS, ACC, PRECISION, False, BLOCK_B, BLOCK_P, BLOCK_K)


@triton.jit
def _projection_carry(t, pid_b, pid_p, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_dht, p_carry, B, H, P,
                      w0, w1, w2, w3, HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                      RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    dh = backward_carry_tile(t, pid_b, pid_p, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_carry, p_carry, B, H, P,
                             w0, w1, w2, w3, 0, 4, HAS_LENGTHS, ACC, PRECISION, RESIDENT, BLOCK_B, BLOCK_P, BLOCK_K)
    if t >= 0:
        o_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        o_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_b = o_b < B
        active = _active(t, p_lengths, o_b, mask_b, HAS_LENGTHS, BLOCK_B)
        _store_rows(p_dht + t * B * P, tl.where(active, dh, 0.0), o_b, o_p, P, mask_b, o_p < P)


@triton.jit(do_not_specialize=["t", "tbptt"])
def backward_projection_cell_step_kernel(t, tbptt, p_w_hr, p_lengths, p_cs, p_gates, p_dG, p_dht, p_dc, B, H, P,
                                         HAS_LENGTHS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                                         BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """LSTM+proj, step t: the cell's pointwise backward; grid (row blocks, unit blocks)."""
    pid_b, pid_u = tl.program_id(0), tl.program_id(1)
    backward_cell_tile(t, pid_b, pid_u, 0.0, tbptt, p_w_hr, p_lengths, p_cs, p_cs, p_gates, p_cs,
                       p_dG, p_dG, p_dht, p_dc, p_dc, B, H, P,
                       0, 4, HAS_LENGTHS, True, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)


@triton.jit(do_not_specialize=["T", "tbptt"])
def backward_sequence_kernel(T, tbptt, p_w, p_w_hr, p_lengths, p_dy, p_hs, p_cs, p_gates, p_aux,
                             p_dG, p_dn, p_dht, p_carry, p_dc, p_direct, B, H, H_out,
                             CELL: tl.constexpr, G: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                             HAS_PROJ: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    """Steps T-1 .. 0 and the final carry for one block of rows; grid (row blocks,).
    One tile covers W_hh (as in forward_sequence_kernel: BLOCK_U >= H units,
    BLOCK_K >= H_out columns): the weights stay in registers throughout."""
    pid_b = tl.program_id(0)
    w0, w1, w2, w3 = _resident_weights_by_column(p_w, H, H_out, G, BLOCK_K, BLOCK_U)
    for step in range(0, T + 1):
        t = T - 1 - step
        if HAS_PROJ:  # the carry's columns are the H_out outputs, its reduction the H units
            _projection_carry(t, pid_b, 0, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_dht, p_carry,
                              B, H, H_out, w0, w1, w2, w3, HAS_LENGTHS, ACC, PRECISION, True,
                              BLOCK_B, BLOCK_K, BLOCK_U)
            tl.debug_barrier()
            if t >= 0:
                backward_cell_tile(t, pid_b, 0, 0.0, tbptt, p_w_hr, p_lengths, p_hs, p_cs, p_gates,
                                   p_aux, p_dG, p_dn, p_dht, p_dc, p_direct, B, H, H_out,
                                   CELL, G, HAS_LENGTHS, True, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)
        else:
            dh = backward_carry_tile(t, pid_b, 0, T, tbptt, p_w, p_lengths, p_dy, p_dG, p_carry,
                                     p_direct, B, H, H, w0, w1, w2, w3, CELL, G, HAS_LENGTHS, ACC, PRECISION,
                                     True, BLOCK_B, BLOCK_K, BLOCK_U)
            if t >= 0:
                backward_cell_tile(t, pid_b, 0, dh, tbptt, p_w, p_lengths, p_hs, p_cs, p_gates, p_aux,
                                   p_dG, p_dn, p_dG, p_dc, p_direct, B, H, H,
                                   CELL, G, HAS_LENGTHS, False, ACC, PRECISION, BLOCK_B, BLOCK_U, BLOCK_K)
        tl.debug_barrier()
