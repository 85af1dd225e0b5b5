// GRU recurrence on the CPU (op contract of DESIGN.md, cell "gru").
//
// Forward, per step: hg = h_{t-1} W_hh^T (one mm), then the fused pointwise
// update; b_hn joins the n row inside r * (W_hn h + b_hn), which is why it is
// not folded into xg. Backward produces two gradients per step: dxg (input
// side, [dr, dz, dn]) and the recurrent one [dr, dz, dhn], which feeds the
// carry and, after the loop, dW_hh and db_hn.
#include <torch/library.h>

#include "../cell_math.h"
#include "common.h"

namespace rnnkernels {
namespace {

struct GruForwardTensors {
  at::Tensor xg, w_hh, b_hn;  // b_hn undefined without bias
  at::Tensor y, gates, hn;    // gates/hn hold one step when not training
  at::Tensor h_state;
};

template <typename scalar_t>
void gru_forward_loop(const RecurrenceShape& s, const RowMask& mask,
                      bool training, GruForwardTensors& io) {
  const int64_t B = s.batch, H = s.hidden, G3 = 3 * s.hidden;
  at::Tensor hg = at::empty({B, G3}, io.xg.options());
  const at::Tensor w_hh_t = io.w_hh.t();
  const scalar_t* p_bias = io.b_hn.defined() ? io.b_hn.data_ptr<scalar_t>() : nullptr;

  for (int64_t t = 0; t < s.steps; ++t) {
    at::mm_out(hg, io.h_state, w_hh_t);
    const int64_t slot = training ? t : 0;
    const scalar_t* p_xg = io.xg[t].data_ptr<scalar_t>();
    const scalar_t* p_hg = hg.data_ptr<scalar_t>();
    scalar_t* p_gates = io.gates[slot].data_ptr<scalar_t>();
    scalar_t* p_hn = io.hn[slot].data_ptr<scalar_t>();
    scalar_t* p_y = io.y[t].data_ptr<scalar_t>();
    scalar_t* p_h = io.h_state.data_ptr<scalar_t>();

    for_each_row_range(B, G3, [&](int64_t first, int64_t end) {
      for (int64_t b = first; b < end; ++b) {
        const bool on = mask.active(b, t);
        const scalar_t* row_xg = p_xg + b * G3;
        const scalar_t* row_hg = p_hg + b * G3;
        scalar_t* row_gates = p_gates + b * G3;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t u = b * H + j;
          if (!on) {
            row_gates[j] = row_gates[H + j] = row_gates[2 * H + j] = 0;
            p_hn[u] = 0;
            p_y[u] = 0;
            continue;
          }
          const scalar_t hn = row_hg[2 * H + j] + (p_bias ? p_bias[j] : scalar_t(0));
          const GruStep<scalar_t> st = gru_step_forward<scalar_t>(
              row_xg[j] + row_hg[j], row_xg[H + j] + row_hg[H + j], row_xg[2 * H + j], hn, p_h[u]);
          row_gates[j] = st.r;
          row_gates[H + j] = st.z;
          row_gates[2 * H + j] = st.n;
          p_hn[u] = hn;
          p_y[u] = st.h;
          p_h[u] = st.h;
        }
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_forward_cpu(
    const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& b_hn, const std::optional<at::Tensor>& lengths,
    bool training) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("gru", xg, w_hh, 3);
  const auto dtype = xg.scalar_type();
  check_gru_forward_operands(s, h0, b_hn, CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  const auto opts = xg.options();
  const int64_t saved_steps = training ? s.steps : 1;
  GruForwardTensors io;
  io.xg = xg.contiguous();
  io.w_hh = w_hh.contiguous();
  io.b_hn = b_hn.has_value() ? b_hn->contiguous() : at::Tensor();
  io.y = new_output({s.steps, s.batch, s.hidden}, opts);
  io.gates = new_output({saved_steps, s.batch, 3 * s.hidden}, opts);
  io.hn = new_output({saved_steps, s.batch, s.hidden}, opts);
  io.h_state = h0.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(dtype, "gru_forward_cpu", [&] {
    gru_forward_loop<scalar_t>(s, mask, training, io);
  });
  return {io.y, io.h_state, io.gates, io.hn};
}

struct GruBackwardTensors {
  at::Tensor dy, w_hh, h0, y, gates, hn;  // inputs
  at::Tensor dxg, dg_rec;                 // [dr, dz, dn] and [dr, dz, dhn] per step
  at::Tensor dh_state;                    // carry, [B, H]
};

template <typename scalar_t>
void gru_backward_loop(const RecurrenceShape& s, const RowMask& mask,
                       int64_t tbptt, GruBackwardTensors& io) {
  const int64_t B = s.batch, H = s.hidden, G3 = 3 * s.hidden;
  for (int64_t t = s.steps - 1; t >= 0; --t) {
    const scalar_t* p_dy = io.dy[t].data_ptr<scalar_t>();
    const scalar_t* p_gates = io.gates[t].data_ptr<scalar_t>();
    const scalar_t* p_hn = io.hn[t].data_ptr<scalar_t>();
    // For a row active at t, y_{t-1} is its real h_{t-1}.
    const scalar_t* p_h_prev = (t > 0 ? io.y[t - 1] : io.h0).data_ptr<scalar_t>();
    scalar_t* p_dxg = io.dxg[t].data_ptr<scalar_t>();
    scalar_t* p_rec = io.dg_rec[t].data_ptr<scalar_t>();
    scalar_t* p_carry = io.dh_state.data_ptr<scalar_t>();

    for_each_row_range(B, G3, [&](int64_t first, int64_t end) {
      for (int64_t b = first; b < end; ++b) {
        const bool on = mask.active(b, t);
        const scalar_t* row_gates = p_gates + b * G3;
        scalar_t* row_dxg = p_dxg + b * G3;
        scalar_t* row_rec = p_rec + b * G3;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t u = b * H + j;
          if (!on) {
            row_dxg[j] = row_dxg[H + j] = row_dxg[2 * H + j] = 0;
            row_rec[j] = row_rec[H + j] = row_rec[2 * H + j] = 0;
            continue;  // the carry passes through unchanged
          }
          const GruStepGrad<scalar_t> g = gru_step_backward<scalar_t>(
              row_gates[j], row_gates[H + j], row_gates[2 * H + j], p_hn[u], p_h_prev[u],
              p_carry[u] + p_dy[u]);
          row_dxg[j] = row_rec[j] = g.d_pre_r;
          row_dxg[H + j] = row_rec[H + j] = g.d_pre_z;
          row_dxg[2 * H + j] = g.d_pre_n;
          row_rec[2 * H + j] = g.d_hn;
          p_carry[u] = g.dh_prev_direct;
        }
      }
    });

    if (cuts_carry(tbptt, t)) {
      io.dh_state.zero_();
    } else {
      // Ended rows have a zero recurrent gradient, so this adds nothing there.
      io.dh_state.addmm_(io.dg_rec[t], io.w_hh);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward_cpu(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& w_hh,
    const at::Tensor& h0, const std::optional<at::Tensor>& lengths,
    const at::Tensor& y, const at::Tensor& gates, const at::Tensor& hn,
    bool has_b_hn, int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("gru", gates, w_hh, 3);
  const auto dtype = gates.scalar_type();
  check_gru_backward_operands(s, dy, y, hn, dh_n, h0, CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  const auto opts = gates.options();
  GruBackwardTensors io;
  io.dy = dy.contiguous();
  io.w_hh = w_hh.contiguous();
  io.h0 = h0.contiguous();
  io.y = y.contiguous();
  io.gates = gates.contiguous();
  io.hn = hn.contiguous();
  io.dxg = new_output({s.steps, s.batch, 3 * s.hidden}, opts);
  io.dg_rec = new_output({s.steps, s.batch, 3 * s.hidden}, opts);
  io.dh_state = dh_n.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(dtype, "gru_backward_cpu", [&] {
    gru_backward_loop<scalar_t>(s, mask, tbptt, io);
  });

  at::Tensor dw_hh = at::mm(io.dg_rec.view({s.steps * s.batch, 3 * s.hidden}).t(), previous_hidden(io.h0, io.y));
  at::Tensor db_hn = has_b_hn ? io.dg_rec.narrow(2, 2 * s.hidden, s.hidden).sum({0, 1})
                              : at::empty({0}, opts);
  return {io.dxg, dw_hh, io.dh_state, db_hn};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("gru_forward", &gru_forward_cpu);
  m.impl("gru_backward", &gru_backward_cpu);
}

}  // namespace rnnkernels
