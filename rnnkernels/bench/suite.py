"""The benchmark suite: named shapes, and the cases (shape x cell x dtype x mode)
a run measures after the command line's filters.

The full suite is sized for a GPU. On a CPU it would run for hours, so there
the default is the quick suite (see `default_shapes`); `--full` forces it.
"""

import dataclasses

import torch

CELLS = ("lstm", "gru", "rnn")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
MODES = ("fwd", "fwd+bwd")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One problem size. `sweeps` names the plots it is a point of: "H" (time
    against hidden size at fixed B, T) and/or "B" (against batch at fixed H, T)."""

    name: str
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False  # variable lengths, as a PackedSequence
    proj_size: int = 0  # LSTM only
    sweeps: tuple = ()

    def runs_cell(self, cell):
        return cell == "lstm" if self.proj_size else True

    def lengths(self):
        """Per-row sequence lengths, longest first: all T, or (packed) spread
        evenly from T down to T/2, a typical bucketed batch."""
        if not self.packed:
            return [self.seq_len] * self.batch
        span = self.seq_len // 2
        return [self.seq_len - (row * span) // max(1, self.batch - 1) for row in range(self.batch)]

    def describe(self):
        extras = [f"L{self.layers}"] if self.layers > 1 else []
        extras += ["bidir"] if self.bidirectional else []
        extras += ["packed"] if self.packed else []
        extras += [f"P{self.proj_size}"] if self.proj_size else []
        return " ".join(extras)


def _square(name, seq_len, batch, hidden, **extra):
    return Shape(name, seq_len, batch, hidden, hidden, **extra)


# In priority order: a run that hits its time budget has measured the first ones.
FULL_SHAPES = (
    _square("fastrnns", 100, 64, 512, sweeps=("H", "B")),  # torch fastrnns' default
    _square("long", 1024, 16, 768),  # DESIGN.md's published anchor (cuDNN, FlashRNN)
    _square("b1", 100, 1, 512, sweeps=("B",)),
    _square("b8", 100, 8, 512, sweeps=("B",)),
    _square("b16", 100, 16, 512, sweeps=("B",)),
    _square("b256", 100, 256, 512, sweeps=("B",)),
    _square("h128", 100, 64, 128, sweeps=("H",)),
    _square("h256", 100, 64, 256, sweeps=("H",)),
    _square("h1024", 100, 64, 1024, sweeps=("H",)),
    _square("h2048", 100, 64, 2048, sweeps=("H",)),
    _square("bidir2", 100, 64, 512, layers=2, bidirectional=True),
    _square("packed", 100, 64, 512, packed=True),
    Shape("proj", 100, 64, 512, 1024, proj_size=256),
)

# About a minute on a GPU: the two headline shapes, every cell, dtype and mode.
QUICK_GPU_SHAPES = FULL_SHAPES[:2]

# About a minute on 2 CPU cores: small sizes, still an H and a B sweep. torch
# has no fast bf16/fp16 CPU kernels for these layers (a step is ~10x float32),
# which is what bounds the size.
QUICK_CPU_SHAPES = (
    _square("small", 32, 16, 128, sweeps=("H", "B")),
    _square("small-h256", 32, 16, 256, sweeps=("H",)),
    _square("small-b64", 32, 64, 128, sweeps=("B",)),
)
# Named for --shape on a CPU, outside the default quick suite.
EXTRA_CPU_SHAPES = (
    _square("small-h64", 32, 16, 64, sweeps=("H",)),
    _square("small-b1", 32, 1, 128, sweeps=("B",)),
    _square("small-packed", 32, 16, 128, packed=True),
    _square("small-bidir2", 32, 16, 128, layers=2, bidirectional=True),
    Shape("small-proj", 32, 16, 128, 256, proj_size=64),
)

ALL_SHAPES = {shape.name: shape for shape in FULL_SHAPES + QUICK_CPU_SHAPES + EXTRA_CPU_SHAPES}


def default_shapes(device_type, quick, full):
    """The suite a run measures when no --shape filter is given."""
    if device_type == "cuda":
        return QUICK_GPU_SHAPES if quick else FULL_SHAPES
    return FULL_SHAPES if full else QUICK_CPU_SHAPES


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed configuration; every implementation runs it on the same inputs."""

    shape: Shape
    cell: str
    dtype: str
    mode: str

    def label(self):
        return f"{self.cell} {self.dtype} {self.mode} {self.shape.name}"


def build_cases(shapes, cells, dtypes, modes):
    return [Case(shape, cell, dtype, mode)
            for shape in shapes for cell in cells if shape.runs_cell(cell)
            for dtype in dtypes for mode in modes]


def parse_choices(values, choices, what, aliases=None):
    """Comma-separated (or repeated) option values, checked against `choices`.

    Returns the chosen names in `choices` order, or raises ValueError naming
    the unknown ones and the valid ones.
    """
    aliases = aliases or {}
    if not values:
        return list(choices)
    asked = [aliases.get(v.strip().lower(), v.strip().lower())
             for value in values for v in value.split(",") if v.strip()]
    lowered = {c.lower(): c for c in choices}
    unknown = [v for v in asked if v not in lowered]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(repr(u) for u in unknown)}; "
                         f"choose from {', '.join(choices)}")
    picked = {lowered[v] for v in asked}
    return [c for c in choices if c in picked]
