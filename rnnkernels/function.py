"""The autograd Function over the op contract, and its functional entry point.

Every backend runs through RecurrenceFunction: forward saves what the
backend asks for, backward hands it back with the upstream gradients.
"""

import torch

from .backends import select_backend

DOUBLE_BACKWARD_ERROR = (
    "rnnkernels: the recurrence's backward is not differentiable; double backward "
    "(differentiating a gradient taken with create_graph=True) is not supported")


class RecurrenceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, backend, cell, tbptt, xg, w_hh, h0, c0, b_hn, w_hr, lengths):
        needs_backward = any(ctx.needs_input_grad[3:9])
        y, h_n, c_n, saved = backend.forward(
            cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward)
        ctx.backend, ctx.cell, ctx.tbptt = backend, cell, tbptt
        if needs_backward:
            ctx.save_for_backward(*saved)
        return y, h_n, c_n

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        with torch.no_grad():
            grads = ctx.backend.backward(ctx.cell, ctx.tbptt, ctx.saved_tensors, dy, dh_n, dc_n)
        if torch.is_grad_enabled():  # create_graph=True: these gradients depend on the inputs
            grads = [None if g is None else _Underivable.apply(g.detach().requires_grad_())
                     for g in grads]
        return (None, None, None, *grads, None)


class _Underivable(torch.autograd.Function):
    """Identity whose own backward refuses, so a second differentiation fails
    loudly instead of treating the gradient as a constant."""

    @staticmethod
    def forward(ctx, grad):
        return grad.clone()

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def recurrence(cell, xg, w_hh, h0, c0=None, *, b_hn=None, w_hr=None, lengths=None,
               tbptt=None, backend="auto"):
    """One layer, one direction of the op contract (rnnkernels.contract), differentiable.

    Returns (y, h_n, c_n); c_n is None unless cell == "lstm". `backend` is a
    name ('auto', 'reference', 'cpu', ...) or a backend object.
    """
    if isinstance(backend, str):
        backend = select_backend(backend, xg.device, xg.dtype)
    return RecurrenceFunction.apply(backend, cell, tbptt, xg, w_hh, h0, c0, b_hn, w_hr, lengths)
