"""Builders shared by the tests: torch.nn / rnnkernels twins with the same
weights, inputs in every form a module accepts, and one forward + backward
that collects every output and gradient by name."""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import rnnkernels
from rnnkernels.contract import CELL_GATES

# kind -> (torch.nn class, rnnkernels class, constructor extras)
MODULE_KINDS = {
    "lstm": (nn.LSTM, rnnkernels.LSTM, {}),
    "lstm_proj": (nn.LSTM, rnnkernels.LSTM, {"proj_size": 3}),
    "gru": (nn.GRU, rnnkernels.GRU, {}),
    "rnn_tanh": (nn.RNN, rnnkernels.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, rnnkernels.RNN, {"nonlinearity": "relu"}),
}

CELL_KINDS = {
    "lstm": (nn.LSTMCell, rnnkernels.LSTMCell, {}),
    "gru": (nn.GRUCell, rnnkernels.GRUCell, {}),
    "rnn_tanh": (nn.RNNCell, rnnkernels.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNNCell, rnnkernels.RNNCell, {"nonlinearity": "relu"}),
}

INPUT_MODES = ("dense", "unbatched", "packed", "packed_unsorted")


def make_twins(kind, *args, backend="auto", tbptt=None, dtype=torch.float64, **kwargs):
    """(torch.nn module, rnnkernels module) with identical weights."""
    theirs_cls, ours_cls, extra = MODULE_KINDS[kind]
    kwargs = {**extra, **kwargs, "dtype": dtype}
    theirs = theirs_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs, backend=backend, tbptt=tbptt)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def make_cell_twins(kind, *args, backend="auto", dtype=torch.float64, **kwargs):
    theirs_cls, ours_cls, extra = CELL_KINDS[kind]
    kwargs = {**extra, **kwargs, "dtype": dtype}
    theirs = theirs_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def packed_lengths(steps, batch):
    """Distinct-ish lengths from `steps` down to 1, longest first."""
    return [max(1, steps - (i * steps) // batch) for i in range(batch)]


def make_input(mode, steps, batch, features, *, batch_first=False, dtype=torch.float64,
               seed=0, lengths=None):
    """(module input, leaf tensors whose .grad is the input gradient)."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    if mode == "dense":
        x = leaf(batch, steps, features) if batch_first else leaf(steps, batch, features)
        return x, [x]
    if mode == "unbatched":
        x = leaf(steps, features)
        return x, [x]
    lengths = lengths or packed_lengths(steps, batch)
    if mode == "packed_unsorted":  # a row order pack_sequence has to sort
        lengths = lengths[1:] + lengths[:1]
    sequences = [leaf(length, features) for length in lengths]
    return pack_sequence(sequences, enforce_sorted=(mode == "packed")), sequences


def make_hx(module, batch, *, dtype=torch.float64, seed=0):
    """(hx for `module`, its leaves); batch=None gives unbatched (2-D) states."""
    g = torch.Generator().manual_seed(seed)
    states = module.num_layers * (2 if module.bidirectional else 1)
    lead = (states,) if batch is None else (states, batch)
    h_size = getattr(module, "proj_size", 0) or module.hidden_size
    h = torch.randn(*lead, h_size, generator=g, dtype=dtype).requires_grad_()
    if module.mode != "LSTM":
        return h, [h]
    c = torch.randn(*lead, module.hidden_size, generator=g, dtype=dtype).requires_grad_()
    return (h, c), [h, c]


def upstream_gradient(t, generator):
    """A random upstream gradient for output `t`: drawn in float64 and rounded
    to t's dtype, so runs in different dtypes get the same values (randn
    itself draws different numbers per dtype once a tensor has 16 or more
    elements, which would make a float32 run and its float64 reference
    differentiate different losses)."""
    return torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device, t.dtype)


def forward_backward(module, inputs, hx=(None, ()), *, seed=0, device=None):
    """Runs module(input, hx), backpropagates random upstream gradients into
    every output, returns {name: tensor} of outputs and all gradients.

    With `device`, input and hx move there inside the graph (the leaves stay
    where they are, so their gradients flow back through the moves) and every
    result comes back on the CPU."""
    input_obj, input_leaves = inputs
    hx_obj, hx_leaves = hx
    if device is not None:
        input_obj = input_obj.to(device)
        if isinstance(hx_obj, tuple):
            hx_obj = tuple(h.to(device) for h in hx_obj)
        elif hx_obj is not None:
            hx_obj = hx_obj.to(device)
    for _, p in module.named_parameters():
        p.grad = None
    output, hidden = module(input_obj, hx_obj)
    out = output.data if isinstance(output, PackedSequence) else output
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    g = torch.Generator().manual_seed(seed)
    # The CPU generator draws the same numbers whatever the outputs' device.
    loss = sum((t * upstream_gradient(t, g)).sum() for t in (out, *states))
    loss.backward()
    results = {"output": out.detach()}
    results.update({name: s.detach() for name, s in zip(("h_n", "c_n"), states, strict=False)})
    results.update({f"grad input[{i}]": leaf.grad for i, leaf in enumerate(input_leaves)})
    results.update({f"grad hx[{i}]": leaf.grad for i, leaf in enumerate(hx_leaves)})
    results.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    if device is not None:
        results = {name: t.cpu() for name, t in results.items()}
    return results


OP_CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def make_op_inputs(cell, steps, batch, hidden, *, proj=None, lengths=None, b_hn=True,
                   dtype=torch.float64, seed=0, scale=0.5):
    """Inputs of one recurrence op call (rnnkernels.contract), as leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    hidden_out = proj or hidden

    def leaf(*shape):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    inputs = {
        "xg": leaf(steps, batch, CELL_GATES[cell] * hidden),
        "w_hh": leaf(CELL_GATES[cell] * hidden, hidden_out),
        "h0": leaf(batch, hidden_out),
        "c0": leaf(batch, hidden) if cell == "lstm" else None,
        "b_hn": leaf(hidden) if cell == "gru" and b_hn else None,
        "w_hr": leaf(proj, hidden) if proj else None,
    }
    inputs["lengths"] = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    return inputs


OP_INPUT_NAMES = ("xg", "w_hh", "h0", "c0", "b_hn", "w_hr")
# (cell, proj_size) pairs every op-level check covers: each cell, and the LSTM projection
OP_VARIANTS = [("lstm", None), ("lstm", 2)] + [(cell, None) for cell in OP_CELLS[1:]]


def op_function(cell, backend, lengths=None, tbptt=None):
    """recurrence() as a function of the OP_INPUT_NAMES tensors, returning its
    tensor outputs (for gradcheck and gradgradcheck)."""
    def run(xg, w_hh, h0, c0, b_hn, w_hr):
        y, h_n, c_n = rnnkernels.recurrence(cell, xg, w_hh, h0, c0, b_hn=b_hn, w_hr=w_hr,
                                            lengths=lengths, tbptt=tbptt, backend=backend)
        return (y, h_n) if c_n is None else (y, h_n, c_n)
    return run


def op_forward_backward(cell, inputs, *, backend, tbptt=None, seed=0):
    """recurrence() on `inputs` plus a backward of random upstream gradients;
    returns {name: tensor} of outputs and the gradient of every input."""
    leaves = {k: v for k, v in inputs.items() if k != "lengths"}
    fresh = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in leaves.items()}
    y, h_n, c_n = rnnkernels.recurrence(cell, **fresh, lengths=inputs["lengths"],
                                        tbptt=tbptt, backend=backend)
    g = torch.Generator().manual_seed(seed)
    outputs = {"y": y, "h_n": h_n, "c_n": c_n}
    loss = sum((t * upstream_gradient(t, g)).sum() for t in outputs.values() if t is not None)
    loss.backward()
    results = {k: v.detach() for k, v in outputs.items() if v is not None}
    results.update({f"grad {k}": v.grad for k, v in fresh.items() if v is not None})
    return results
