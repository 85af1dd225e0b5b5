"""Swap torch.nn recurrent layers for their rnnkernels twins in a whole model, and back.

    model = rnnkernels.convert(model, backend="auto")   # nn.LSTM -> rnnkernels.LSTM, ...
    model = rnnkernels.to_torch(model)                   # and back to torch.nn

Each rnnkernels module subclasses its torch.nn twin and adds only its options
(`backend`, `tbptt`, `last_backend`, `last_path`), so a module is converted by changing its
class in place rather than by building a copy. The module object stays the
same, so everything attached to it stays too: its parameter and buffer objects
(an optimizer built before the conversion keeps training them), weight
sharing between modules, device, dtype, training mode, forward hooks and
pre-hooks, state_dict hooks, parametrizations (weight norm), and every
reference to it held elsewhere. A model passed as a bare recurrent layer is
converted too, and returned.
"""

from torch import nn
from torch.nn.utils import parametrize

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .contract import check_tbptt

__all__ = ["convert", "to_torch"]

_TWIN_OF_TORCH = {
    nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN,
    nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell,
}
_TORCH_OF_TWIN = {twin: torch_cls for torch_cls, twin in _TWIN_OF_TORCH.items()}

# The attributes rnnkernels' options add to a torch.nn module (see modules/options.py).
_OPTION_ATTRIBUTES = ("_backend", "_tbptt", "last_backend", "last_path")


def convert(model, backend="auto", *, tbptt=None):
    """Turn every torch.nn LSTM, GRU, RNN, LSTMCell, GRUCell and RNNCell in `model`
    (at any depth: Sequential, ModuleList, ModuleDict, attributes) into its
    rnnkernels twin, in place, and return `model`.

    backend: as the modules' `backend` keyword ('auto', 'reference', 'cpu', ...).
    tbptt: None (full BPTT) or k, set on the sequence layers (LSTM/GRU/RNN).
    Layers that already are rnnkernels modules get this backend and tbptt.
    Only the exact torch.nn classes are converted: a user subclass of nn.LSTM
    keeps its own class, since its own methods would otherwise be lost.
    Outputs and gradients stay those of torch.nn (the modules' parity tests).
    Convert before wrapping the model in torch.compile or DistributedDataParallel.
    """
    from .backends import require_backend

    require_backend(backend)  # checked before anything changes
    check_tbptt(tbptt)
    for module in _recurrent_modules(model):
        base = _unparametrized_class(module)
        if base in _TWIN_OF_TORCH:
            _set_class(module, _TWIN_OF_TORCH[base])
        elif base not in _TORCH_OF_TWIN:
            continue  # a user's subclass: left as it is
        module._backend = backend
        module.last_backend = module.last_path = None
        if not isinstance(module, nn.RNNCellBase):
            module._tbptt = tbptt
    return model


def to_torch(model):
    """The reverse of `convert`: every rnnkernels recurrent module in `model`
    becomes its torch.nn class again, in place, keeping what `convert` keeps.
    Returns `model`."""
    for module in _recurrent_modules(model):
        base = _unparametrized_class(module)
        if base in _TORCH_OF_TWIN:
            _set_class(module, _TORCH_OF_TWIN[base])
            for name in _OPTION_ATTRIBUTES:
                module.__dict__.pop(name, None)
    return model


def _recurrent_modules(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]


def _unparametrized_class(module):
    """The module's class as written, beneath the class torch.nn.utils.parametrize
    derives for a module with parametrizations (ParametrizedLSTM <- LSTM)."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def _set_class(module, cls):
    """Gives `module` the class `cls`. A parametrized module's class is one that
    torch derived from its original class, holding a property per parametrized
    tensor; the same class is derived from `cls`, with the same properties, so
    that removing the last parametrization later leaves `cls`."""
    if not parametrize.is_parametrized(module):
        module.__class__ = cls
        return
    derived = type(module)
    members = {name: value for name, value in vars(derived).items()
               if name not in ("__dict__", "__weakref__")}
    module.__class__ = type(f"Parametrized{cls.__name__}", (cls,), members)
