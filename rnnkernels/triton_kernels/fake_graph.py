"""A stand-in for torch.cuda.CUDAGraph on CPU tensors (Triton's interpreter),
so the 'step-graph' path (graphs.py) runs, and its ownership bugs show, on a
machine without a GPU.

While a FakeGraph captures, every kernel of forward.py and backward.py is
replaced by a recorder: the real launcher code runs, and each launch is kept
with its grid and its arguments, which are the graph's fixed buffers. Like a
CUDA capture, nothing runs then. replay() re-runs the recorded launches, in
order, against those same buffers, so a second call that overwrote buffers
whose contents an earlier call still needed (its outputs, its saved tensors)
gives wrong results here as it would on a GPU.

Torch ops inside a capture are not recorded: a CUDA graph would replay them
and this stand-in cannot, so the step loops must only launch kernels. The
ops that make a device sync (.item(), nonzero, ...) raise here, as they
would fail a real capture; a host copy of a CPU tensor cannot be told apart
from any other copy on CPU and is not caught.
"""

import contextlib
import threading

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import backward as bwd
from . import forward as fwd

KERNEL_MODULES = (fwd, bwd)
# aten ops that read device memory on the host (a sync): refused during a capture.
SYNCING_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "unique_dim", "_unique2")

_state = threading.local()


def is_capturing():
    """Whether a FakeGraph is capturing on this thread."""
    return getattr(_state, "graph", None) is not None


class FakeGraph:
    """launches: [(kernel, grid, args, kwargs)] in capture order; replays: how many replay() ran."""

    def __init__(self):
        self.launches, self.replays, self.captured = [], 0, False

    def replay(self):
        if not self.captured:
            raise RuntimeError("FakeGraph.replay: nothing was captured")
        for kernel, grid, args, kwargs in self.launches:
            kernel[grid](*args, **kwargs)
        self.replays += 1

    def reset(self):
        self.launches, self.captured = [], False


class _Recorder:
    """Takes a kernel's place during a capture: `kernel[grid](...)` appends to the graph."""

    def __init__(self, kernel, graph):
        self.kernel, self.graph = kernel, graph

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.graph.launches.append((self.kernel, tuple(grid), args, kwargs))
        return record


class _NoSyncInCapture(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        op = func.__name__.split(".")[0]
        if op in SYNCING_OPS:
            raise RuntimeError(f"{op} inside a graph capture: it reads device memory on the host, "
                               "which a CUDA graph capture refuses")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def capture(graph):
    """Within the block, kernel launches of forward.py/backward.py are recorded into `graph`."""
    if is_capturing():
        raise RuntimeError("a FakeGraph is already capturing on this thread")
    saved = [(module, name, getattr(module, name)) for module in KERNEL_MODULES for name in dir(module)
             if name.endswith("_kernel")]
    graph.reset()
    _state.graph = graph
    for module, name, kernel in saved:
        setattr(module, name, _Recorder(kernel, graph))
    try:
        with _NoSyncInCapture():
            yield graph
    finally:
        for module, name, kernel in saved:
            setattr(module, name, kernel)
        _state.graph = None
    graph.captured = True
