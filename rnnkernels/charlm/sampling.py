"""Autoregressive generation: the prompt is read into the state, then each
sampled character is fed back as the next input."""

import torch

from ..cli_support import CommandError
from .corpus import encode


@torch.no_grad()
def sample(model, vocab, prompt, length, temperature=0.8, seed=0):
    """`prompt` followed by `length` characters drawn from the model at `temperature`."""
    if not prompt:
        raise CommandError("the prompt is empty; give at least one character")
    if not temperature > 0:
        raise CommandError(f"--temperature must be positive, got {temperature}")
    device = next(model.parameters()).device
    ids = encode(prompt, vocab, what="the prompt").to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    logits, state = model(ids[:, None])                # [T, 1, V]
    generated = []
    for _ in range(length):
        probs = torch.softmax(logits[-1, 0].double() / temperature, dim=-1)
        next_id = torch.multinomial(probs, 1, generator=generator)
        generated.append(int(next_id))
        logits, state = model(next_id.view(1, 1), state)
    model.train(was_training)
    return prompt + "".join(vocab[i] for i in generated)
