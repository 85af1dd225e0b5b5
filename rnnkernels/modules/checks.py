"""Input checks that torch.nn runs in C++ (aten/src/ATen/native/RNN.cpp), so
the modules raise the same exception types and messages as their torch.nn
twins. The checks torch.nn runs in Python are inherited, not repeated here.
"""

import torch
import torch.nn.functional as F

# How c10 prints a ScalarType in its messages.
_SCALAR_TYPE_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.int64: "Long",
    torch.int32: "Int",
}


def scalar_type_name(dtype):
    return _SCALAR_TYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def check_sequence_length(steps):
    if steps == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")


def check_attributes(input, hiddens, params, check_param_dtype=True):
    """torch's check_attributes: hidden states and parameters on the input's
    device and in its dtype. (torch.nn's CPU kernels fail later with messages
    about their internals; this is the message of its cuDNN path.) Under
    autocast the parameters are cast later, so their dtype is not checked."""
    for name, tensors in (("hidden", hiddens), ("parameter", params)):
        for t in tensors:
            if t.device != input.device:
                raise RuntimeError(
                    f"Input and {name} tensors are not at the same device, found input tensor "
                    f"at {input.device} and {name} tensor at {t.device}")
            if t.dtype != input.dtype and (name == "hidden" or check_param_dtype):
                raise RuntimeError(
                    f"Input and {name} tensors are not the same dtype, found input tensor with "
                    f"{scalar_type_name(input.dtype)} and {name} tensor with "
                    f"{scalar_type_name(t.dtype)}")


def check_packed(data, batch_sizes):
    """A PackedSequence that torch.nn would run, or the exception type torch.nn
    raises for it (its own messages come from deep inside its kernels)."""
    if batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64:
        raise TypeError(f"PackedSequence batch_sizes must be a 1-D int64 tensor, got {batch_sizes.dtype} "
                        f"of shape {list(batch_sizes.shape)}")
    if batch_sizes.numel() == 0:
        raise IndexError("index 0 is out of bounds for dimension 0 with size 0")
    sizes = batch_sizes.tolist()
    if any(later > earlier for earlier, later in zip(sizes, sizes[1:])):
        raise RuntimeError(f"PackedSequence batch_sizes must be non-increasing, got {sizes}")
    if sum(sizes) > data.size(0):
        raise RuntimeError(f"PackedSequence batch_sizes sum to {sum(sizes)} rows, but its data has "
                           f"only {data.size(0)}")


def check_cell_input(input, input_size):
    if input.size(1) != input_size:
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(1)} expected {input_size}")


def check_cell_hidden(input, hx, hidden_size, label):
    if input.size(0) != hx.size(0):
        raise RuntimeError(
            f"Input batch size {input.size(0)} doesn't match hidden{label} batch size {hx.size(0)}")
    if hx.size(1) != hidden_size:
        raise RuntimeError(
            f"hidden{label} has inconsistent hidden_size: got {hx.size(1)}, expected {hidden_size}")


def check_matmul_dtype(t, weight, bias):
    """The cells' dtype check. torch.nn's cells fail inside F.linear(t, weight,
    bias); the same call on zero rows raises the installed torch's own message."""
    if t.dtype != weight.dtype:
        F.linear(t[:0], weight, bias)
        raise RuntimeError(
            f"expected {scalar_type_name(t.dtype)} to match the weight's dtype "
            f"{scalar_type_name(weight.dtype)}")
