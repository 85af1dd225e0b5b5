"""A model written for torch.nn.LSTM / GRU trains identically with its
recurrent layer swapped for rnnkernels': embedding -> 2-layer LSTM (with
inter-layer dropout) -> linear, Adam, the hidden state carried between
batches and detached (truncated BPTT the classic way). float64: every loss
and every final weight agrees to 1e-9."""

import copy

import pytest
import torch
from torch import nn

import rnnkernels

VOCAB, WIDTH, HIDDEN, BATCH, CHUNK, STEPS = 17, 8, 12, 4, 9, 12


class CharModel(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.rnn = rnn
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens, state):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


def _stream():
    """A repeated random phrase (learnable), one row per offset, read in chunks of CHUNK steps."""
    phrase = torch.randint(VOCAB, (23,), generator=torch.Generator().manual_seed(0))
    text = phrase.repeat(STEPS * CHUNK // 23 + 2)
    tokens = torch.stack([text[5 * row:5 * row + STEPS * CHUNK + 1] for row in range(BATCH)])
    return [(tokens[:, i:i + CHUNK], tokens[:, i + 1:i + 1 + CHUNK]) for i in range(0, STEPS * CHUNK, CHUNK)]


def _train(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(42)  # the dropout masks
    losses, state = [], None
    for inputs, targets in _stream():
        logits, state = model(inputs, state)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("torch_cls, ours_cls", [(nn.LSTM, rnnkernels.LSTM), (nn.GRU, rnnkernels.GRU)],
                         ids=["lstm", "gru"])
def test_swapped_model_trains_identically(torch_cls, ours_cls, backend):
    torch.manual_seed(0)
    original = CharModel(torch_cls(WIDTH, HIDDEN, 2, batch_first=True, dropout=0.25)).double()
    swapped = copy.deepcopy(original)
    swapped.rnn = ours_cls(WIDTH, HIDDEN, 2, batch_first=True, dropout=0.25, backend=backend).double()
    swapped.rnn.load_state_dict(original.rnn.state_dict())

    expected, actual = _train(original), _train(swapped)
    assert expected[-1] < expected[0], "the model did not learn: the comparison would be vacuous"
    for step, (a, b) in enumerate(zip(actual, expected, strict=True)):
        assert abs(a - b) <= 1e-9, f"loss at step {step}: {a!r} vs torch.nn {b!r}"
    for (name, a), (_, b) in zip(swapped.named_parameters(), original.named_parameters(), strict=True):
        assert (a - b).abs().max().item() <= 1e-9, f"{name} after training"
    assert swapped.rnn.last_backend == backend
