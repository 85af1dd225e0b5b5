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


@pytest.mark.parametrize("eager_first", [False, True], ids=["compiled_first", "eager_first"])
def test_default_model_compiles_fullgraph_with_inductor(eager_first, fresh_dynamo, monkeypatch):
    """A default-constructed model (backend 'auto'): the backend is chosen outside
    the traced region, inductor compiles one graph, forward and backward equal
    eager, and calls at the same shape never recompile."""
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    torch.manual_seed(0)
    model = rnnkernels.LSTM(8, 16, 2)
    eager = rnnkernels.LSTM(8, 16, 2)
    eager.load_state_dict(model.state_dict())
    x = torch.randn(5, 3, 8)
    if eager_first:
        model(x)
    compiled = torch.compile(model, fullgraph=True)
    for call in range(3):
        results = []
        for module, owner in ((compiled, model), (eager, eager)):
            leaf = x.clone().requires_grad_()
            out, (h, c) = module(leaf)
            (out.pow(2).sum() + h.sum() + c.sum()).backward()
            results.append({"output": out.detach(), "h_n": h.detach(), "c_n": c.detach(),
                            "grad input": leaf.grad,
                            **{f"grad {n}": p.grad.clone() for n, p in owner.named_parameters()}})
            for p in owner.parameters():
                p.grad = None
        assert_all_close(results[0], results[1], dtype=torch.float32)
    assert model.last_backend == eager.last_backend


def test_compiled_double_backward_raises_clearly(fresh_dynamo, monkeypatch):
    """AOTAutograd compiles no double backward: create_graph=True through a
    compiled layer raises torch's error instead of a wrong value."""
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)
    model = torch.compile(rnnkernels.GRU(3, 4), fullgraph=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    first, = torch.autograd.grad(model(x)[0].pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="create_graph|double backward"):
        torch.autograd.grad(first.pow(2).sum(), x)


def test_jit_trace_matches_eager(backend):
    """torch.jit.trace records the layer (TorchScript's script mode is not supported)."""
    _, eager = make_twins("gru", 4, 5, 1, backend=backend)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    traced = torch.jit.trace(eager, (x,))
    results = []
    for module in (traced, eager):
        leaf = x.clone().requires_grad_()
        out, h = module(leaf)
        (out.pow(2).sum() + h.sum()).backward()
        results.append({"output": out.detach(), "h_n": h.detach(), "grad input": leaf.grad})
    assert_all_close(results[0], results[1])
