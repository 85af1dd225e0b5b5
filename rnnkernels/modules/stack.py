"""Everything a module does above the op contract: the input projection as one
matmul per layer and direction, directions, variable lengths, stacking and
inter-layer dropout. The recurrence itself goes through the Function (apply_recurrence).
"""

import torch
import torch.nn.functional as F

from ..function import apply_recurrence, kernel_path
from ..layout import DenseLayout, PackedLayout


def project_input(backend, cell, x, w_ih, b_ih, b_hh):
    """xg = x W_ih^T + b_ih + b_hh for all steps at once; for GRU without b_hn,
    which the reset gate multiplies inside the recurrence. A backend may run
    the projection itself (an `input_projection(x, weight, bias)` method, the
    same math as F.linear); otherwise it is F.linear."""
    linear = getattr(backend, "input_projection", F.linear)
    if b_ih is None:
        return linear(x, w_ih, None)
    if cell == "gru":
        hidden = b_hh.shape[0] // 3
        b_hh = torch.cat([b_hh[: 2 * hidden], b_hh.new_zeros(hidden)])
    return linear(x, w_ih, b_ih + b_hh)


def recurrent_bias(cell, b_hh):
    """GRU's b_hn: the last third of bias_hh, passed to the recurrence apart."""
    if cell != "gru" or b_hh is None:
        return None
    return b_hh[2 * (b_hh.shape[0] // 3):]


def layer_weights(module, index, dtype=None):
    """{'weight_ih': ..., 'weight_hh': ..., 'bias_ih': ..., ...} of layer*direction
    `index`, read by name on every call so reassigned or parametrized weights count."""
    weights = {}
    for name in module._all_weights[index]:
        weight = getattr(module, name)
        weights[name.rsplit("_l", 1)[0]] = weight if dtype is None else weight.to(dtype)
    return weights


def run_stack(module, cell, x, batch_sizes, h0, c0, dtype=None):
    """All layers and directions of `module`.

    x: [T, B, I] (sequence first) or PackedSequence data [N, I] with its
    batch_sizes; h0 [L*D, B, H_out]; c0 [L*D, B, H] or None; dtype: cast the
    weights to it (autocast). Returns output in x's layout, h_n, c_n.
    """
    backend = module._select_backend(x)
    layout = DenseLayout() if batch_sizes is None else PackedLayout(batch_sizes, x.device)
    directions = 2 if module.bidirectional else 1
    layer_input, h_n, c_n, paths = x, [], [], []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            reverse = direction == 1
            w = layer_weights(module, index, dtype)
            xg = layout.to_steps(
                project_input(backend, cell, layer_input, w["weight_ih"], w.get("bias_ih"),
                              w.get("bias_hh")), reverse)
            paths.append(kernel_path(backend, cell, xg, w["weight_hh"], w.get("weight_hr"), layout.lengths))
            y, h, c = apply_recurrence(
                backend, cell, module.tbptt, xg, w["weight_hh"],
                h0[index], None if c0 is None else c0[index],
                recurrent_bias(cell, w.get("bias_hh")), w.get("weight_hr"), layout.lengths)
            outputs.append(layout.from_steps(y, reverse))
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        # Same tensor shape and RNG use as torch.nn, so the masks are identical.
        if module.dropout != 0 and module.training and layer < module.num_layers - 1:
            layer_input = F.dropout(layer_input, module.dropout, training=True)
    module._record_paths(paths)
    return layer_input, torch.stack(h_n), None if c0 is None else torch.stack(c_n)
