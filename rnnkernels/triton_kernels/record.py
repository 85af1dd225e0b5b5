"""Record what the launchers launch, without running a kernel, as JSON-ready
specs that compile_worker.py compiles for a GPU target on any machine.

The launchers run on CPU tensors with every kernel of forward.py,
backward.py and persistent.py replaced by a recorder, and with the GPU's tile choices (the
interpreter's are not what a GPU runs). A spec keeps what decides the JIT's
specialization and nothing else: each tensor's dtype and 16-byte alignment,
each int's class (1, a multiple of 16, other; 32 or 64 bits) as a stand-in
value of that class, the constexprs and the launch options. Launches that
differ only in grid or in int values of one class give one spec.
"""

import contextlib
import json

import torch
import triton.language as tl

from . import backward as bwd
from . import forward as fwd
from . import launch
from . import persistent

KERNEL_MODULES = {"forward": fwd, "backward": bwd, "persistent": persistent}


def kernel_names():
    """{module key: names of the @triton.jit kernels the launchers may launch}."""
    return {key: [name for name in dir(module) if name.endswith("_kernel")]
            for key, module in KERNEL_MODULES.items()}


def _int_class(value):
    """A stand-in of value's specialization class: triton makes 1 a constant,
    marks multiples of 16 divisible, and widens to 64 bits past int32."""
    if not -2**31 <= value < 2**31:
        return value
    if value == 1:
        return 1
    return 16 if value % 16 == 0 else 17


def _arg(value):
    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "align16": value.data_ptr() % 16 == 0}
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _int_class(value)
    if isinstance(value, float):
        return {"float": value}
    raise TypeError(f"a kernel argument of type {type(value).__name__} has no spec")


def _option(value):
    if isinstance(value, tl.dtype):  # by its name in triton.language, which both 3.6 and 3.9 have
        return {"tl_dtype": next(n for n in ("float32", "float64", "float16", "bfloat16") if getattr(tl, n) == value)}
    return value


class Recording:
    """specs: {key: spec} of every distinct launch; launched: kernel names in
    launch order (clear it to see what one call launches)."""

    def __init__(self):
        self.specs, self.launched = {}, []


class _Recorder:
    def __init__(self, module_key, name, recording):
        self.module_key, self.name, self.recording = module_key, name, recording

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            spec = {"module": self.module_key, "kernel": self.name, "args": [_arg(a) for a in args],
                    "options": {k: _option(v) for k, v in sorted(kwargs.items())}}
            key = json.dumps(spec, sort_keys=True)
            self.recording.specs.setdefault(key, dict(spec, grid=[int(g) for g in grid]))
            self.recording.launched.append(self.name)
        return record


@contextlib.contextmanager
def recording():
    """Within the block the launchers record into the yielded Recording
    instead of launching, with the tiles they pick on a GPU."""
    specs = Recording()
    saved = [(launch, "is_interpreted", launch.is_interpreted)]
    launch.is_interpreted = lambda: False
    for key, names in kernel_names().items():
        module = KERNEL_MODULES[key]
        for name in names:
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, _Recorder(key, name, specs))
    try:
        yield specs
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def record_case(cell, dtype, steps, batch, hidden, proj=None, lengths=False, save=True, tbptt=None):
    """Run launch.forward (and launch.backward when save) once on CPU tensors
    of these sizes; under recording() this records their launches."""
    g = {"lstm": 4, "gru": 3}.get(cell, 1)
    hidden_out = proj or hidden
    xg = torch.zeros(steps, batch, g * hidden, dtype=dtype)
    w_hh = torch.zeros(g * hidden, hidden_out, dtype=dtype)
    h0 = torch.zeros(batch, hidden_out, dtype=dtype)
    c0 = torch.zeros(batch, hidden, dtype=dtype) if cell == "lstm" else None
    b_hn = torch.zeros(hidden, dtype=dtype) if cell == "gru" else None
    w_hr = torch.zeros(proj, hidden, dtype=dtype) if proj else None
    lens = torch.full((batch,), steps, dtype=torch.int64) if lengths else None
    y, h_n, c_n, hs, cs, gates, aux = launch.forward(cell, xg, w_hh, h0, c0, b_hn, w_hr, lens, save)
    if save:
        launch.backward(cell, tbptt or 0, w_hh, w_hr, lens, hs, cs, gates, aux, torch.zeros_like(y),
                        torch.zeros_like(h_n), torch.zeros_like(c_n) if cell == "lstm" else None, b_hn is not None)
