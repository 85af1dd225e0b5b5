// LSTM recurrence on the CPU (op contract of DESIGN.md, cell "lstm").
//
// Forward, per step: pre = xg_t + h_{t-1} W_hh^T (one addmm), then the fused
// pointwise update from cell_math.h, then the optional projection
// h_t = W_hr (o * tanh(c_t)). Backward walks the steps in reverse producing
// dG_t (= dxg_t) and the dh/dc carry, cut at tbptt boundaries; dW_hh and
// dW_hr are one GEMM each after the loop.
#include <torch/library.h>

#include "../cell_math.h"
#include "common.h"

namespace rnnkernels {
namespace {

struct LstmForwardTensors {
  at::Tensor xg, w_hh, w_hr;  // inputs; w_hr undefined without projection
  at::Tensor y, gates, cells; // outputs; gates/cells hold one step when not training
  at::Tensor h_state, c_state;
};

template <typename scalar_t>
void lstm_forward_loop(const RecurrenceShape& s, const RowMask& mask,
                       bool training, LstmForwardTensors& io) {
  const int64_t B = s.batch, H = s.hidden, G4 = 4 * s.hidden;
  const bool proj = io.w_hr.defined();
  const auto opts = io.xg.options();
  at::Tensor pre = at::empty({B, G4}, opts);
  at::Tensor h_full = proj ? at::empty({B, H}, opts) : at::Tensor();
  at::Tensor projected = proj ? at::empty({B, s.hidden_out}, opts) : at::Tensor();
  const at::Tensor w_hh_t = io.w_hh.t();

  for (int64_t t = 0; t < s.steps; ++t) {
    at::addmm_out(pre, io.xg[t], io.h_state, w_hh_t);
    const int64_t slot = training ? t : 0;
    const scalar_t* p_pre = pre.data_ptr<scalar_t>();
    scalar_t* p_gates = io.gates[slot].data_ptr<scalar_t>();
    scalar_t* p_cells = io.cells[slot].data_ptr<scalar_t>();
    scalar_t* p_c = io.c_state.data_ptr<scalar_t>();
    // Without projection the unprojected h is the output and the state.
    scalar_t* p_h_out = proj ? h_full.data_ptr<scalar_t>() : io.y[t].data_ptr<scalar_t>();
    scalar_t* p_h = io.h_state.data_ptr<scalar_t>();

    for_each_row_range(B, G4, [&](int64_t first, int64_t end) {
      for (int64_t b = first; b < end; ++b) {
        const bool on = mask.active(b, t);
        const scalar_t* row_pre = p_pre + b * G4;
        scalar_t* row_gates = p_gates + b * G4;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t u = b * H + j;
          if (on) {
            const LstmStep<scalar_t> st = lstm_step_forward<scalar_t>(
                row_pre[j], row_pre[H + j], row_pre[2 * H + j], row_pre[3 * H + j], p_c[u]);
            row_gates[j] = st.gates.i;
            row_gates[H + j] = st.gates.f;
            row_gates[2 * H + j] = st.gates.g;
            row_gates[3 * H + j] = st.gates.o;
            p_c[u] = st.c;
            p_h_out[u] = st.h;
            if (!proj) {
              p_h[u] = st.h;
            }
          } else {
            row_gates[j] = row_gates[H + j] = row_gates[2 * H + j] = row_gates[3 * H + j] = 0;
            p_h_out[u] = 0;
          }
          p_cells[u] = p_c[u];
        }
      }
    });

    if (proj) {
      at::mm_out(projected, h_full, io.w_hr.t());
      const int64_t P = s.hidden_out;
      const scalar_t* p_r = projected.data_ptr<scalar_t>();
      scalar_t* p_y = io.y[t].data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        const bool on = mask.active(b, t);
        for (int64_t k = 0; k < P; ++k) {
          p_y[b * P + k] = on ? p_r[b * P + k] : scalar_t(0);
          if (on) {
            p_h[b * P + k] = p_r[b * P + k];
          }
        }
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward_cpu(
    const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0,
    const at::Tensor& c0, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& lengths, bool training) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("lstm", xg, w_hh, 4);
  const auto dtype = xg.scalar_type();
  check_lstm_forward_operands(s, w_hh, h0, c0, w_hr, CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  const auto opts = xg.options();
  const int64_t saved_steps = training ? s.steps : 1;
  LstmForwardTensors io;
  io.xg = xg.contiguous();
  io.w_hh = w_hh.contiguous();
  io.w_hr = w_hr.has_value() ? w_hr->contiguous() : at::Tensor();
  io.y = new_output({s.steps, s.batch, s.hidden_out}, opts);
  io.gates = new_output({saved_steps, s.batch, 4 * s.hidden}, opts);
  io.cells = new_output({saved_steps, s.batch, s.hidden}, opts);
  io.h_state = h0.contiguous().clone();
  io.c_state = c0.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(dtype, "lstm_forward_cpu", [&] {
    lstm_forward_loop<scalar_t>(s, mask, training, io);
  });
  return {io.y, io.h_state, io.c_state, io.gates, io.cells};
}

struct LstmBackwardTensors {
  at::Tensor dy, w_hh, w_hr, c0, gates, cells;  // inputs
  at::Tensor dxg, dr;                           // dG_t per step; dh per step (projection only)
  at::Tensor dh_state, dc_state;                // carries, [B, H_out] and [B, H]
};

template <typename scalar_t>
void lstm_backward_loop(const RecurrenceShape& s, const RowMask& mask,
                        int64_t tbptt, LstmBackwardTensors& io) {
  const int64_t B = s.batch, H = s.hidden, G4 = 4 * s.hidden, P = s.hidden_out;
  const bool proj = io.w_hr.defined();
  const auto opts = io.dy.options();
  at::Tensor dh_t = at::empty({B, P}, opts);  // total gradient of this step's output h_t
  at::Tensor dh_full = proj ? at::empty({B, H}, opts) : dh_t;

  for (int64_t t = s.steps - 1; t >= 0; --t) {
    const scalar_t* p_dy = io.dy[t].data_ptr<scalar_t>();
    scalar_t* p_carry = io.dh_state.data_ptr<scalar_t>();
    scalar_t* p_dh = dh_t.data_ptr<scalar_t>();
    // y_t of an ended row is a constant zero: its dy does not reach the state.
    for (int64_t b = 0; b < B; ++b) {
      const bool on = mask.active(b, t);
      for (int64_t k = 0; k < P; ++k) {
        p_dh[b * P + k] = p_carry[b * P + k] + (on ? p_dy[b * P + k] : scalar_t(0));
      }
    }
    if (proj) {
      io.dr[t].copy_(dh_t);
      at::mm_out(dh_full, dh_t, io.w_hr);
    }

    const scalar_t* p_gates = io.gates[t].data_ptr<scalar_t>();
    const scalar_t* p_c = io.cells[t].data_ptr<scalar_t>();
    const scalar_t* p_c_prev = (t > 0 ? io.cells[t - 1] : io.c0).data_ptr<scalar_t>();
    const scalar_t* p_dh_full = dh_full.data_ptr<scalar_t>();
    scalar_t* p_dc = io.dc_state.data_ptr<scalar_t>();
    scalar_t* p_dxg = io.dxg[t].data_ptr<scalar_t>();
    scalar_t* p_dr = proj ? io.dr[t].data_ptr<scalar_t>() : nullptr;
    for_each_row_range(B, G4, [&](int64_t first, int64_t end) {
      for (int64_t b = first; b < end; ++b) {
        const bool on = mask.active(b, t);
        const scalar_t* row_gates = p_gates + b * G4;
        scalar_t* row_dxg = p_dxg + b * G4;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t u = b * H + j;
          if (!on) {
            row_dxg[j] = row_dxg[H + j] = row_dxg[2 * H + j] = row_dxg[3 * H + j] = 0;
            continue;  // dc passes through unchanged
          }
          const LstmGates<scalar_t> a{row_gates[j], row_gates[H + j], row_gates[2 * H + j],
                                      row_gates[3 * H + j]};
          const LstmStepGrad<scalar_t> g =
              lstm_step_backward<scalar_t>(a, p_c[u], p_c_prev[u], p_dh_full[u], p_dc[u]);
          row_dxg[j] = g.d_pre_i;
          row_dxg[H + j] = g.d_pre_f;
          row_dxg[2 * H + j] = g.d_pre_g;
          row_dxg[3 * H + j] = g.d_pre_o;
          p_dc[u] = g.dc_prev;
        }
        // The carry into h_{t-1}: W_hh^T dG_t for a live row (added below),
        // the untouched gradient for an ended one.
        for (int64_t k = 0; k < P; ++k) {
          p_carry[b * P + k] = on ? scalar_t(0) : p_dh[b * P + k];
          if (!on && proj) {
            p_dr[b * P + k] = 0;
          }
        }
      }
    });

    if (cuts_carry(tbptt, t)) {
      io.dh_state.zero_();
      io.dc_state.zero_();
    } else {
      io.dh_state.addmm_(io.dxg[t], io.w_hh);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward_cpu(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& dc_n,
    const at::Tensor& w_hh, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& lengths,
    const at::Tensor& y, const at::Tensor& gates, const at::Tensor& cells,
    int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("lstm", gates, w_hh, 4);
  const auto dtype = gates.scalar_type();
  const bool proj = w_hr.has_value();
  check_lstm_backward_operands(s, dy, y, dh_n, dc_n, h0, c0, cells, w_hr,
                               CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  const auto opts = gates.options();
  LstmBackwardTensors io;
  io.dy = dy.contiguous();
  io.w_hh = w_hh.contiguous();
  io.w_hr = proj ? w_hr->contiguous() : at::Tensor();
  io.c0 = c0.contiguous();
  io.gates = gates.contiguous();
  io.cells = cells.contiguous();
  io.dxg = new_output({s.steps, s.batch, 4 * s.hidden}, opts);
  io.dr = proj ? new_output({s.steps, s.batch, s.hidden_out}, opts) : at::Tensor();
  io.dh_state = dh_n.contiguous().clone();
  io.dc_state = dc_n.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(dtype, "lstm_backward_cpu", [&] {
    lstm_backward_loop<scalar_t>(s, mask, tbptt, io);
  });

  const at::Tensor dxg_rows = io.dxg.view({s.steps * s.batch, 4 * s.hidden});
  at::Tensor dw_hh = at::mm(dxg_rows.t(), previous_hidden(h0, y));
  at::Tensor dw_hr = at::empty({0}, opts);
  if (proj) {
    // Unprojected outputs o * tanh(c), recomputed; zero on ended rows.
    const at::Tensor h_full = io.gates.narrow(2, 3 * s.hidden, s.hidden) * io.cells.tanh();
    dw_hr = at::mm(io.dr.view({s.steps * s.batch, s.hidden_out}).t(), h_full.reshape({s.steps * s.batch, s.hidden}));
  }
  return {io.dxg, dw_hh, io.dh_state, io.dc_state, dw_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_forward", &lstm_forward_cpu);
  m.impl("lstm_backward", &lstm_backward_cpu);
}

}  // namespace rnnkernels
