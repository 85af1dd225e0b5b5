"""The autograd Function over the op contract, and its functional entry point.

Every backend runs through RecurrenceFunction.

- Forward runs the backend's kernels and keeps what the backend asks for.
- First-order backward (grad mode off, the usual `.backward()`) hands that
  back to the backend's own backward kernels.
- Backward with grad mode on (`create_graph=True`, and every torch.func
  transform, which always differentiates that way) must return gradients that
  are themselves differentiable. It recomputes the layer through the reference
  backend and differentiates that with torch.func.vjp, which composes with
  autograd, vmap and further transforms. Double backward therefore costs one
  reference forward and backward on top of the first.
- Forward mode (torch.func.jvp, jacfwd, forward_ad) uses the jvp of the same
  reference recurrence.

The saved-tensor rule: the Function saves its own inputs (so autograd's
version counters catch an in-place change to a weight, as torch.nn's do), and
a backend's saved tensors are buffers it owns. No saved tensor is an output
the caller receives, so in-place ops on y, h_n and c_n are always safe.

Three forms of the same Function, picked per call by apply_recurrence:
- EagerRecurrenceFunction (plain eager use, the common case): old-style, with
  forward(ctx, ...) saving the backend's buffers directly. A setup_context
  Function binds its arguments with inspect.signature on every apply and
  must return its saved buffers as extra outputs, which cost about 100 us
  per layer call; this form pays neither.
- TransformableRecurrenceFunction (torch.func transforms, torch.jit.trace):
  setup_context style, as functorch requires, with the vmap rule.
- RecurrenceFunction (torch.compile): setup_context style without jvp, which
  Dynamo cannot trace.
No grad needed and no forward-mode AD running: the backend runs directly,
without a Function.
"""

import torch
from torch.autograd import forward_ad

from .backends import select_backend
from .contract import check_cell, check_tbptt
from .reference import run_recurrence

# Positions of the differentiable inputs of RecurrenceFunction.forward.
_TENSOR_INPUTS = ("xg", "w_hh", "h0", "c0", "b_hn", "w_hr")


class RecurrenceFunction(torch.autograd.Function):
    @staticmethod
    def forward(backend, cell, tbptt, needs_backward, xg, w_hh, h0, c0, b_hn, w_hr, lengths):
        """(y, h_n, c_n, *the backend's saved tensors): setup_context sees only
        inputs and outputs, so the saved tensors travel as outputs that autograd
        treats as non-differentiable; apply_recurrence returns the first three."""
        y, h_n, c_n, saved = backend.forward(
            cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward)
        if not needs_backward:
            return y, h_n, c_n
        inputs = (xg, w_hh, h0, c0, b_hn, w_hr, lengths)
        # an input passed through as an output must be a view (autograd's rule)
        return (y, h_n, c_n, *(t.view_as(t) if t is not None and any(t is i for i in inputs) else t
                               for t in saved))

    @staticmethod
    def setup_context(ctx, inputs, output):
        backend, cell, tbptt, _, xg, w_hh, h0, c0, b_hn, w_hr, lengths = inputs
        ctx.backend, ctx.cell, ctx.lengths = backend, cell, lengths
        ctx.tbptt = _normalised_tbptt(tbptt, xg)
        saved = output[3:]
        ctx.mark_non_differentiable(*(t for t in saved if t is not None))
        ctx.backend_saved = len(saved)
        ctx.save_for_backward(xg, w_hh, h0, c0, b_hn, w_hr, *saved)
        ctx.save_for_forward(xg, w_hh, h0, c0, b_hn, w_hr)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n, *_):
        return _backward(ctx, dy, dh_n, dc_n)


def _backward(ctx, dy, dh_n, dc_n):
    """The gradients of every argument of the Functions' forward: the
    backend's kernels, or (grad mode on, or nothing saved) the differentiable
    reference path."""
    saved = ctx.saved_tensors
    inputs, backend_saved = saved[:len(_TENSOR_INPUTS)], saved[len(_TENSOR_INPUTS):]
    y_like = _outputs_like(ctx.cell, inputs)
    dy, dh_n, dc_n = (torch.zeros_like(like) if g is None and like is not None else g
                      for g, like in zip((dy, dh_n, dc_n), y_like, strict=True))
    if torch.is_grad_enabled() or not ctx.backend_saved:
        grads = _differentiable_backward(ctx, inputs, dy, dh_n, dc_n)
    else:
        grads = ctx.backend.backward(ctx.cell, ctx.tbptt, backend_saved, dy, dh_n, dc_n)
    return (None, None, None, None, *grads, None)


def _normalised_tbptt(tbptt, xg):
    """tbptt >= T never cuts: None, so no backend sees a huge int."""
    return tbptt if tbptt is not None and tbptt < xg.shape[0] else None


class TransformableRecurrenceFunction(RecurrenceFunction):
    """RecurrenceFunction plus forward mode and a vmap rule, for eager code and
    torch.func. Dynamo cannot trace an autograd.Function that has a jvp, so
    under torch.compile the plain RecurrenceFunction runs instead."""

    @staticmethod
    def jvp(ctx, *tangents):
        return _jvp(ctx, tangents) + (None,) * ctx.backend_saved

    @staticmethod
    def vmap(info, in_dims, backend, cell, tbptt, needs_backward, *tensors):
        """torch.func.vmap (and jacfwd, hessian): rows of the recurrence are
        independent, so a vmapped dimension over xg, h0 and c0 only joins the
        batch; a vmapped weight or lengths runs the recurrence once per entry."""
        dims = dict(zip(_TENSOR_INPUTS + ("lengths",), in_dims[4:], strict=True))
        named = dict(zip(_TENSOR_INPUTS + ("lengths",), tensors, strict=True))
        size = info.batch_size
        static = (backend, cell, tbptt, needs_backward)
        if all(dims[k] is None for k in ("w_hh", "b_hn", "w_hr", "lengths")):
            return _vmap_into_batch(static, named, dims, size)
        outputs = []
        for index in range(size):
            one = {k: v if v is None or dims[k] is None else v.select(dims[k], index)
                   for k, v in named.items()}
            outputs.append(TransformableRecurrenceFunction.apply(*static, *one.values())[:3])
        y, h_n, c_n = (None if outputs[0][i] is None else torch.stack([o[i] for o in outputs])
                       for i in range(3))
        return (y, h_n, c_n), (0, 0, None if c_n is None else 0)


class EagerRecurrenceFunction(torch.autograd.Function):
    """The Function for plain eager calls: the same forward, backward and jvp
    in the old style (forward takes ctx), which skips the per-call argument
    binding of setup_context Functions and saves the backend's buffers
    without passing them out as outputs. torch.func needs setup_context, so
    under a transform TransformableRecurrenceFunction runs instead."""

    @staticmethod
    def forward(ctx, backend, cell, tbptt, needs_backward, xg, w_hh, h0, c0, b_hn, w_hr, lengths):
        y, h_n, c_n, saved = backend.forward(
            cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward)
        ctx.backend, ctx.cell, ctx.lengths = backend, cell, lengths
        ctx.tbptt = _normalised_tbptt(tbptt, xg)
        saved = saved if needs_backward else ()
        ctx.backend_saved = len(saved)
        ctx.save_for_backward(xg, w_hh, h0, c0, b_hn, w_hr, *saved)
        ctx.save_for_forward(xg, w_hh, h0, c0, b_hn, w_hr)
        ctx.set_materialize_grads(False)
        return y, h_n, c_n

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        return _backward(ctx, dy, dh_n, dc_n)

    @staticmethod
    def jvp(ctx, *tangents):
        return _jvp(ctx, tangents)


def _jvp(ctx, tangents):
    """(dy, dh_n, dc_n): the jvp of the reference recurrence at the saved
    inputs along the tangents of the forward's arguments."""
    inputs = ctx.saved_tensors
    tangents = tangents[4:4 + len(_TENSOR_INPUTS)]
    present = [i for i, t in enumerate(inputs) if t is not None]
    run = _reference_on(ctx.cell, inputs, present, ctx.lengths, None)
    tangent_in = tuple(torch.zeros_like(inputs[i]) if tangents[i] is None else tangents[i]
                       for i in present)
    primals = tuple(inputs[i] for i in present)
    if torch._C._are_functorch_transforms_active():
        _, out_tangents = torch.func.jvp(run, primals, tangent_in)
    else:  # torch.autograd.forward_ad: no second dual level may open, so the
        # jvp is the vjp of the (linear) vjp: d/du <vjp(u), tangent>
        out_tangents = _jvp_by_double_vjp(run, primals, tangent_in)
    dy, dh_n, dc_n = (*out_tangents, None)[:3]
    return dy, dh_n, dc_n


def _jvp_by_double_vjp(run, primals, tangents):
    """The jvp of `run` at `primals` along `tangents` without forward-mode AD:
    u -> vjp(u) is linear, and the vjp of that map along the tangents is the jvp."""
    outputs, vjp = torch.func.vjp(run, *primals)
    zeros = tuple(torch.zeros_like(o) for o in outputs)
    _, vjp_of_vjp = torch.func.vjp(vjp, zeros)
    return vjp_of_vjp(tangents)[0]


def _vmap_into_batch(static, named, dims, size):
    """RecurrenceFunction.vmap where only xg, h0 and c0 carry the vmapped
    dimension: it is folded into the batch, [V, B] -> V*B rows."""
    steps, batch = named["xg"].shape[-3:-1] if dims["xg"] is None else (
        named["xg"].movedim(dims["xg"], 0).shape[1:3])

    def rows(name, lead):  # the tensor as [V, *lead, B, ...], then V and B merged
        t = named[name]
        if t is None:
            return None
        t = t.movedim(dims[name], 0) if dims[name] is not None else t.expand(size, *t.shape)
        if lead:  # xg: [V, T, B, G*H] -> [T, V*B, G*H]
            return t.movedim(0, 1).reshape(steps, size * batch, t.shape[-1])
        return t.reshape(size * batch, t.shape[-1])

    lengths = named["lengths"]
    y, h_n, c_n = TransformableRecurrenceFunction.apply(
        *static, rows("xg", True), named["w_hh"], rows("h0", False), rows("c0", False),
        named["b_hn"], named["w_hr"], None if lengths is None else lengths.repeat(size))[:3]
    y = y.reshape(steps, size, batch, y.shape[-1])
    h_n = h_n.reshape(size, batch, h_n.shape[-1])
    c_n = None if c_n is None else c_n.reshape(size, batch, c_n.shape[-1])
    return (y, h_n, c_n), (1, 0, None if c_n is None else 0)


def _reference_on(cell, inputs, present, lengths, tbptt):
    """The reference recurrence as a function of the inputs at `present` (the
    others fixed), returning its tensor outputs only, for torch.func."""

    def run(*args):
        full = list(inputs)
        for index, value in zip(present, args, strict=True):
            full[index] = value
        y, h, c = run_recurrence(cell, *full, lengths=lengths, tbptt=tbptt)
        return (y, h) if c is None else (y, h, c)

    return run


def _outputs_like(cell, inputs):
    """Tensors shaped as y, h_n and c_n (None for a cell without c), for zero gradients."""
    xg, w_hh, h0, c0 = inputs[:4]
    y = xg.new_empty((xg.shape[0], xg.shape[1], w_hh.shape[1])) if xg is not None else None
    return y, h0, c0 if cell == "lstm" else None


def _differentiable_backward(ctx, inputs, dy, dh_n, dc_n):
    """The gradients as differentiable functions of the inputs and of dy, dh_n,
    dc_n: the vjp of the reference recurrence, recomputed from the inputs."""
    present = [i for i, t in enumerate(inputs) if t is not None]
    run = _reference_on(ctx.cell, inputs, present, ctx.lengths, ctx.tbptt)
    _, vjp = torch.func.vjp(run, *(inputs[i] for i in present))
    upstream = (dy, dh_n) if ctx.cell != "lstm" else (dy, dh_n, dc_n)
    by_input = dict(zip(present, vjp(upstream), strict=True))
    return [by_input.get(i) for i in range(len(inputs))]


def _needs_backend_saved(*tensors):
    """Whether the backend should keep what its own backward needs: autograd
    will ask for a backward of these inputs, and no torch.func transform is
    active (transforms always differentiate with grad mode on, which takes the
    differentiable path; that path needs only the inputs, and a vmap rule's
    outputs must match the Function's). Nor while torch.jit.trace records the
    call: the traced graph must not depend on grad mode, so a traced module's
    backward takes the differentiable path too."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        return False
    if torch.jit.is_tracing():
        return False
    return torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active()


def kernel_path(backend, cell, xg, w_hh, w_hr, lengths=None):
    """The kernel path `backend` takes for this layer ('loop' for a backend with one path)."""
    path_of = getattr(backend, "kernel_path", None)
    return "loop" if path_of is None else path_of(cell, xg, w_hh, w_hr, lengths)


def apply_recurrence(backend, cell, tbptt, xg, w_hh, h0, c0=None, b_hn=None, w_hr=None, lengths=None):
    """(y, h_n, c_n) of the recurrence's Function on a resolved backend object."""
    if torch.compiler.is_compiling():
        return RecurrenceFunction.apply(
            backend, cell, tbptt, _needs_backend_saved(xg, w_hh, h0, c0, b_hn, w_hr),
            xg, w_hh, h0, c0, b_hn, w_hr, lengths)[:3]
    if torch._C._are_functorch_transforms_active() or torch.jit.is_tracing():
        return TransformableRecurrenceFunction.apply(
            backend, cell, tbptt, _needs_backend_saved(xg, w_hh, h0, c0, b_hn, w_hr),
            xg, w_hh, h0, c0, b_hn, w_hr, lengths)[:3]
    tensors = (xg, w_hh, h0, c0, b_hn, w_hr)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not needs_grad and not _forward_ad_active():  # inference: no Function at all
        y, h_n, c_n, _ = backend.forward(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, False)
        return y, h_n, c_n
    return EagerRecurrenceFunction.apply(
        backend, cell, tbptt, needs_grad, xg, w_hh, h0, c0, b_hn, w_hr, lengths)


def _forward_ad_active():
    """Whether a torch.autograd.forward_ad dual level is open (its tangents
    flow only through a Function's jvp)."""
    return getattr(forward_ad, "_current_level", 0) >= 0


def recurrence(cell, xg, w_hh, h0, c0=None, *, b_hn=None, w_hr=None, lengths=None,
               tbptt=None, backend="auto"):
    """One layer, one direction of the op contract (rnnkernels.contract), differentiable.

    Returns (y, h_n, c_n); c_n is None unless cell == "lstm". `backend` is a
    name ('auto', 'reference', 'cpu', ...) or a backend object.
    """
    check_cell(cell)
    check_tbptt(tbptt)
    if isinstance(backend, str):
        backend = select_backend(backend, xg.device, xg.dtype)
    return apply_recurrence(backend, cell, tbptt, xg, w_hh, h0, c0, b_hn, w_hr, lengths)
