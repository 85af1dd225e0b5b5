"""FLOP counts behind the TFLOP/s column: the matrix products only.

Per row and step of one layer and one direction (G gates: 4 LSTM, 3 GRU,
1 RNN; H hidden units; H_out = P with an LSTM projection, else H; I_l the
layer's input width: input_size for layer 0, H_out * directions above):

    input projection   2 * G*H * I_l       (x @ W_ih^T, one large GEMM per layer)
    recurrence         2 * G*H * H_out     (h @ W_hh^T, the sequential part)
    LSTM projection    2 * P * H           (h @ W_hr^T)

so one step of the recurrence over a batch is 2*B*G*H*H_out, as in DESIGN.md.
Rows past their length (packed input) do no work, so the row-steps are the
sum of the lengths, not T*B. Gate nonlinearities and the cell update are
O(G*H) per row-step and left out, as is usual.

A backward pass computes two products per forward product (the gradient with
respect to each operand), so forward+backward is 3x the forward count.
"""

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def forward_flops(cell, shape):
    """Matrix-product FLOPs of one forward pass of the whole layer stack."""
    gates_h = GATES[cell] * shape.hidden_size
    h_out = shape.proj_size or shape.hidden_size
    directions = 2 if shape.bidirectional else 1
    per_row_step = 0
    for layer in range(shape.layers):
        layer_input = shape.input_size if layer == 0 else h_out * directions
        per_row_step += 2 * gates_h * layer_input + 2 * gates_h * h_out
        if shape.proj_size:
            per_row_step += 2 * shape.proj_size * shape.hidden_size
    return per_row_step * directions * sum(shape.lengths())


def step_flops(cell, shape, mode):
    """FLOPs of one timed step: a forward (mode "fwd") or a training step ("fwd+bwd")."""
    return forward_flops(cell, shape) * (3 if mode == "fwd+bwd" else 1)
