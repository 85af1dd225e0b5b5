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


@triton.jit
def barrier_fault_kernel(p_w, p_sync, p_out, T, RELAXED_ARRIVE: tl.constexpr, W_IN_LOOP: tl.constexpr):
    """A persistent loop with a grid barrier, and two faults the PTX lint must
    report (ptx_lint.py): a relaxed arrive (publishes nothing), and the weights
    loaded again inside the time loop."""
    o = tl.arange(0, 64)
    w = tl.load(p_w + o)
    acc = tl.zeros([64], tl.float32)
    for t in range(T):
        if W_IN_LOOP:
            acc += tl.load(p_w + o) * t
        else:
            acc += w * t
        tl.debug_barrier()
        if RELAXED_ARRIVE:
            tl.atomic_add(p_sync, 1, sem="relaxed", scope="gpu")
        else:
            tl.atomic_add(p_sync, 1, sem="release", scope="gpu")
        arrived = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
        while arrived < (t + 1) * tl.num_programs(0):
            arrived = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()
    tl.store(p_out + o, acc)
