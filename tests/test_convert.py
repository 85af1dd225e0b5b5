"""rnnkernels.convert / to_torch: a nested model's recurrent layers swapped in place
and back, with outputs and every gradient equal to torch.nn's (float64), and
everything a user attached to the layers kept."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import rnnkernels
from rnnkernels.convert import convert, to_torch

TORCH_CLASSES = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)
OUR_CLASSES = (rnnkernels.LSTM, rnnkernels.GRU, rnnkernels.RNN,
               rnnkernels.LSTMCell, rnnkernels.GRUCell, rnnkernels.RNNCell)
FEATURES, HIDDEN, STEPS, BATCH = 3, 5, 6, 2


class Nested(nn.Module):
    """Every recurrent class, at several depths and in every kind of container."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(FEATURES, FEATURES),
            nn.LSTM(FEATURES, HIDDEN, num_layers=2, proj_size=2, bidirectional=True),
        )
        self.blocks = nn.ModuleDict({
            "gru": nn.GRU(4, HIDDEN, batch_first=True),
            "rnns": nn.ModuleList([nn.RNN(HIDDEN, HIDDEN, nonlinearity="relu"), nn.RNN(HIDDEN, 4)]),
        })
        self.cells = nn.ModuleList([nn.LSTMCell(4, HIDDEN), nn.GRUCell(HIDDEN, HIDDEN),
                                    nn.RNNCell(HIDDEN, HIDDEN, nonlinearity="relu")])

    def forward(self, x):
        y, _ = self.encoder[1](self.encoder[0](x))
        y, _ = self.blocks["gru"](y.transpose(0, 1))
        y = y.transpose(0, 1)
        for rnn in self.blocks["rnns"]:
            y, _ = rnn(y)
        h, c = self.cells[0](y[0])
        for step in range(1, y.size(0)):
            h, c = self.cells[0](y[step], (h, c))
        h = self.cells[1](c, h)
        return y, self.cells[2](h, c)


def _outputs_and_grads(model, x):
    """Every output and every gradient, by name, for one random upstream gradient."""
    x = x.detach().clone().requires_grad_()
    model.zero_grad()
    outputs = model(x)
    generator = torch.Generator().manual_seed(1)
    loss = sum((out * torch.randn(out.shape, generator=generator, dtype=out.dtype)).sum() for out in outputs)
    loss.backward()
    results = {f"output{i}": out.detach() for i, out in enumerate(outputs)}
    results["grad input"] = x.grad
    results.update({f"grad {name}": p.grad for name, p in model.named_parameters()})
    return results


def _assert_same(theirs, ours):
    assert theirs.keys() == ours.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-10, atol=1e-12, msg=name)


def _recurrent_types(model):
    return [type(m) for m in model.modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]


@pytest.fixture
def nested():
    torch.manual_seed(0)
    return Nested().double()


def test_nested_model_matches_torch_outputs_and_gradients(nested, backend):  # backend: conftest's fixture
    original = copy.deepcopy(nested)
    x = torch.randn(STEPS, BATCH, FEATURES, dtype=torch.float64)
    assert convert(nested, backend=backend) is nested
    assert {t.__name__ for t in _recurrent_types(nested)} == {c.__name__ for c in TORCH_CLASSES}
    assert all(t in OUR_CLASSES for t in _recurrent_types(nested))
    _assert_same(_outputs_and_grads(original, x), _outputs_and_grads(nested, x))
    assert {m.last_backend for m in nested.modules() if type(m) in OUR_CLASSES} == {backend}


def test_round_trip_restores_torch_classes_and_state(nested):
    original = copy.deepcopy(nested)
    to_torch(convert(nested, tbptt=3))
    assert _recurrent_types(nested) == _recurrent_types(original)
    assert all(t in TORCH_CLASSES for t in _recurrent_types(nested))
    for module in nested.modules():
        assert not {"_backend", "_tbptt", "last_backend"} & vars(module).keys()
    for (name, theirs), ours in zip(original.state_dict().items(), nested.state_dict().values(), strict=True):
        assert torch.equal(theirs, ours), name
    x = torch.randn(STEPS, BATCH, FEATURES, dtype=torch.float64)
    _assert_same(_outputs_and_grads(original, x), _outputs_and_grads(nested, x))


def test_parameters_stay_the_same_objects_so_an_optimizer_keeps_working(nested):
    before = dict(nested.named_parameters())
    optimizer = torch.optim.SGD(nested.parameters(), lr=0.1)
    convert(nested)
    assert all(p is before[name] for name, p in nested.named_parameters())
    snapshot = {name: p.detach().clone() for name, p in before.items()}
    sum(out.sum() for out in nested(torch.randn(STEPS, BATCH, FEATURES, dtype=torch.float64))).backward()
    optimizer.step()
    changed = [name for name, p in nested.named_parameters() if not torch.equal(p, snapshot[name])]
    assert len(changed) == len(snapshot)


def test_options_training_mode_dtype_and_device_are_kept(nested):
    nested.blocks["gru"].eval()
    convert(nested, backend="reference", tbptt=4)
    gru, cell = nested.blocks["gru"], nested.cells[0]
    assert (gru.backend, gru.tbptt, cell.backend) == ("reference", 4, "reference")
    assert not gru.training and nested.encoder[1].training
    assert {p.dtype for p in nested.parameters()} == {torch.float64}
    assert {p.device.type for p in nested.parameters()} == {"cpu"}
    convert(nested, backend="auto")  # already converted: takes the new options
    assert (gru.backend, gru.tbptt) == ("auto", None)


def test_bare_layer_is_converted_and_returned():
    lstm = nn.LSTM(FEATURES, HIDDEN)
    converted = convert(lstm)
    assert converted is lstm and type(converted) is rnnkernels.LSTM
    assert isinstance(converted, nn.LSTM)
    assert type(to_torch(converted)) is nn.LSTM


def test_hooks_survive_conversion():
    calls = []
    lstm = nn.LSTM(FEATURES, HIDDEN, dtype=torch.float64)
    lstm.register_forward_pre_hook(lambda module, args: calls.append("pre"))
    lstm.register_forward_hook(lambda module, args, out: calls.append(type(module).__name__))
    lstm.register_state_dict_post_hook(lambda module, state, prefix, local: state.update(extra=torch.ones(1)))
    convert(lstm)
    lstm(torch.randn(STEPS, BATCH, FEATURES, dtype=torch.float64))
    assert calls == ["pre", "LSTM"] and lstm.last_backend is not None
    assert "extra" in lstm.state_dict()


def test_weight_sharing_between_layers_is_kept():
    model = nn.ModuleList([nn.GRU(HIDDEN, HIDDEN), nn.GRU(HIDDEN, HIDDEN)])
    model[1].weight_hh_l0 = model[0].weight_hh_l0
    convert(model)
    assert model[1].weight_hh_l0 is model[0].weight_hh_l0
    assert len(list(model.parameters())) == 7


def test_parametrized_weight_is_kept_and_can_be_removed_later():
    theirs = nn.LSTM(FEATURES, HIDDEN, dtype=torch.float64)
    weight_norm(theirs, "weight_hh_l0")
    ours = convert(copy.deepcopy(theirs))
    assert isinstance(ours, rnnkernels.LSTM) and parametrize.is_parametrized(ours, "weight_hh_l0")
    x = torch.randn(STEPS, BATCH, FEATURES, dtype=torch.float64)

    def run(module):
        module.zero_grad()
        out, _ = module(x)
        out.pow(2).sum().backward()
        return {"output": out.detach(), **{n: p.grad for n, p in module.named_parameters()}}

    _assert_same(run(theirs), run(ours))
    parametrize.remove_parametrizations(ours, "weight_hh_l0")
    assert type(ours) is rnnkernels.LSTM
    weight_norm(ours, "weight_hh_l0")
    assert type(to_torch(ours)).__bases__ == (nn.LSTM,)


def test_user_subclass_is_left_alone():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(FEATURES, HIDDEN))
    convert(model)
    assert type(model[0]) is MyLSTM


def test_converted_model_pickles_and_deep_copies(nested):
    convert(nested, backend="reference")
    buffer = io.BytesIO()
    torch.save(nested, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded.blocks["gru"]) is rnnkernels.GRU and loaded.blocks["gru"].backend == "reference"
    assert type(pickle.loads(pickle.dumps(nested)).cells[1]) is rnnkernels.GRUCell
    assert type(copy.deepcopy(nested).encoder[1]) is rnnkernels.LSTM


def test_bad_options_change_nothing(nested):
    with pytest.raises(ValueError, match="backend must be one of"):
        convert(nested, backend="fast")
    with pytest.raises(ValueError, match="tbptt"):
        convert(nested, tbptt=0)
    assert all(t in TORCH_CLASSES for t in _recurrent_types(nested))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        convert("not a model")
