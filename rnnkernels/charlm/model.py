"""The classic recurrent language model: embedding -> multi-layer LSTM or GRU
(dropout between layers) -> dropout -> linear over the vocabulary.

It is built from torch.nn layers, so its state_dict is torch.nn's; `build_model`
then converts it to rnnkernels (rnnkernels.convert), which keeps the weights.
"""

from dataclasses import asdict, dataclass

from torch import nn

from ..convert import convert

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
LAYER_KINDS = ("rnnkernels", "torch.nn")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1

    def as_dict(self):
        return asdict(self)

    def describe(self):
        return (f"{self.cell.upper()} {self.layers} x {self.hidden}, embedding {self.embed}, "
                f"dropout {self.dropout}, vocabulary {self.vocab_size}")


class CharLM(nn.Module):
    """tokens [T, B] (sequence first) -> logits [T, B, V], recurrent state."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        self.rnn = CELLS[config.cell](config.embed, config.hidden, config.layers,
                                      dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(self.drop(out)), state

    def logits_of(self, rnn_output):
        """The head alone, for callers that run self.rnn themselves (chunked BPTT)."""
        return self.head(self.drop(rnn_output))


def build_model(config, layers="rnnkernels", backend="auto", tbptt=None):
    """A CharLM whose recurrent layers are rnnkernels' (on `backend`, with
    in-kernel `tbptt`) or torch.nn's; same initialisation for the same seed."""
    model = CharLM(config)
    if layers == "rnnkernels":
        convert(model, backend=backend, tbptt=tbptt)
    elif layers != "torch.nn":
        raise ValueError(f"layers must be one of {LAYER_KINDS}, got {layers!r}")
    return model


def detach_state(state):
    """The state carried to the next chunk, cut from the graph of this one."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())
