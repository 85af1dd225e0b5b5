"""torch.func over functional_call of models with rnnkernels layers: every
transform gives torch.nn's values (float64). vmap, which torch.nn's layers do
not support, folds the mapped dimension into the batch (or loops over it when
a weight is mapped) and is checked against a Python loop over torch.nn."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

from helpers import make_twins
from tolerance import assert_close

KINDS = ["lstm", "lstm_proj", "gru", "rnn_tanh"]


class _Model(nn.Module):
    """linear -> recurrent layer -> sum over features: a scalar per sequence step."""

    def __init__(self, rnn):
        super().__init__()
        self.inp = nn.Linear(2, 3, dtype=torch.float64)
        self.rnn = rnn

    def forward(self, x):
        out, _ = self.rnn(torch.tanh(self.inp(x)))
        return out


def _models(kind, backend):
    theirs, ours = make_twins(kind, 3, 4, 1, backend=backend)
    model_theirs, model_ours = _Model(theirs), _Model(ours)
    model_ours.inp.load_state_dict(model_theirs.inp.state_dict())
    return model_theirs, model_ours


def _params(model):
    return {name: p.detach() for name, p in model.named_parameters()}


def _x(seed=0, steps=3, batch=2):
    return torch.randn(steps, batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _loss(model):
    def loss(params, x):
        return functional_call(model, params, (x,)).pow(2).sum()
    return loss


def _out(model, params):
    def out(x):
        return functional_call(model, params, (x,))
    return out


TRANSFORMS = {
    "grad": lambda m, p, x: grad(_loss(m))(p, x),
    "grad_x": lambda m, p, x: grad(_loss(m), argnums=1)(p, x),
    "grad_of_grad": lambda m, p, x: grad(lambda x: grad(_loss(m), argnums=1)(p, x).pow(2).sum())(x),
    "vjp": lambda m, p, x: vjp(_out(m, p), x)[1](torch.cos(_out(m, p)(x)))[0],
    "jvp": lambda m, p, x: jvp(_out(m, p), (x,), (torch.sin(x),))[1],
    "jacrev": lambda m, p, x: jacrev(_out(m, p))(x),
    "jacfwd": lambda m, p, x: jacfwd(_out(m, p))(x),
    "hessian": lambda m, p, x: hessian(lambda x: _loss(m)(p, x))(x[:2]),
}


def _flat(result):
    if isinstance(result, dict):
        return result
    return {"result": result}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("kind", KINDS)
def test_transform_matches_torch_nn(kind, transform, backend):
    theirs, ours = _models(kind, backend)
    x = _x()
    expected = _flat(TRANSFORMS[transform](theirs, _params(theirs), x))
    actual = _flat(TRANSFORMS[transform](ours, _params(ours), x))
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_close(f"{transform} {name}", actual[name], expected[name])


def test_per_sample_gradients_vmap_of_grad(backend):
    """vmap(grad) over examples: each example's gradient equals torch.nn's on its own."""
    theirs, ours = _models("gru", backend)
    xs = _x(seed=1, batch=1).expand(3, 2, 2).permute(1, 0, 2).contiguous().unsqueeze(2)  # [N=2, T=3, B=1, 2]
    xs = xs + torch.randn(xs.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    per_sample = vmap(grad(_loss(ours)), in_dims=(None, 0))(_params(ours), xs)
    for n in range(xs.shape[0]):
        expected = grad(_loss(theirs))(_params(theirs), xs[n])
        for name, value in expected.items():
            assert_close(f"sample {n} grad {name}", per_sample[name][n], value)


@pytest.mark.parametrize("mapped", ["input", "weights"])
def test_vmap_forward(mapped, backend):
    """vmap over inputs (folded into the batch) or over a weight (one run per entry)."""
    theirs, ours = _models("lstm", backend)
    if mapped == "input":
        xs = torch.stack([_x(seed=s) for s in range(3)])
        actual = vmap(_out(ours, _params(ours)))(xs)
        expected = torch.stack([theirs(x) for x in xs])
    else:
        x = _x(seed=4)
        stacked = torch.stack([_params(ours)["rnn.weight_hh_l0"] * s for s in (0.5, 1.0, 1.5)])

        def with_weight(w, model):
            return functional_call(model, {**_params(model), "rnn.weight_hh_l0": w}, (x,))

        actual = vmap(with_weight, in_dims=(0, None))(stacked, ours)
        expected = torch.stack([with_weight(w, theirs) for w in stacked])
    assert_close("vmapped output", actual, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_ad_dual_tensors_match_torch_nn(kind, backend):
    """torch.autograd.forward_ad (no torch.func transform active): the jvp rule
    may not open a second dual level, and still gives torch.nn's tangent."""
    import torch.autograd.forward_ad as fwAD

    theirs, ours = make_twins(kind, 3, 4, 1, backend=backend)
    x = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    tangent = torch.sin(x + 1)
    results = []
    for module in (theirs, ours):
        with fwAD.dual_level():
            results.append(fwAD.unpack_dual(module(fwAD.make_dual(x, tangent))[0]).tangent)
    assert_close("output tangent", results[1], results[0])
