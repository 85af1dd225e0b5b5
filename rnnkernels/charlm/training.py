"""Training with truncated BPTT: the training text as batch streams, walked in
chunks with the recurrent state carried across chunks and detached; inside a
chunk, rnnkernels' in-kernel `tbptt` cuts the gradient every k steps in one
forward and one backward call. A torch.nn model gets the same gradient by
running the chunk in pieces of k steps with the state detached between them.
Adam, gradient-norm clipping, validation perplexity at intervals."""

import math
import time
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .corpus import batch_streams
from .model import detach_state
from .progress import Progress


@dataclass
class TrainSettings:
    batch: int = 32
    seq_len: int = 128        # characters per stream per optimizer step
    tbptt: int | None = 64    # gradient truncation inside a chunk; None: the whole chunk
    lr: float = 3e-3
    clip: float = 1.0
    max_steps: int = 500
    eval_every: int = 100
    eval_chars: int = 50_000  # validation characters per evaluation (the first ones)
    seed: int = 0


@dataclass
class History:
    label: str
    losses: list = field(default_factory=list)       # training loss per step, nats/char
    evals: list = field(default_factory=list)        # (step, validation loss)
    train_seconds: float = 0.0                       # without the evaluations
    chars: int = 0

    @property
    def chars_per_second(self):
        return self.chars / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def final_valid_loss(self):
        return self.evals[-1][1] if self.evals else math.nan


def chunk_logits(model, inputs, state, tbptt):
    """Logits [T, B, V] of one chunk and the state after it. An rnnkernels layer
    truncates the gradient itself (its `tbptt`); a torch.nn layer runs pieces of
    `tbptt` steps, detaching the state between them, which is the same gradient."""
    embedded = model.embed(inputs)
    if tbptt is None or hasattr(model.rnn, "tbptt"):
        out, state = model.rnn(embedded, state)
    else:
        pieces = []
        for start in range(0, inputs.size(0), tbptt):
            piece, state = model.rnn(embedded[start:start + tbptt], state)
            pieces.append(piece)
            state = detach_state(state) if start + tbptt < inputs.size(0) else state
        out = torch.cat(pieces)
    return model.logits_of(out), state


@torch.no_grad()
def evaluate(model, ids, batch, chunk=256):
    """Mean cross-entropy (nats/char) of the model over `ids`, state carried."""
    was_training = model.training
    model.eval()
    streams = batch_streams(ids, batch).to(next(model.parameters()).device)
    total, count, state = 0.0, 0, None
    for start in range(0, streams.size(0) - 1, chunk):
        inputs = streams[start:start + chunk]
        targets = streams[start + 1:start + 1 + chunk]
        inputs = inputs[: targets.size(0)]
        logits, state = model(inputs, state)
        total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        count += targets.numel()
    model.train(was_training)
    return total / count


def train(model, corpus, settings, label, device):
    """Trains `model` in place, printing a line per evaluation; returns its History."""
    torch.manual_seed(settings.seed)  # the dropout masks: the same for every run of these settings
    model.to(device).train()
    if hasattr(model.rnn, "tbptt"):
        model.rnn.tbptt = settings.tbptt
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    streams = batch_streams(corpus.train, settings.batch).to(device)
    valid = corpus.valid[: settings.eval_chars]
    eval_batch = max(1, min(settings.batch, valid.numel() // 512))
    history = History(label)
    progress = Progress(settings.max_steps, label=f"{label} step ")
    position, state = 0, None
    clock = time.perf_counter()
    for step in range(1, settings.max_steps + 1):
        if position + 2 > streams.size(0):
            position, state = 0, None  # the streams are used up: start the text again
        length = min(settings.seq_len, streams.size(0) - 1 - position)
        inputs = streams[position:position + length]
        targets = streams[position + 1:position + 1 + length]
        position += length

        logits, state = chunk_logits(model, inputs, state, settings.tbptt)
        state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()

        history.losses.append(loss.item())
        history.chars += targets.numel()
        if step % settings.eval_every == 0 or step == settings.max_steps:
            _synchronize(device)
            history.train_seconds += time.perf_counter() - clock
            valid_loss = evaluate(model, valid, eval_batch)
            history.evals.append((step, valid_loss))
            progress.write(f"  {label} step {step:>5}: train loss {_recent(history.losses):.3f}, "
                           f"valid loss {valid_loss:.3f} (perplexity {math.exp(valid_loss):.2f}), "
                           f"{history.chars_per_second:,.0f} chars/s")
            clock = time.perf_counter()
        seconds = history.train_seconds + time.perf_counter() - clock
        progress.update(step, f"loss {_recent(history.losses):.3f}, {history.chars / seconds:,.0f} chars/s")
    progress.close()
    return history


def _recent(losses, window=20):
    tail = losses[-window:]
    return sum(tail) / len(tail)


def _synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
