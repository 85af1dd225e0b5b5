"""Deliberately bad Triton kernels that the GPU compile gate must report
(tests/test_gpu_compile.py): imported by path in the compile worker, so they
import only triton."""

import triton
import triton.language as tl


@triton.jit
def _either(p, FLAG: tl.constexpr):
    if FLAG:
        return tl.load(p + tl.arange(0, 16))
    return 0


@triton.jit
def return_type_mismatch_kernel(p, q, FLAG: tl.constexpr):
    """The RESIDENT bug's shape: a tensor from one branch, an int from the other."""
    tl.store(q + tl.arange(0, 16), _either(p, FLAG))


@triton.jit
def spilling_kernel(p, q, BLOCK: tl.constexpr):
    """A block far beyond one warp's registers, kept alive across a reduction."""
    o = tl.arange(0, BLOCK)
    x = tl.load(p + o)
    tl.store(q + o, x * tl.sum(x))
