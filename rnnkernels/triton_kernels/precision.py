"""How float32 recurrences run on tensor cores: as torch.nn's cuDNN RNNs do.

cuDNN runs float32 RNNs in TF32 by default (torch 2.13:
torch.backends.cudnn.rnn.fp32_precision == "tf32"), while plain matmuls do
not (torch.backends.cuda.matmul). The kernels follow the RNN setting, so the
triton backend matches torch.nn's numerics and speed comparisons run at the
same precision. Imports torch only (the benchmark records it too).
"""

import torch


def rnn_fp32_precision():
    """'tf32' or 'ieee'. torch >= 2.9 resolves cudnn.rnn.fp32_precision, then
    cudnn's, then the global one ('none' defers to the next level; 'none' all
    the way is IEEE, as after `torch.backends.cudnn.allow_tf32 = False`);
    older torch has only torch.backends.cudnn.allow_tf32."""
    cudnn = torch.backends.cudnn
    levels = (getattr(cudnn, "rnn", None), cudnn, torch.backends)
    settings = [getattr(level, "fp32_precision", None) for level in levels]
    if settings[0] is None:
        return "tf32" if cudnn.allow_tf32 else "ieee"
    for setting in settings:
        if setting in ("tf32", "ieee"):
            return setting
    return "ieee"
