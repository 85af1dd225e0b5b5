"""`python -m rnnkernels demo`: swap rnnkernels.LSTM/GRU into a small model,
train it side by side with the torch.nn original, and show they agree.

A quick check that a swapped-in layer trains like the original.
"""

import copy
import time

import torch
from torch import nn

import rnnkernels

from .backends import BACKEND_NAMES, unavailable_reason


class SequenceTagger(nn.Module):
    """Embedding -> 2-layer recurrent layer -> linear, the shape of many real models."""

    def __init__(self, rnn, vocab, width):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), vocab)

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


def _train(model, batches, steps):
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, state = [], None
    for step in range(steps):
        tokens, targets = batches[step % len(batches)]
        logits, state = model(tokens, state)
        # Truncated BPTT the classic way: carry the state, detached, to the next batch.
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _toy_batches(vocab, batch, steps, count, generator):
    """Predict the token seen 3 steps earlier: needs memory, learnable in seconds."""
    batches = []
    for _ in range(count):
        tokens = torch.randint(vocab, (batch, steps), generator=generator)
        targets = torch.roll(tokens, 3, dims=1)
        batches.append((tokens, targets))
    return batches


def run(backend="auto", device="cpu", steps=40, seed=0):
    print(f"rnnkernels {rnnkernels.__version__}, torch {torch.__version__}, device {device}")
    for name in BACKEND_NAMES:
        reason = unavailable_reason(name)
        print(f"  backend {name:<9} {'available' if reason is None else 'unavailable: ' + reason}")

    vocab, width, hidden = 32, 48, 64
    batches = _toy_batches(vocab, 16, 24, 4, torch.Generator().manual_seed(seed))
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    worst = 0.0
    for ours_cls, torch_cls in ((rnnkernels.LSTM, nn.LSTM), (rnnkernels.GRU, nn.GRU)):
        torch.manual_seed(seed)
        reference = SequenceTagger(torch_cls(width, hidden, 2, batch_first=True, dropout=0.1),
                                   vocab, width).to(device)
        swapped = copy.deepcopy(reference)
        swapped.rnn = ours_cls(width, hidden, 2, batch_first=True, dropout=0.1, backend=backend).to(device)
        swapped.rnn.load_state_dict(reference.rnn.state_dict())

        results = {}
        for label, model in (("torch.nn", reference), ("rnnkernels", swapped)):
            torch.manual_seed(seed + 1)  # same dropout masks for both
            start = time.perf_counter()
            results[label] = (_train(model, batches, steps), time.perf_counter() - start)
        (theirs, theirs_s), (ours, ours_s) = results["torch.nn"], results["rnnkernels"]
        gap = max(abs(a - b) for a, b in zip(theirs, ours, strict=True))
        worst = max(worst, gap)
        print(f"\n{ours_cls.__name__}: 2 layers, hidden {hidden}, {steps} Adam steps; "
              f"rnnkernels ran on backend '{swapped.rnn.last_backend}'")
        print(f"  loss  torch.nn {theirs[0]:.4f} -> {theirs[-1]:.4f}   "
              f"rnnkernels {ours[0]:.4f} -> {ours[-1]:.4f}   max |difference| {gap:.2e}")
        print(f"  wall time (not a benchmark): torch.nn {theirs_s:.2f} s, rnnkernels {ours_s:.2f} s")
    # float32 training for 40 steps drifts by rounding only; a real mismatch is O(0.1).
    ok = worst < 1e-3
    print(f"\n{'OK' if ok else 'MISMATCH'}: rnnkernels trains like torch.nn (worst loss gap {worst:.2e})")
    return 0 if ok else 1


def add_command(commands):
    """`python -m rnnkernels demo` (see __main__.py)."""
    demo = commands.add_parser(
        "demo", help="train a small model with rnnkernels.LSTM/GRU beside torch.nn")
    demo.add_argument("--backend", default="auto", choices=("auto",) + BACKEND_NAMES)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--steps", type=int, default=40)
    demo.set_defaults(run=_run_command)


def _run_command(args):
    from .cli_support import CommandError, check_device

    check_device(args.device)
    if args.steps < 1:
        raise CommandError(f"--steps must be at least 1, got {args.steps}")
    return run(backend=args.backend, device=args.device, steps=args.steps)
