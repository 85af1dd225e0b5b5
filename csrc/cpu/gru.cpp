// GRU recurrence on the CPU (op contract of DESIGN.md, cell "gru").
//
// One parallel region per sequence (region.h), each thread owning a slice of
// the H units: per step acc = h_{t-1} W_slice^T over its r, z, n rows (one
// packed GEMM), then the gate math; b_hn joins the n row inside
// r * (W_hn h + b_hn), which is why it is not folded into xg. Backward
// produces two gradients per step: dxg (input side, [dr, dz, dn]) and the
// recurrent one [dr, dz, dhn], whose product with the thread's columns of
// W_hh plus the direct z * dh path is the carry; dW_hh and db_hn follow the
// loop.
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

struct GruForwardTensors {
  at::Tensor xg, w_hh, b_hn;  // b_hn undefined without bias
  at::Tensor y, gates, hn;    // gates/hn hold one step when not training
  at::Tensor h_state;
};

template <typename T>
void gru_forward_loop(const RecurrenceShape& s, const RowMask& mask, bool training,
                      at::ScalarType round, GruForwardTensors& io) {
  const int64_t T_ = s.steps, B = s.batch, H = s.hidden, G3 = 3 * H;
  const PointwiseKernels<T> k = pointwise_kernels<T>(active_isa());
  const GemmPath path = gemm_path(io.xg.scalar_type());
  const bool amx = amx_recurrence(round == at::kBFloat16);
  std::vector<T> h_buf(2 * B * H);  // h_{t-1} and h_t
  std::copy_n(io.h_state.data_ptr<T>(), B * H, h_buf.data());
  Bf16Rows h16(amx, B, H);  // the same h in bfloat16, for AMX
  publish_rows(h16, amx, 0, B, Slice{0, H}, h_buf.data(), H);
  const T* xg = io.xg.data_ptr<T>();
  const T* w_hh = io.w_hh.data_ptr<T>();
  const T* b_hn = io.b_hn.defined() ? io.b_hn.data_ptr<T>() : nullptr;
  T* y = io.y.data_ptr<T>();
  T* gates = io.gates.data_ptr<T>();
  T* hn = io.hn.data_ptr<T>();

  run_region(region_threads(H), [&](int tid, int threads) {
    const Slice u = slice_of(H, tid, threads);
    const int64_t n = u.size();
    std::vector<T> rows(3 * n * H);  // this slice's r, z, n rows of W_hh
    for (int64_t g = 0; g < 3; ++g) {
      std::copy_n(w_hh + (g * H + u.begin) * H, n * H, rows.data() + g * n * H);
    }
    StepGemm<T> gemm(path, amx, rows.data(), H, true, B, 3 * n, H);

    for (int64_t t = 0; t < T_; ++t) {
      const T* h_prev = h_buf.data() + (t % 2) * B * H;
      T* h_next = h_buf.data() + ((t + 1) % 2) * B * H;
      const int64_t slot = training ? t : 0;
      gemm.run(h_prev, H, h16.data(t));
      for (int64_t b = 0; b < B; ++b) {
        T* row_gates = gates + (slot * B + b) * G3 + u.begin;
        T* row_hn = hn + (slot * B + b) * H + u.begin;
        T* row_y = y + (t * B + b) * H + u.begin;
        if (mask.active(b, t)) {
          k.gru_forward({n, H, gemm.out() + b * gemm.out_stride(), xg + (t * B + b) * G3 + u.begin,
                         b_hn == nullptr ? nullptr : b_hn + u.begin, h_prev + b * H + u.begin,
                         row_gates, row_hn, row_y, h_next + b * H + u.begin});
          round_with(k, row_y, n, round);  // h as stored in the input dtype
          round_with(k, h_next + b * H + u.begin, n, round);
          continue;
        }
        for (int64_t g = 0; g < 3; ++g) {  // an ended row keeps its state, writes zeros
          std::fill_n(row_gates + g * H, n, T(0));
        }
        std::fill_n(row_hn, n, T(0));
        std::fill_n(row_y, n, T(0));
        std::copy_n(h_prev + b * H + u.begin, n, h_next + b * H + u.begin);
      }
      publish_rows(h16, amx, t + 1, B, u, h_next, H);
      step_barrier();  // h_t complete
    }
  });
  std::copy_n(h_buf.data() + (T_ % 2) * B * H, B * H, io.h_state.data_ptr<T>());
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

  const auto compute = state_dtype(dtype);
  const auto opts = xg.options().dtype(compute);
  const int64_t saved_steps = training ? s.steps : 1;
  GruForwardTensors io;
  io.xg = xg.to(compute).contiguous();
  io.w_hh = w_hh.to(compute).contiguous();
  io.b_hn = b_hn.has_value() ? b_hn->to(compute).contiguous() : at::Tensor();
  io.y = new_output({s.steps, s.batch, s.hidden}, opts);
  io.gates = new_output({saved_steps, s.batch, 3 * s.hidden}, opts);
  io.hn = new_output({saved_steps, s.batch, s.hidden}, opts);
  io.h_state = h0.to(compute).contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(compute, "gru_forward_cpu", [&] {
    gru_forward_loop<scalar_t>(s, mask, training, dtype, io);
  });
  return {io.y.to(dtype), io.h_state.to(dtype), io.gates, io.hn};
}

struct GruBackwardTensors {
  at::Tensor dy, w_hh, h0, y, gates, hn;  // inputs
  at::Tensor dxg, dg_rec;                 // [dr, dz, dn] and [dr, dz, dhn] per step
  at::Tensor dh_state;                    // carry, [B, H]
};

template <typename T>
void gru_backward_loop(const RecurrenceShape& s, const RowMask& mask, int64_t tbptt, bool amx,
                       GruBackwardTensors& io) {
  const int64_t T_ = s.steps, B = s.batch, H = s.hidden, G3 = 3 * H;
  const PointwiseKernels<T> k = pointwise_kernels<T>(active_isa());
  const GemmPath path = gemm_path(io.dy.scalar_type());
  const T* dy = io.dy.data_ptr<T>();
  const T* w_hh = io.w_hh.data_ptr<T>();
  const T* h0 = io.h0.data_ptr<T>();
  const T* y = io.y.data_ptr<T>();
  const T* gates = io.gates.data_ptr<T>();
  const T* hn = io.hn.data_ptr<T>();
  T* dxg = io.dxg.data_ptr<T>();
  T* drec = io.dg_rec.data_ptr<T>();
  T* dh_state = io.dh_state.data_ptr<T>();
  Bf16Rows drec16(amx, B, G3, 2);  // the recurrent gradient in two bfloat16 halves, for AMX

  run_region(region_threads(H), [&](int tid, int threads) {
    const Slice u = slice_of(H, tid, threads);
    const int64_t n = u.size();
    StepGemm<T> carry_gemm(path, amx, w_hh + u.begin, H, false, B, n, G3, 2);
    std::vector<T> carry(B * n), direct(B * n);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(dh_state + b * H + u.begin, n, carry.data() + b * n);
    }
    // The carry into h_{t-1} from step t, for rows active at t: the
    // recurrent gradient through W_hh plus the direct z * dh path.
    const auto carry_from = [&](int64_t t) {
      carry_gemm.run(drec + t * B * G3, G3, drec16.data(t));
      for (int64_t b = 0; b < B; ++b) {
        if (mask.active(b, t)) {
          const T* acc = carry_gemm.out() + b * carry_gemm.out_stride();
          for (int64_t j = 0; j < n; ++j) {
            carry[b * n + j] = acc[j] + direct[b * n + j];
          }
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
      // For a row active at t, y_{t-1} is its real h_{t-1}.
      const T* h_prev = t > 0 ? y + (t - 1) * B * H : h0;
      for (int64_t b = 0; b < B; ++b) {
        T* row_dxg = dxg + (t * B + b) * G3 + u.begin;
        T* row_rec = drec + (t * B + b) * G3 + u.begin;
        if (!mask.active(b, t)) {  // the carry passes through unchanged
          for (int64_t g = 0; g < 3; ++g) {
            std::fill_n(row_dxg + g * H, n, T(0));
            std::fill_n(row_rec + g * H, n, T(0));
          }
          continue;
        }
        T* dh = carry.data() + b * n;
        const T* row_dy = dy + (t * B + b) * H + u.begin;
        for (int64_t j = 0; j < n; ++j) {
          dh[j] += row_dy[j];
        }
        k.gru_backward({n, H, gates + (t * B + b) * G3 + u.begin, hn + (t * B + b) * H + u.begin,
                        h_prev + b * H + u.begin, dh, row_dxg, row_rec, direct.data() + b * n});
      }
      for (int64_t g = 0; g < 3; ++g) {
        publish_rows(drec16, amx, t, B, Slice{g * H + u.begin, g * H + u.end}, drec + t * B * G3, G3);
      }
      step_barrier();  // the recurrent gradient of step t complete
    }
    carry_from(0);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(carry.data() + b * n, n, dh_state + b * H + u.begin);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward_cpu(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& w_hh,
    const at::Tensor& h0, const std::optional<at::Tensor>& lengths,
    const at::Tensor& y, const at::Tensor& gates, const at::Tensor& hn,
    bool has_b_hn, int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_saved_recurrence("gru", gates, w_hh, 3);
  const auto dtype = w_hh.scalar_type();
  check_gru_backward_operands(s, dy, y, hn, dh_n, h0, CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  const auto compute = state_dtype(dtype);
  const auto opts = gates.options();
  GruBackwardTensors io;
  io.dy = dy.to(compute).contiguous();
  io.w_hh = w_hh.to(compute).contiguous();
  io.h0 = h0.to(compute).contiguous();
  io.y = y.to(compute).contiguous();
  io.gates = gates.contiguous();
  io.hn = hn.contiguous();
  io.dxg = new_output({s.steps, s.batch, 3 * s.hidden}, opts);
  io.dg_rec = new_output({s.steps, s.batch, 3 * s.hidden}, opts);
  io.dh_state = dh_n.to(compute).contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(compute, "gru_backward_cpu", [&] {
    gru_backward_loop<scalar_t>(s, mask, tbptt, amx_recurrence(dtype == at::kBFloat16), io);
  });

  // 16-bit: from the recurrent gradient rounded to the input dtype, as the
  // dxg returned is, on the 16-bit GEMMs.
  const at::Tensor dw_hh =
      weight_gradient(io.dg_rec.view({s.steps * s.batch, 3 * s.hidden}).to(dtype),
                      previous_hidden(h0.to(dtype), y.to(dtype)));
  at::Tensor db_hn = has_b_hn ? io.dg_rec.narrow(2, 2 * s.hidden, s.hidden).sum({0, 1})
                              : at::empty({0}, opts);
  return {io.dxg.to(dtype), dw_hh, io.dh_state.to(dtype), db_hn.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("gru_forward", &gru_forward_cpu);
  m.impl("gru_backward", &gru_backward_cpu);
}

}  // namespace rnnkernels
