"""A small persistent kernel for the threaded grid executor's own tests, shaped
like the persistent kernels of issue 12 (rnnkernels/triton_kernels/
persistent.py): a tanh RNN forward in which program p owns hidden units
[p*BLOCK_U, (p+1)*BLOCK_U), loads its W_hh slice once, and per step reads all
of h_{t-1}, writes its slice of h_t, then meets the others at a counter
barrier (release arrive, acquire spin, bounded, an abort word beside the
counter). On a failed barrier every program leaves the loop, writes NaN over
all it owns and sets an error flag, which the next launch reads and raises.

Test-only: it stands in for the production kernels where those are absent and
checks what the executor must support for them (tl.dot, lengths, a spin bound,
the abort path, a flag read by the next call).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def standin_barrier(p_sync, epoch, NUM_PROGRAMS: tl.constexpr, MAX_SPINS: tl.constexpr, SHORT_BY: tl.constexpr):
    """Arrive, then spin until epoch * NUM_PROGRAMS - SHORT_BY arrivals in
    all (SHORT_BY = 1 plants an off-by-one), the abort word is set, or
    MAX_SPINS reads; a program that gives up sets the abort word. Returns
    whether the barrier completed.

    p_sync: [2] int32, the monotonic arrival counter then the abort word."""
    tl.debug_barrier()
    tl.atomic_add(p_sync, 1, sem="release", scope="gpu")
    target = epoch * NUM_PROGRAMS - SHORT_BY
    arrived = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
    aborted = tl.atomic_add(p_sync + 1, 0, sem="acquire", scope="gpu")
    spins = 0
    while (arrived < target) & (aborted == 0) & (spins < MAX_SPINS):
        arrived = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
        aborted = tl.atomic_add(p_sync + 1, 0, sem="acquire", scope="gpu")
        spins += 1
    completed = arrived >= target
    if not completed:
        tl.atomic_xchg(p_sync + 1, 1, sem="release", scope="gpu")
    tl.debug_barrier()
    return completed


@triton.jit
def standin_rnn_forward_kernel(
    p_xg,  # [T, B, H] fp64: x W_ih^T + b
    p_w,  # [H, H] fp64: W_hh
    p_lengths,  # [B] int64: each row's length
    p_hs,  # [T + 1, B, H] fp64: hs[0] = h0, hs[t + 1] = h after step t (carried past a row's end)
    p_y,  # [T, B, H] fp64: output, zero past a row's end
    p_sync,  # [2] int32: barrier counter and abort word, zero at launch
    p_error,  # [1] int32: set to 1 when a barrier fails; read by the next launch
    T, B, H,
    NUM_PROGRAMS: tl.constexpr,
    MAX_SPINS: tl.constexpr,
    SHORT_BY: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_U: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    o_u = pid * BLOCK_U + tl.arange(0, BLOCK_U)
    o_b = tl.arange(0, BLOCK_B)
    o_k = tl.arange(0, BLOCK_K)
    mask_u, mask_b, mask_k = o_u < H, o_b < B, o_k < H
    mask_bu = mask_b[:, None] & mask_u[None, :]
    # this program's W_hh slice, transposed to [BLOCK_K, BLOCK_U]: loaded once, held for all steps
    b_w = tl.load(p_w + o_u[None, :] * H + o_k[:, None], mask=mask_k[:, None] & mask_u[None, :], other=0.0)
    lengths = tl.load(p_lengths + o_b, mask=mask_b, other=0)
    completed = True
    o_own = o_b[:, None] * H + o_u[None, :]
    for t in range(0, T):
        if completed:
            b_h = tl.load(p_hs + t * B * H + o_b[:, None] * H + o_k[None, :],
                          mask=mask_b[:, None] & mask_k[None, :], other=0.0)
            pre = tl.load(p_xg + t * B * H + o_own, mask=mask_bu, other=0.0) + tl.dot(b_h, b_w)
            e = tl.exp(-2.0 * tl.abs(pre))
            h_new = tl.where(pre < 0, -1.0, 1.0) * (1.0 - e) / (1.0 + e)
            active = (t < lengths)[:, None]
            h_old = tl.load(p_hs + t * B * H + o_own, mask=mask_bu, other=0.0)
            tl.store(p_hs + (t + 1) * B * H + o_own, tl.where(active, h_new, h_old), mask=mask_bu)
            tl.store(p_y + t * B * H + o_own, tl.where(active, h_new, 0.0), mask=mask_bu)
            # never inside a branch that differs between programs: every program passes T barriers
            completed = standin_barrier(p_sync, t + 1, NUM_PROGRAMS, MAX_SPINS, SHORT_BY)
    if not completed:  # poison all this program owns: every y step and the last h
        for t in range(0, T):
            tl.store(p_y + t * B * H + o_own, float("nan"), mask=mask_bu)
        tl.store(p_hs + T * B * H + o_own, float("nan"), mask=mask_bu)
        tl.store(p_error, 1)


class StandinRNN:
    """The launcher: one persistent launch per call; the error flag of a failed
    launch makes the next call raise."""

    def __init__(self, block_u, max_spins=200):
        self.block_u = block_u
        self.max_spins = max_spins
        self.error = torch.zeros(1, dtype=torch.int32)

    def programs(self, hidden):
        return triton.cdiv(hidden, self.block_u)

    def forward(self, xg, w_hh, h0, lengths, short_by=0):
        if self.error.item():
            raise RuntimeError("standin_rnn_forward_kernel: a previous launch timed out at its grid barrier; "
                               "its outputs are NaN")
        steps, batch, hidden = xg.shape
        hs = torch.full((steps + 1, batch, hidden), float("nan"), dtype=xg.dtype)
        hs[0] = h0
        y = torch.full_like(xg, float("nan"))
        sync = torch.zeros(2, dtype=torch.int32)
        programs = self.programs(hidden)
        standin_rnn_forward_kernel[(programs, )](
            xg.contiguous(), w_hh.contiguous(), lengths, hs, y, sync, self.error, steps, batch, hidden,
            NUM_PROGRAMS=programs, MAX_SPINS=self.max_spins, SHORT_BY=short_by,
            BLOCK_B=triton.next_power_of_2(batch), BLOCK_U=self.block_u, BLOCK_K=triton.next_power_of_2(hidden))
        return y, hs[steps], sync
