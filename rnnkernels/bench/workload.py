"""One case's inputs and the step that is timed.

Every implementation of a case runs on the same input, upstream gradient and
weights (the torch.nn module's, loaded into each rnnkernels module), so their
outputs can be compared element by element.
"""

import copy

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels

from .suite import DTYPES

TORCH_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
RNNKERNELS_CLASSES = {"lstm": rnnkernels.LSTM, "gru": rnnkernels.GRU, "rnn": rnnkernels.RNN}

SEED = 0

# The precision the oracle runs in: one step up from the dtype measured.
HIGHER_PRECISION = {torch.float32: torch.float64, torch.bfloat16: torch.float32,
                    torch.float16: torch.float32}


class Workload:
    """The torch.nn module, input and upstream gradient of one case on one device."""

    def __init__(self, case, device):
        self.case, self.device = case, device
        self.dtype = DTYPES[case.dtype]
        self.training = case.mode == "fwd+bwd"
        shape = case.shape
        torch.manual_seed(SEED)  # the same weights for a shape in every run
        self.torch_module = TORCH_CLASSES[case.cell](
            shape.input_size, shape.hidden_size, **self._layer_options()).to(device, self.dtype)
        generator = torch.Generator().manual_seed(SEED + 1)

        def randn(*size):  # drawn on the CPU so every device sees the same numbers
            return torch.randn(*size, generator=generator).to(device, self.dtype)

        x = randn(shape.seq_len, shape.batch, shape.input_size)
        if shape.packed:
            packed = pack_padded_sequence(x, torch.tensor(shape.lengths()))
            self.input_leaf = packed.data.requires_grad_(self.training)
            self.input = PackedSequence(self.input_leaf, packed.batch_sizes,
                                        packed.sorted_indices, packed.unsorted_indices)
            rows = (self.input_leaf.shape[0],)
        else:
            self.input_leaf = self.input = x.requires_grad_(self.training)
            rows = (shape.seq_len, shape.batch)
        directions = 2 if shape.bidirectional else 1
        h_out = shape.proj_size or shape.hidden_size
        self.upstream = randn(*rows, h_out * directions) if self.training else None

    def _layer_options(self):
        shape = self.case.shape
        options = {"num_layers": shape.layers, "bidirectional": shape.bidirectional}
        if shape.proj_size:
            options["proj_size"] = shape.proj_size
        return options

    def rnnkernels_module(self, backend):
        """An rnnkernels module on `backend` with the torch.nn module's weights."""
        shape = self.case.shape
        module = RNNKERNELS_CLASSES[self.case.cell](
            shape.input_size, shape.hidden_size, **self._layer_options(), backend=backend)
        module.to(self.device, self.dtype)
        module.load_state_dict(self.torch_module.state_dict())
        return module

    def step(self, forward):
        """The timed work for `forward` (a module or a compiled module): an
        inference forward, or one training step of the layer (forward, then
        backward of the output from the upstream gradient)."""
        if not self.training:
            def inference():
                with torch.no_grad():
                    return forward(self.input)
            return inference

        def training_step():
            output, _ = forward(self.input)
            output = output.data if isinstance(output, PackedSequence) else output
            output.backward(self.upstream)
        return training_step

    def clear_grads(self, module):
        """Gradients to None, so that each training step allocates them as a real one does."""
        self.input_leaf.grad = None
        for parameter in module.parameters():
            parameter.grad = None

    def _inputs_in(self, dtype):
        """(module input, its leaf, upstream gradient) converted to `dtype`."""
        if dtype == self.dtype:
            return self.input, self.input_leaf, self.upstream
        leaf = self.input_leaf.detach().to(dtype).requires_grad_(self.training)
        module_input = leaf
        if isinstance(self.input, PackedSequence):
            module_input = PackedSequence(leaf, self.input.batch_sizes, self.input.sorted_indices,
                                          self.input.unsorted_indices)
        upstream = None if self.upstream is None else self.upstream.to(dtype)
        return module_input, leaf, upstream

    def outputs(self, forward, module):
        """Every tensor the step produces, by name: the output and final state,
        and after a training step the gradient of the input and of each weight."""
        return self._outputs(forward, module, *self._inputs_in(self.dtype))

    def higher_precision_outputs(self, module):
        """outputs() of a copy of `module` (torch.nn's, or the reference
        backend's) run in HIGHER_PRECISION on the same values: the oracle."""
        precise = copy.deepcopy(module).to(HIGHER_PRECISION[self.dtype])
        return self._outputs(precise, precise, *self._inputs_in(HIGHER_PRECISION[self.dtype]))

    def _outputs(self, forward, module, module_input, leaf, upstream):
        leaf.grad = None
        for parameter in module.parameters():
            parameter.grad = None
        with torch.set_grad_enabled(self.training):
            output, state = forward(module_input)
        output = output.data if isinstance(output, PackedSequence) else output
        states = state if isinstance(state, tuple) else (state,)
        tensors = {"output": output, **{f"state[{i}]": s for i, s in enumerate(states)}}
        if self.training:
            output.backward(upstream)
            tensors["grad input"] = leaf.grad
            for name, parameter in module.named_parameters():
                tensors[f"grad {name}"] = parameter.grad
        result = {name: t.detach().clone() for name, t in tensors.items()}
        leaf.grad = None
        for parameter in module.parameters():
            parameter.grad = None
        return result
