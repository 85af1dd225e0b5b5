"""Checkpoints: a model's state_dict with what rebuilds it (configuration and
vocabulary). The state_dict is torch.nn's, so a checkpoint written by the
rnnkernels model loads into the same model built on torch.nn layers, and back."""

from pathlib import Path

import torch

from ..cli_support import CommandError
from .model import ModelConfig, build_model

FORMAT = "rnnkernels.charlm"
VERSION = 1


def save_checkpoint(path, model, vocab, **details):
    """Writes `model` (either kind of layers) to `path`; details: step, valid_loss, ..."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "version": VERSION, "config": model.config.as_dict(), "vocab": vocab,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "details": details}, path)
    return path


def read_checkpoint(path):
    """The checkpoint dictionary at `path`, or CommandError when it is not one."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a file that is not its own
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"checkpoint {path}: not a torch checkpoint ({first_line})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CommandError(f"checkpoint {path}: not an rnnkernels charlm checkpoint")
    if checkpoint.get("version") != VERSION:
        raise CommandError(f"checkpoint {path}: format version {checkpoint.get('version')}, "
                           f"this rnnkernels reads version {VERSION}")
    return checkpoint


def checkpoint_config(checkpoint, path):
    try:
        return ModelConfig(**checkpoint["config"])
    except (KeyError, TypeError) as error:
        raise CommandError(f"checkpoint {path}: unreadable model configuration ({error})") from None


def load_into(model, checkpoint, path):
    """Loads the checkpoint's weights into `model`, or CommandError when they do not fit."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:
        summary = str(error).strip().splitlines()
        reason = summary[1].strip() if len(summary) > 1 else (summary[0] if summary else "missing weights")
        raise CommandError(f"checkpoint {path} does not fit this model: {reason}") from None
    return model


def load_model(path, layers="rnnkernels", backend="auto"):
    """(model, vocab, details) rebuilt from the checkpoint at `path`, on layers
    'rnnkernels' or 'torch.nn'."""
    checkpoint = read_checkpoint(path)
    config = checkpoint_config(checkpoint, path)
    vocab = checkpoint.get("vocab")
    if not isinstance(vocab, str) or len(vocab) != config.vocab_size:
        raise CommandError(f"checkpoint {path}: its vocabulary does not match its configuration")
    model = load_into(build_model(config, layers=layers, backend=backend), checkpoint, path)
    return model, vocab, checkpoint.get("details", {})


def check_same_configuration(checkpoint, path, config, vocab):
    """CommandError unless the checkpoint was made for this configuration and vocabulary."""
    theirs = checkpoint_config(checkpoint, path)
    different = [f"{name} {getattr(theirs, name)} (this run: {getattr(config, name)})"
                 for name in ("cell", "embed", "hidden", "layers")
                 if getattr(theirs, name) != getattr(config, name)]
    if different:
        raise CommandError(f"checkpoint {path} is of another configuration: " + ", ".join(different))
    if checkpoint.get("vocab") != vocab:
        raise CommandError(f"checkpoint {path} was trained on another vocabulary "
                           f"({len(checkpoint.get('vocab') or '')} characters; this corpus has {len(vocab)})")
