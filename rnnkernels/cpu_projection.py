"""The cpu backend's input projection of bfloat16/float16 layers.

The module computes xg = x W_ih^T + b once per layer and direction and turns
dxg back into dx, dW_ih and db (DESIGN.md); it asks the backend for that
projection (`CpuBackend.input_projection`). For 16-bit inputs, torch's own
matmul is fast only where it runs oneDNN's kernels (AVX-512 for bfloat16,
AVX512-FP16 for float16); on an AVX2 CPU it is a scalar loop of about
1 GFLOP/s. There the projection and its gradients run through the 16-bit
GEMMs of csrc/cpu/gemm16.h (MKL's cblas_gemm_bf16bf16f32 /
cblas_gemm_f16f16f32, float32 accumulation, the result rounded once to the
input dtype as torch's own output is); `rnnkernels._C.cpu_gemm_path(dtype)`
names the path and RNNKERNELS_CPU_GEMM16 forces one (see gemm16.h).

The 16-bit GEMM path runs only in plain eager use. Under torch.compile,
torch.jit.trace and torch.func transforms the projection is F.linear, which
those already handle; a backward with create_graph=True through the eager
path computes its gradients with differentiable torch ops.
"""

import torch
import torch.nn.functional as F

_PATH_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _uses_gemm16(dtype):
    name = _PATH_NAMES.get(dtype)
    if name is None:
        return False
    from . import _C
    return _C.cpu_gemm_path(name) != "torch"


def _plain_eager():
    """No compile, trace or torch.func transform is recording this call."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or torch._C._are_functorch_transforms_active())


def project(x, weight, bias):
    """x W^T + b for the module (bias may be None): F.linear, or the 16-bit
    GEMMs for a 16-bit input in plain eager use where torch's matmul is slow."""
    if not _plain_eager() or not _uses_gemm16(x.dtype):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return Linear16Function.apply(x, weight, bias)
    return torch.ops.rnnkernels.linear16(x, weight, bias)


class Linear16Function(torch.autograd.Function):
    """F.linear on the 16-bit GEMMs. Old-style (forward with ctx): it is only
    used eagerly, and this form skips the argument binding that a
    setup_context Function pays on every call."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.rnnkernels.linear16(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad
        need_dbias = need_dbias and ctx.has_bias
        if torch.is_grad_enabled():  # create_graph=True: gradients that are differentiable
            rows = dy.reshape(-1, dy.shape[-1])
            return (dy @ weight if need_dx else None,
                    rows.T @ x.reshape(-1, x.shape[-1]) if need_dweight else None,
                    rows.sum(0) if need_dbias else None)
        dx, dweight, dbias = torch.ops.rnnkernels.linear16_backward(
            dy, x, weight, [need_dx, need_dweight, need_dbias])
        return (dx if need_dx else None, dweight if need_dweight else None,
                dbias if need_dbias else None)

    @staticmethod
    def jvp(ctx, dx, dweight, dbias):
        """Forward mode (torch.autograd.forward_ad): linear in each input."""
        x, weight = ctx.saved_tensors
        terms = [F.linear(dx, weight) if dx is not None else None,
                 F.linear(x, dweight) if dweight is not None else None, dbias]
        present = [t for t in terms if t is not None]
        if not present:
            return x.new_zeros((*x.shape[:-1], weight.shape[0]))
        return sum(present[1:], present[0])
