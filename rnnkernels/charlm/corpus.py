"""The text a model learns: read from --text or the embedded default (this
Python's own standard library sources, present wherever Python is), its
vocabulary of characters, the deterministic train/validation split, and the
batch streams that truncated BPTT walks through."""

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cli_support import CommandError

# The last fraction of the text is the validation set: contiguous, so no
# validation text is seen in training, and the same on every run.
VALID_FRACTION = 0.05


@dataclass
class Corpus:
    description: str
    vocab: str              # every character of the text, sorted; id = position
    train: torch.Tensor     # [N_train] int64 character ids
    valid: torch.Tensor     # [N_valid]


def read_text_file(path):
    """The UTF-8 text of `path`, or CommandError saying why it cannot be a corpus."""
    file = Path(path)
    if not file.exists():
        raise CommandError(f"--text {path}: no such file")
    if not file.is_file():
        raise CommandError(f"--text {path}: not a regular file")
    try:
        data = file.read_bytes()
    except OSError as error:
        raise CommandError(f"--text {path}: cannot read it ({error.strerror})") from None
    if not data.strip():
        raise CommandError(f"--text {path}: the file is empty")
    if b"\0" in data:
        raise CommandError(f"--text {path}: looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommandError(f"--text {path}: not UTF-8 text (byte {error.start}: {error.reason})") from None


def default_text(max_chars):
    """(text, description): the top-level .py files of the running interpreter's
    standard library, sorted by name, concatenated up to `max_chars`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, size, files = [], 0, 0
    for source in sorted(stdlib.glob("*.py")):
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a file this interpreter cannot read is simply not part of the corpus
        parts.append(text)
        size += len(text)
        files += 1
        if size >= max_chars:
            break
    if size < 10_000:
        raise CommandError(f"no Python sources found under {stdlib} for the default corpus; "
                           "give a text file with --text")
    return "".join(parts)[:max_chars], f"Python standard library sources ({files} files in {stdlib})"


def load_corpus(text_path=None, max_chars=None):
    """The Corpus of --text (all of it unless max_chars) or of the default text."""
    if text_path is None:
        text, description = default_text(max_chars or 2_000_000)
    else:
        text = read_text_file(text_path)
        text = text[:max_chars] if max_chars else text
        description = str(text_path)
    if len(text) < 100:
        raise CommandError(f"the corpus has only {len(text)} characters; a language model needs more")
    codes = _code_points(text)
    vocab_codes = torch.unique(codes)
    ids = torch.searchsorted(vocab_codes, codes)
    split = len(text) - max(1, int(len(text) * VALID_FRACTION))
    vocab = "".join(chr(c) for c in vocab_codes.tolist())
    return Corpus(description, vocab, ids[:split], ids[split:])


def encode(text, vocab, what="text"):
    """Character ids of `text` in `vocab`; CommandError naming any character outside it."""
    index = {char: i for i, char in enumerate(vocab)}
    unknown = sorted({char for char in text if char not in index})
    if unknown:
        shown = "".join(unknown[:20])
        raise CommandError(f"{what} has {len(unknown)} character(s) outside the model's vocabulary: {shown!r}")
    return torch.tensor([index[char] for char in text], dtype=torch.long)


def unigram_loss(train, valid, vocab_size):
    """Validation cross-entropy (nats/char) of character frequencies counted on
    train, add-one smoothed so a character unseen in training costs a finite loss."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1
    log_probs = (counts / counts.sum()).log()
    return float(-log_probs[valid].mean())


def batch_streams(ids, batch):
    """[N, batch]: the text cut into `batch` contiguous streams side by side, so
    consecutive chunks of rows continue each stream and the state can carry over."""
    length = ids.numel() // batch
    if length < 2:
        raise CommandError(f"the text ({ids.numel()} characters) is too short for {batch} streams")
    return ids[: length * batch].view(batch, length).t().contiguous()


def _code_points(text):
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()
