"""The drop-in surface beyond forward: parameters (names, shapes, order,
initialisation), state_dict both ways, pickling, flatten_parameters, weight
reassignment and tying, parametrizations, dtype moves, repr, isinstance."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import rnnkernels
from helpers import CELL_KINDS, MODULE_KINDS, forward_backward, make_input, make_twins
from tolerance import assert_all_close

CONFIGS = [
    pytest.param(kind, dict(num_layers=layers, bidirectional=bidir, bias=bias),
                 id=f"{kind}-L{layers}-{'bidir' if bidir else 'unidir'}-{'bias' if bias else 'nobias'}")
    for kind in MODULE_KINDS for layers in (1, 2) for bidir in (False, True) for bias in (True, False)
]


def _construct_both(kind, kwargs, seed=0):
    theirs_cls, ours_cls, extra = MODULE_KINDS[kind]
    torch.manual_seed(seed)
    theirs = theirs_cls(4, 5, **extra, **kwargs)
    torch.manual_seed(seed)
    ours = ours_cls(4, 5, **extra, **kwargs)
    return theirs, ours


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_parameters_and_initialisation_match(kind, kwargs):
    theirs, ours = _construct_both(kind, kwargs)
    theirs_params, ours_params = list(theirs.named_parameters()), list(ours.named_parameters())
    assert [n for n, _ in ours_params] == [n for n, _ in theirs_params]
    for (name, a), (_, b) in zip(ours_params, theirs_params, strict=True):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        assert torch.equal(a, b), f"{name}: initialised differently under the same seed"
    assert isinstance(ours, type(theirs))
    assert ours._all_weights == theirs._all_weights


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_state_dict_loads_strictly_both_ways(kind, kwargs):
    theirs, ours = _construct_both(kind, kwargs)
    fresh_theirs, fresh_ours = _construct_both(kind, kwargs, seed=1)
    fresh_ours.load_state_dict(theirs.state_dict(), strict=True)
    fresh_theirs.load_state_dict(ours.state_dict(), strict=True)
    for name, value in theirs.state_dict().items():
        assert torch.equal(fresh_ours.state_dict()[name], value), name
        assert torch.equal(fresh_theirs.state_dict()[name], value), name


@pytest.mark.parametrize("kind", list(CELL_KINDS))
def test_cells_state_dict_and_init(kind):
    theirs_cls, ours_cls, extra = CELL_KINDS[kind]
    torch.manual_seed(0)
    theirs = theirs_cls(4, 5, **extra)
    torch.manual_seed(0)
    ours = ours_cls(4, 5, **extra)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    theirs_cls(4, 5, **extra).load_state_dict(ours.state_dict(), strict=True)
    repr_theirs = repr(theirs).replace(type(theirs).__name__, "")
    assert repr(ours).replace(type(ours).__name__, "") == repr_theirs


def _same_behaviour(a, b, kind="lstm"):
    def run(module):
        return forward_backward(module, make_input("dense", 4, 2, 3, seed=1), seed=2)
    assert_all_close(run(a), run(b))


def test_pickle_torch_save_and_deepcopy_keep_options(backend):
    _, ours = make_twins("lstm", 3, 5, 2, backend=backend, tbptt=2)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for clone in (loaded, pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert isinstance(clone, rnnkernels.LSTM)
        assert (clone.backend, clone.tbptt) == (backend, 2)
        _same_behaviour(clone, ours)


def test_flatten_parameters_and_dtype_moves():
    lstm = rnnkernels.LSTM(3, 5, 2, bidirectional=True)
    lstm.flatten_parameters()
    lstm = lstm.double()
    assert all(p.dtype == torch.float64 for p in lstm.parameters())
    out, _ = lstm(torch.randn(4, 2, 3, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert lstm.to(torch.float32)(torch.randn(4, 2, 3))[0].dtype == torch.float32


def test_reassigned_weight_is_used(backend):
    theirs, ours = make_twins("gru", 3, 5, 2, backend=backend)
    new = nn.Parameter(torch.randn_like(theirs.weight_hh_l1))
    theirs.weight_hh_l1 = new
    ours.weight_hh_l1 = nn.Parameter(new.detach().clone())
    _same_behaviour(ours, theirs)


def test_weights_tied_between_modules(backend):
    a = rnnkernels.LSTM(5, 5, dtype=torch.float64, backend=backend)
    b = rnnkernels.LSTM(5, 5, dtype=torch.float64, backend=backend)
    b.weight_hh_l0 = a.weight_hh_l0
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    (a(x)[0].sum() + b(x)[0].sum()).backward()
    assert b.weight_hh_l0 is a.weight_hh_l0
    params = list(nn.ModuleList([a, b]).parameters())
    assert len(params) == len(list(a.parameters())) * 2 - 1
    assert a.weight_hh_l0.grad is not None


def test_weight_norm_parametrization(backend):
    """A parametrized weight is recomputed on every access and read by name."""
    _, ours = make_twins("lstm", 3, 5, backend=backend)
    nn.utils.parametrizations.weight_norm(ours, "weight_hh_l0")
    plain = rnnkernels.LSTM(3, 5, dtype=torch.float64, backend=backend)
    with torch.no_grad():
        for name, _ in plain.named_parameters():
            getattr(plain, name).copy_(getattr(ours, name))
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    assert torch.allclose(ours(x)[0], plain(x)[0], atol=1e-12)
    ours(x)[0].sum().backward()
    original = ours.parametrizations.weight_hh_l0.original0
    assert original.grad is not None and torch.isfinite(original.grad).all()
    assert parametrize.is_parametrized(ours, "weight_hh_l0")


def test_repr_extends_torch_nn():
    assert repr(rnnkernels.LSTM(3, 5, 2)) == repr(nn.LSTM(3, 5, 2))
    assert repr(rnnkernels.GRU(3, 5, backend="reference", tbptt=8)) == (
        "GRU(3, 5, backend='reference', tbptt=8)")
    assert repr(rnnkernels.RNNCell(3, 5, backend="reference")) == (
        "RNNCell(3, 5, backend='reference')")


def test_backend_and_tbptt_settable_after_construction(backend):
    module = rnnkernels.GRU(3, 5)
    module.backend, module.tbptt = backend, 4
    module(torch.randn(6, 2, 3))
    assert (module.backend, module.tbptt, module.last_backend) == (backend, 4, backend)
    module.tbptt = None
    assert module.tbptt is None
