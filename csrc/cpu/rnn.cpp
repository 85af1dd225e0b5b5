// Elman RNN recurrence on the CPU (op contract of DESIGN.md, cells
// "rnn_tanh" and "rnn_relu"): h_t = act(xg_t + h_{t-1} W_hh^T), one parallel
// region per sequence (region.h), each thread owning a slice of the units and
// its rows (forward) or columns (backward) of W_hh, packed once. The backward
// needs nothing beyond the states: both derivatives are functions of h_t.
#include <torch/library.h>

#include <vector>

#include "common.h"
#include "gemm.h"
#include "gemm16.h"
#include "pointwise.h"
#include "region.h"
#include "step_gemm.h"

namespace rnnkernels {
namespace {

template <typename T>
void rnn_forward_loop(const RecurrenceShape& s, const RowMask& mask, bool relu,
                      at::ScalarType round, const at::Tensor& xg_t, const at::Tensor& w_hh_t, at::Tensor& y_t,
                      at::Tensor& h_state) {
  const int64_t T_ = s.steps, B = s.batch, H = s.hidden;
  const PointwiseKernels<T> k = pointwise_kernels<T>(active_isa());
  const auto row_kernel = relu ? k.rnn_relu_forward : k.rnn_tanh_forward;
  const GemmPath path = gemm_path(xg_t.scalar_type());
  const bool amx = amx_recurrence(round == at::kBFloat16);
  std::vector<T> h_buf(2 * B * H);  // h_{t-1} and h_t
  std::copy_n(h_state.data_ptr<T>(), B * H, h_buf.data());
  Bf16Rows h16(amx, B, H);  // the same h in bfloat16, for AMX
  publish_rows(h16, amx, 0, B, Slice{0, H}, h_buf.data(), H);
  const T* xg = xg_t.data_ptr<T>();
  const T* w_hh = w_hh_t.data_ptr<T>();
  T* y = y_t.data_ptr<T>();

  run_region(region_threads(H), [&](int tid, int threads) {
    const Slice u = slice_of(H, tid, threads);
    const int64_t n = u.size();
    StepGemm<T> gemm(path, amx, w_hh + u.begin * H, H, true, B, n, H);
    for (int64_t t = 0; t < T_; ++t) {
      const T* h_prev = h_buf.data() + (t % 2) * B * H;
      T* h_next = h_buf.data() + ((t + 1) % 2) * B * H;
      gemm.run(h_prev, H, h16.data(t));
      for (int64_t b = 0; b < B; ++b) {
        const int64_t at = b * H + u.begin;
        T* row_y = y + t * B * H + at;
        if (mask.active(b, t)) {
          row_kernel({n, gemm.out() + b * gemm.out_stride(), xg + t * B * H + at, row_y, h_next + at});
          round_with(k, row_y, n, round);  // h as stored in the input dtype
          round_with(k, h_next + at, n, round);
        } else {  // an ended row keeps its state and writes zeros
          std::fill_n(row_y, n, T(0));
          std::copy_n(h_prev + at, n, h_next + at);
        }
      }
      publish_rows(h16, amx, t + 1, B, u, h_next, H);
      step_barrier();  // h_t complete
    }
  });
  std::copy_n(h_buf.data() + (T_ % 2) * B * H, B * H, h_state.data_ptr<T>());
}

std::tuple<at::Tensor, at::Tensor> rnn_forward_cpu(
    const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& lengths, bool relu) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_recurrence("rnn", xg, w_hh, 1);
  check_operand(h0, "h0", {s.batch, s.hidden}, xg.scalar_type());
  const RowMask mask(lengths, s);

  const auto dtype = xg.scalar_type();
  const auto compute = state_dtype(dtype);
  at::Tensor y = new_output({s.steps, s.batch, s.hidden}, xg.options().dtype(compute));
  at::Tensor h_state = h0.to(compute).contiguous().clone();
  const at::Tensor xg_c = xg.to(compute).contiguous();
  const at::Tensor w_hh_c = w_hh.to(compute).contiguous();
  AT_DISPATCH_FLOATING_TYPES(compute, "rnn_forward_cpu", [&] {
    rnn_forward_loop<scalar_t>(s, mask, relu, dtype, xg_c, w_hh_c, y, h_state);
  });
  return {y.to(dtype), h_state.to(dtype)};
}

template <typename T>
void rnn_backward_loop(const RecurrenceShape& s, const RowMask& mask, bool relu, int64_t tbptt, bool amx,
                       const at::Tensor& dy_t, const at::Tensor& w_hh_t, const at::Tensor& y_t,
                       at::Tensor& dxg_t, at::Tensor& dh_state_t) {
  const int64_t T_ = s.steps, B = s.batch, H = s.hidden;
  const PointwiseKernels<T> k = pointwise_kernels<T>(active_isa());
  const auto row_kernel = relu ? k.rnn_relu_backward : k.rnn_tanh_backward;
  const GemmPath path = gemm_path(dy_t.scalar_type());
  const T* dy = dy_t.data_ptr<T>();
  const T* w_hh = w_hh_t.data_ptr<T>();
  const T* y = y_t.data_ptr<T>();
  T* dxg = dxg_t.data_ptr<T>();
  T* dh_state = dh_state_t.data_ptr<T>();
  Bf16Rows dg16(amx, B, H, 2);  // dG_t in two bfloat16 halves, for AMX

  run_region(region_threads(H), [&](int tid, int threads) {
    const Slice u = slice_of(H, tid, threads);
    const int64_t n = u.size();
    StepGemm<T> carry_gemm(path, amx, w_hh + u.begin, H, false, B, n, H, 2);
    std::vector<T> carry(B * n);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(dh_state + b * H + u.begin, n, carry.data() + b * n);
    }
    // The carry into h_{t-1}: W_hh^T dG_t for rows active at t.
    const auto carry_from = [&](int64_t t) {
      carry_gemm.run(dxg + t * B * H, H, dg16.data(t));
      for (int64_t b = 0; b < B; ++b) {
        if (mask.active(b, t)) {
          std::copy_n(carry_gemm.out() + b * carry_gemm.out_stride(), n, carry.data() + b * n);
        }
      }
    };
    for (int64_t t = T_ - 1; t >= 0; --t) {
      if (t < T_ - 1) {
        if (cuts_carry(tbptt, t + 1)) {
          std::fill(carry.begin(), carry.end(), T(0));
        } else {
          carry_from(t + 1);
        }
      }
      for (int64_t b = 0; b < B; ++b) {
        const int64_t at = b * H + u.begin;
        T* row_dxg = dxg + t * B * H + at;
        if (!mask.active(b, t)) {  // the carry passes through unchanged
          std::fill_n(row_dxg, n, T(0));
          continue;
        }
        T* dh = carry.data() + b * n;
        const T* row_dy = dy + t * B * H + at;
        for (int64_t j = 0; j < n; ++j) {
          dh[j] += row_dy[j];
        }
        row_kernel({n, y + t * B * H + at, dh, row_dxg});
      }
      publish_rows(dg16, amx, t, B, u, dxg + t * B * H, H);
      step_barrier();  // dG_t complete
    }
    carry_from(0);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(carry.data() + b * n, n, dh_state + b * H + u.begin);
    }
  });
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

  const auto compute = state_dtype(dtype);
  at::Tensor dxg = new_output({s.steps, s.batch, s.hidden}, y.options().dtype(compute));
  at::Tensor dh_state = dh_n.to(compute).contiguous().clone();
  const at::Tensor dy_c = dy.to(compute).contiguous();
  const at::Tensor y_c = y.to(compute).contiguous();
  const at::Tensor w_hh_c = w_hh.to(compute).contiguous();
  AT_DISPATCH_FLOATING_TYPES(compute, "rnn_backward_cpu", [&] {
    rnn_backward_loop<scalar_t>(s, mask, relu, tbptt, amx_recurrence(dtype == at::kBFloat16),
                                dy_c, w_hh_c, y_c, dxg, dh_state);
  });
  // 16-bit: dW_hh from dG rounded to the input dtype, as the dxg returned
  // is, on the 16-bit GEMMs.
  const at::Tensor dxg_out = dxg.to(dtype);
  const at::Tensor dw_hh = weight_gradient(dxg_out.view({s.steps * s.batch, s.hidden}),
                                           previous_hidden(h0, y));
  return {dxg_out, dw_hh, dh_state.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("rnn_forward", &rnn_forward_cpu);
  m.impl("rnn_backward", &rnn_backward_cpu);
}

}  // namespace rnnkernels
