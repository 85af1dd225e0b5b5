// Torch glue of the persistent kernels (persistent_forward.cu,
// persistent_backward.cu): whether they run (path_rule.h, the device plan)
// and the launches. Called by the cells' ops before their step loops.
#pragma once

#include "glue.h"
#include "path_rule.h"

namespace rnnkernels {
namespace cuda {

// The forward's tensors, allocated by the cell's op as for the step path.
struct PersistentForwardTensors {
  at::Tensor xg, w_hh, b_hn;   // inputs, contiguous; b_hn undefined unless GRU with bias
  at::Tensor y, gates;         // outputs ([T, B, H], [S, B, G*H]); gates undefined for RNN
  at::Tensor cells, hn;        // LSTM's / GRU's saved state ([S, B, H]), else undefined
  at::Tensor h0;               // [B, H] initial state
  at::Tensor c_state, h_acc;   // LSTM's c / GRU's h in the accumulation dtype, in/out
  at::Tensor h_n;              // out: the last state, set when the path ran
};

// Runs the forward on the persistent path when RNNKERNELS_CUDA_PATH asks for
// it (or `auto` picks it) and the device accepts the launch; returns false
// to leave the work to the step path. A forced path that cannot run raises.
bool try_persistent_forward(CellKind cell, const RecurrenceShape& s, bool has_projection,
                            const DeviceLengths& rows, bool training, PersistentForwardTensors& io);

// The backward's tensors, as the cell's op prepared them for the step path.
struct PersistentBackwardTensors {
  at::Tensor dy, w_hh, y;        // inputs, contiguous ([T, B, H], [G*H, H], [T, B, H])
  at::Tensor gates, cells, hn;   // saved by the forward (undefined where the cell has none)
  at::Tensor h0, c0;             // [B, H] initial states (c0 LSTM only)
  at::Tensor carry, dc;          // accumulation dtype, in: dh_n / dc_n; out: dh0 / dc0 (all of it)
  at::Tensor dxg, dg_rec;        // outputs [T, B, G*H]; dg_rec GRU only
};

// As try_persistent_forward, for the backward: on true, carry holds dh0
// complete (no further dG_0 W_hh term), dc holds dc0, and dxg/dg_rec are written.
bool try_persistent_backward(CellKind cell, const RecurrenceShape& s, bool has_projection,
                             const DeviceLengths& rows, int64_t tbptt,
                             PersistentBackwardTensors& io);

}  // namespace cuda
}  // namespace rnnkernels
