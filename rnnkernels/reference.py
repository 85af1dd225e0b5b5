"""The reference backend: the op contract in plain PyTorch, a time loop.

This file is the spec every other backend is tested against. It runs on any
device and floating dtype. For float16/bfloat16 it keeps what the contract
keeps in float32 (the matmul accumulation and the cell state) and rounds h to
the input dtype each step, as a fused kernel storing y in that dtype does.

Backward is autograd through the same loop with (h, c) detached at every
tbptt chunk boundary: that detach loop is the definition of truncated BPTT.
"""

import torch
import torch.nn.functional as F

from .contract import RecurrenceGrads

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def lstm_step(xg_t, h, c, w_hh, w_hr):
    # xg_t [B, 4H], h [B, H_out], c [B, H], w_hh [4H, H_out], w_hr [P, H] or None
    i, f, g, o = (xg_t + h @ w_hh.T).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = h @ w_hr.T
    return h, c


def gru_step(xg_t, h, w_hh, b_hn):
    # xg_t [B, 3H] (b_hn not in it), h [B, H], w_hh [3H, H], b_hn [H] or None
    x_r, x_z, x_n = xg_t.chunk(3, dim=1)
    h_r, h_z, h_n = (h @ w_hh.T).chunk(3, dim=1)
    if b_hn is not None:
        h_n = h_n + b_hn
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


def rnn_step(xg_t, h, w_hh, relu):
    # xg_t [B, H], h [B, H], w_hh [H, H]
    pre = xg_t + h @ w_hh.T
    return F.relu(pre) if relu else torch.tanh(pre)


def run_recurrence(cell, xg, w_hh, h0, c0=None, b_hn=None, w_hr=None, lengths=None, tbptt=None):
    """y [T, B, H_out], h_n [B, H_out], c_n [B, H] or None; differentiable."""
    dtype = xg.dtype
    acc = torch.float32 if dtype in _LOW_PRECISION else dtype

    def up(t):
        return None if t is None else t.to(acc)

    xg, w_hh, b_hn, w_hr = up(xg), up(w_hh), up(b_hn), up(w_hr)
    h, c = up(h0), up(c0)
    ys = []
    for t in range(xg.shape[0]):
        if tbptt and t > 0 and t % tbptt == 0:
            h = h.detach()
            c = None if c is None else c.detach()
        if cell == "lstm":
            h_new, c_new = lstm_step(xg[t], h, c, w_hh, w_hr)
        elif cell == "gru":
            h_new, c_new = gru_step(xg[t], h, w_hh, b_hn), None
        else:
            h_new, c_new = rnn_step(xg[t], h, w_hh, cell == "rnn_relu"), None
        h_new = h_new.to(dtype).to(acc)  # h is stored (y) and fed back in the input dtype
        if lengths is None:
            y_t = h_new
        else:  # rows that have ended keep their state and output zeros
            active = (t < lengths).unsqueeze(1)
            h_new = torch.where(active, h_new, h)
            c_new = None if c is None else torch.where(active, c_new, c)
            y_t = torch.where(active, h_new, torch.zeros_like(h_new))
        h, c = h_new, c_new
        ys.append(y_t)
    y = torch.stack(ys).to(dtype)
    return y, h.to(dtype), None if c is None else c.to(dtype)


def _check_like_xg(xg, **operands):
    """Operands in xg's dtype and on its device, as the compiled backends require;
    run_recurrence alone would cast them silently."""
    for name, t in operands.items():
        if t is None:
            continue
        if t.device != xg.device:
            raise RuntimeError(f"rnnkernels reference backend: {name} is on {t.device} but xg is on {xg.device}")
        if t.dtype != xg.dtype:
            raise RuntimeError(f"rnnkernels reference backend: {name} has dtype {t.dtype} but xg has dtype {xg.dtype}")


class ReferenceBackend:
    name = "reference"
    paths = ("loop",)

    def kernel_path(self, cell, xg, w_hh, w_hr, lengths=None):
        return "loop"

    def unavailable_reason(self):
        return None

    def unsupported_reason(self, device, dtype):
        if not dtype.is_floating_point:
            return f"it needs a floating-point dtype, got {dtype}"
        return None

    def forward(self, cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward):
        _check_like_xg(xg, w_hh=w_hh, h0=h0, c0=c0, b_hn=b_hn, w_hr=w_hr)
        y, h_n, c_n = run_recurrence(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths)
        return y, h_n, c_n, (xg, w_hh, h0, c0, b_hn, w_hr, lengths)

    def backward(self, cell, tbptt, saved, dy, dh_n, dc_n):
        *inputs, lengths = saved
        leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
        with torch.enable_grad():
            y, h_n, c_n = run_recurrence(cell, *leaves, lengths=lengths, tbptt=tbptt)
            outputs = [y, h_n] + ([c_n] if c_n is not None else [])
            upstream = [dy, dh_n] + ([dc_n] if c_n is not None else [])
            wrt = [t for t in leaves if t is not None]
            grads = torch.autograd.grad(outputs, wrt, upstream, allow_unused=True)
        by_leaf = iter(grads)
        result = []
        for leaf in leaves:
            if leaf is None:
                result.append(None)
            else:
                g = next(by_leaf)
                result.append(torch.zeros_like(leaf) if g is None else g)
        xg, w_hh, h0, c0, b_hn, w_hr = result
        return RecurrenceGrads(xg, w_hh, h0, c0, b_hn, w_hr)
