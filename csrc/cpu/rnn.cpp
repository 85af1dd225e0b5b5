// Elman RNN recurrence on the CPU (op contract of DESIGN.md, cells
// "rnn_tanh" and "rnn_relu"): h_t = act(xg_t + h_{t-1} W_hh^T). The backward
// needs nothing beyond y: both derivatives are functions of the output.
#include <torch/library.h>

#include "../cell_math.h"
#include "common.h"

namespace rnnkernels {
namespace {

template <typename scalar_t, bool kRelu>
void rnn_forward_loop(const RecurrenceShape& s, const RowMask& mask,
                      const at::Tensor& xg, const at::Tensor& w_hh, at::Tensor& y,
                      at::Tensor& h_state) {
  const int64_t B = s.batch, H = s.hidden;
  at::Tensor pre = at::empty({B, H}, xg.options());
  const at::Tensor w_hh_t = w_hh.t();
  for (int64_t t = 0; t < s.steps; ++t) {
    at::addmm_out(pre, xg[t], h_state, w_hh_t);
    const scalar_t* p_pre = pre.data_ptr<scalar_t>();
    scalar_t* p_y = y[t].data_ptr<scalar_t>();
    scalar_t* p_h = h_state.data_ptr<scalar_t>();
    for_each_row_range(B, H, [&](int64_t first, int64_t end) {
      for (int64_t b = first; b < end; ++b) {
        const bool on = mask.active(b, t);
        for (int64_t j = 0; j < H; ++j) {
          const int64_t u = b * H + j;
          if (on) {
            p_h[u] = rnn_step_forward<kRelu, scalar_t>(p_pre[u]);
          }
          p_y[u] = on ? p_h[u] : scalar_t(0);
        }
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor> rnn_forward_cpu(
    const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& lengths, bool relu) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("rnn", xg, w_hh, 1);
  check_operand(h0, "h0", {s.batch, s.hidden}, xg.scalar_type());
  const RowMask mask(lengths, s);

  at::Tensor y = new_output({s.steps, s.batch, s.hidden}, xg.options());
  at::Tensor h_state = h0.contiguous().clone();
  const at::Tensor xg_c = xg.contiguous();
  const at::Tensor w_hh_c = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xg.scalar_type(), "rnn_forward_cpu", [&] {
    if (relu) {
      rnn_forward_loop<scalar_t, true>(s, mask, xg_c, w_hh_c, y, h_state);
    } else {
      rnn_forward_loop<scalar_t, false>(s, mask, xg_c, w_hh_c, y, h_state);
    }
  });
  return {y, h_state};
}

template <typename scalar_t, bool kRelu>
void rnn_backward_loop(const RecurrenceShape& s, const RowMask& mask, int64_t tbptt,
                       const at::Tensor& dy, const at::Tensor& w_hh, const at::Tensor& y,
                       at::Tensor& dxg, at::Tensor& dh_state) {
  const int64_t B = s.batch, H = s.hidden;
  for (int64_t t = s.steps - 1; t >= 0; --t) {
    const scalar_t* p_dy = dy[t].data_ptr<scalar_t>();
    const scalar_t* p_y = y[t].data_ptr<scalar_t>();
    scalar_t* p_dxg = dxg[t].data_ptr<scalar_t>();
    scalar_t* p_carry = dh_state.data_ptr<scalar_t>();
    for_each_row_range(B, H, [&](int64_t first, int64_t end) {
      for (int64_t b = first; b < end; ++b) {
        const bool on = mask.active(b, t);
        for (int64_t j = 0; j < H; ++j) {
          const int64_t u = b * H + j;
          if (on) {
            p_dxg[u] = rnn_step_backward<kRelu, scalar_t>(p_y[u], p_carry[u] + p_dy[u]);
            p_carry[u] = 0;  // replaced by W_hh^T dG_t below
          } else {
            p_dxg[u] = 0;  // the carry passes through unchanged
          }
        }
      }
    });
    if (cuts_carry(tbptt, t)) {
      dh_state.zero_();
    } else {
      dh_state.addmm_(dxg[t], w_hh);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_backward_cpu(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& w_hh,
    const at::Tensor& h0, const std::optional<at::Tensor>& lengths,
    const at::Tensor& y, bool relu, int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("rnn", y, w_hh, 1);
  const auto dtype = y.scalar_type();
  check_rnn_backward_operands(s, dy, dh_n, h0, CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  at::Tensor dxg = new_output({s.steps, s.batch, s.hidden}, y.options());
  at::Tensor dh_state = dh_n.contiguous().clone();
  const at::Tensor dy_c = dy.contiguous();
  const at::Tensor y_c = y.contiguous();
  const at::Tensor w_hh_c = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dtype, "rnn_backward_cpu", [&] {
    if (relu) {
      rnn_backward_loop<scalar_t, true>(s, mask, tbptt, dy_c, w_hh_c, y_c, dxg, dh_state);
    } else {
      rnn_backward_loop<scalar_t, false>(s, mask, tbptt, dy_c, w_hh_c, y_c, dxg, dh_state);
    }
  });
  at::Tensor dw_hh = at::mm(dxg.view({s.steps * s.batch, s.hidden}).t(), previous_hidden(h0.contiguous(), y_c));
  return {dxg, dw_hh, dh_state};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("rnn_forward", &rnn_forward_cpu);
  m.impl("rnn_backward", &rnn_backward_cpu);
}

}  // namespace rnnkernels
