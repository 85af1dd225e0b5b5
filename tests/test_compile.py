"""torch.compile over rnnkernels modules. Dynamo treats every nn.RNNBase
subclass as an RNN: without torch._dynamo.config.allow_rnn it runs the module
eagerly (a graph break); with it, the cpu backend's ops trace into one graph
through their fake implementations."""

import pytest
import torch
import torch._dynamo

import rnnkernels
from helpers import forward_backward, make_hx, make_input, make_twins
from tolerance import assert_all_close


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Compiled:
    """A compiled module that still reports its parameters, for forward_backward."""

    def __init__(self, module, **options):
        self.module, self.compiled = module, torch.compile(module, backend="aot_eager", **options)

    def named_parameters(self):
        return self.module.named_parameters()

    def __call__(self, *args):
        return self.compiled(*args)


def _run(module, like):
    """forward_backward of `module` with an hx shaped for the rnnkernels module `like`."""
    return forward_backward(module, make_input("dense", 5, 3, 4, seed=1), make_hx(like, 3, seed=2), seed=3)


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
@pytest.mark.parametrize("compiled_backend", ["cpu", "triton"])
def test_fullgraph_compile_matches_eager(kind, compiled_backend, fresh_dynamo, monkeypatch):
    if compiled_backend not in rnnkernels.available_backends():
        pytest.skip(f"the {compiled_backend} backend does not run here")
    if compiled_backend == "triton" and torch.cuda.is_available():
        pytest.skip("the triton backend runs CUDA tensors here; tests/test_triton_kernels.py compiles it on the GPU")
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)
    _, eager = make_twins(kind, 4, 5, 2, bidirectional=True, backend=compiled_backend)
    _, to_compile = make_twins(kind, 4, 5, 2, bidirectional=True, backend=compiled_backend)
    to_compile.load_state_dict(eager.state_dict())
    assert_all_close(_run(Compiled(to_compile, fullgraph=True), to_compile), _run(eager, eager))


def test_default_compile_runs_the_module_eagerly(backend, fresh_dynamo):
    _, eager = make_twins("lstm", 4, 5, 2, backend=backend)
    _, to_compile = make_twins("lstm", 4, 5, 2, backend=backend)
    to_compile.load_state_dict(eager.state_dict())
    assert_all_close(_run(Compiled(to_compile), to_compile), _run(eager, eager))
