"""rnnkernels: fused LSTM/GRU/RNN recurrences behind drop-ins for torch.nn.

    import rnnkernels
    lstm = rnnkernels.LSTM(256, 512, num_layers=2, batch_first=True)  # as torch.nn.LSTM
    rnnkernels.available_backends()  # e.g. ['reference', 'cpu']

See DESIGN.md for the op contract each backend implements.
"""

from .backends import BACKEND_NAMES, BackendUnavailableError, available_backends
from .convert import convert, to_torch
from .function import recurrence
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"

__all__ = [
    "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell",
    "available_backends", "BACKEND_NAMES", "BackendUnavailableError", "recurrence",
    "convert", "to_torch",
]
