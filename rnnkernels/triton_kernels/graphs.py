"""The 'step-graph' path: the step path's loop of launches captured once in a
CUDA graph per shape and replayed, so a call costs one graph launch instead
of T (forward) or T+1 (backward) Python kernel launches of ~20 us each.

Ownership: copy in, copy out. A graph bakes in the pointers it was captured
with, so each cached graph owns a set of fixed buffers, one twin per tensor
the loop touches. A call copies the tensors the loop reads into the twins,
replays, and copies the tensors the loop writes back into the caller's own
freshly allocated tensors (launch.py allocates them as on the step path).
What the caller receives (y, h_n, and the saved states and gates that
backward gets later) therefore never aliases a graph's buffers, so two
layers of one shape, the two directions of a bidirectional layer, and two
forwards before one backward (gradient accumulation, truncated-BPTT chunks)
cannot overwrite each other's results, whatever the caller keeps alive.

Why copies, against the alternatives:
- A pool of graphs per shape, handing its buffers out, copies nothing but
  must know when every handed-out tensor (and every view of it, and what
  autograd saved) is dead before replaying that graph again; torch exposes
  that only through private storage refcounts, and a caller who keeps `y`
  pins a graph forever. One wrong answer there corrupts results silently.
- A device-side pointer table copies nothing but changes every step
  kernel's signature (pointers loaded from memory), in the kernels that the
  sequence and persistent paths share.
- Copies cost bandwidth, not latency: per layer call the forward moves xg in
  and y, states and gates out; the backward moves dy, states and gates in
  and dG out, each at memory speed. *est.* for an LSTM at B=16, H=768,
  T=1024, fp32: about 0.55 GB forward and 0.75 GB backward, 0.2-0.3 ms each
  on an H100's ~3 TB/s, against ~2-5 ms of recurrence; nothing was measured.
- Memory: each cached graph holds one layer call's buffers (for the forward
  above ~0.55 GB). The cache key is the shape, not the layer, so all layers
  and directions of a stack share one forward and one backward graph per T.

Cache: least recently used, at most CACHE.capacity graphs (default 8, or
RNNKERNELS_GRAPH_CACHE_SIZE); a variable T gives one graph per T. The key is
the loop, its constants (sizes, tiles, flags, tbptt, precision) and each
buffer's shape and dtype, the device and the current stream: calls on one
stream run in order, so a call's copy-in never overtakes an earlier call's
copy-out; another stream gets graphs of its own. A lock keeps two threads
from interleaving their copy-in, replay and copy-out on one graph.

Capture: on a miss the loop first runs once directly on the fixed buffers,
which compiles (warms up) every kernel and specialization the capture will
record, and computes this call's result; then torch.cuda.graph captures it
into a graph that shares one memory pool per device with every other
(nothing is allocated inside the capture: the buffers exist before it).
torch.cuda.graph also syncs the device and empties torch's allocator cache
first, so a miss costs more than the launches it records. Nothing in the
loop syncs or reads device memory on the host. When the caller is already
capturing (torch.cuda.is_current_stream_capturing(), e.g. torch.compile's
reduce-overhead mode) the loop launches directly into the caller's graph.

On CPU tensors (Triton's interpreter) the graph is fake_graph.FakeGraph, a
stand-in that records the launches and replays them on the same buffers.

Not yet run on a GPU. One open question there: torch.compile's
reduce-overhead mode first runs the model eagerly (a warm-up, not a
capture) with the thread's allocations routed to its own graph pool, so a
miss at that moment allocates these fixed buffers in that pool, which it
does not know about (tests/test_triton_graphs.py's reduce-overhead test is
the check).
"""

import collections
import contextlib
import functools
import os
import threading

import torch

from . import fake_graph

DEFAULT_CACHE_SIZE = 8


def capturing(device):
    """Whether work on device's current stream is being captured by someone's graph."""
    if device.type == "cuda":
        return torch.cuda.is_current_stream_capturing()
    return fake_graph.is_capturing()


class _Entry:
    """One captured loop: its graph and the fixed buffers the graph's launches point at."""

    def __init__(self, graph, buffers):
        self.graph, self.buffers = graph, buffers


class GraphCache:
    """Least-recently-used {key: _Entry}, at most `capacity` entries."""

    def __init__(self, capacity):
        self.capacity = capacity
        self._entries = collections.OrderedDict()
        self.lock = threading.Lock()

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)  # its graph and buffers are freed with it

    def clear(self):
        self._entries.clear()


def cache_size_from_environment():
    """RNNKERNELS_GRAPH_CACHE_SIZE (a positive int) or DEFAULT_CACHE_SIZE."""
    value = os.environ.get("RNNKERNELS_GRAPH_CACHE_SIZE", "")
    if not value:
        return DEFAULT_CACHE_SIZE
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"RNNKERNELS_GRAPH_CACHE_SIZE must be a positive integer (graphs kept), got {value!r}")
    return int(value)


CACHE = GraphCache(cache_size_from_environment())
_POOLS = {}


def _frozen(value):
    """value as a hashable key part (dicts and lists of constants become tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _key(loop, buffers, device):
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    layout = tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(buffers.items()))
    return (loop.func.__module__, loop.func.__qualname__, _frozen(loop.args), _frozen(loop.keywords),
            layout, str(device), stream)


def _shared_pool(device):
    """One graph memory pool per device, shared by every capture."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _POOLS:
        _POOLS[index] = torch.cuda.graph_pool_handle()
    return _POOLS[index]


def _capture(loop, buffers, device):
    if device.type == "cuda":
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (a DataLoader's pin-memory
        # thread, another model) neither break this capture nor get refused by it
        with torch.cuda.graph(graph, pool=_shared_pool(device), capture_error_mode="thread_local"):
            loop(buffers)
        return graph
    graph = fake_graph.FakeGraph()
    with fake_graph.capture(graph):
        loop(buffers)
    return graph


def _copy_in(fixed, tensors, reads):
    for name, index in reads.items():
        if index is None:
            fixed[name].copy_(tensors[name])
        else:
            fixed[name][index].copy_(tensors[name][index])


def _copy_out(fixed, tensors, writes):
    for name in writes:
        tensors[name].copy_(fixed[name])


def run_steps(loop, tensors, reads, writes):
    """Run loop(tensors) through a cached graph, as if it ran on `tensors` directly.

    loop: a functools.partial whose arguments are hashable constants (they
        join the cache key) and whose last argument is {name: tensor}; it only
        launches kernels on those tensors (no allocation, no sync).
    tensors: every tensor the loop's kernels receive, by name, contiguous.
    reads: {name: None (the whole tensor) or an index (the part the loop
        reads, e.g. 0 for the initial state's slot)}: copied in before a replay.
    writes: names of the tensors whose contents the caller needs afterwards:
        copied out after it. Tensors in neither are scratch.
    Returns 'direct' (the caller is capturing, or there is nothing to
    compute), 'captured' or 'replayed'.
    """
    if not isinstance(loop, functools.partial):
        raise TypeError(f"run_steps needs a functools.partial over constants, got {type(loop).__name__}")
    device = next(iter(tensors.values())).device
    if capturing(device) or any(tensors[name].numel() == 0 for name in writes):  # or an empty graph (B = 0)
        loop(tensors)
        return "direct"
    key = _key(loop, tensors, device)
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    # on the tensors' device, whatever is current; no autograd history on the fixed buffers
    with CACHE.lock, on_device, torch.no_grad():
        entry = CACHE.get(key)
        if entry is None:
            with torch.inference_mode(False):  # buffers that later calls outside inference mode may write
                fixed = {name: torch.empty_like(t, memory_format=torch.contiguous_format)
                         for name, t in tensors.items()}
            _copy_in(fixed, tensors, reads)
            loop(fixed)  # the warm-up: compiles every kernel the capture records, and computes this call
            entry = _Entry(_capture(loop, fixed, device), fixed)
            CACHE.put(key, entry)
            outcome = "captured"
        else:
            _copy_in(entry.buffers, tensors, reads)
            entry.graph.replay()
            outcome = "replayed"
        _copy_out(entry.buffers, tensors, writes)
    return outcome
