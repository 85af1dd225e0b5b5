// LSTM recurrence on the CPU (op contract of DESIGN.md, cell "lstm").
//
// The whole sequence runs in one parallel region (region.h): each thread owns
// a slice of the H units, packs its 4 gate rows of W_hh once, and per step
// computes acc = h_{t-1} W_slice^T (one packed GEMM; xg is added in the gate
// math, not copied in), the gate math of its units (pointwise.h), and meets
// the others at the barrier. With a projection a second phase per step, over
// slices of the P outputs, computes h_t = W_hr (o * tanh(c_t)).
//
// Backward runs the steps in reverse the same way: each thread owns units and
// packs its columns of W_hh, so the carry into h_{t-1} of its units is one
// GEMM of the full dG_{t+1}; dW_hh and dW_hr are one GEMM each after the loop.
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

struct LstmForwardTensors {
  at::Tensor xg, w_hh, w_hr;   // inputs; w_hr undefined without projection
  at::Tensor y, gates, cells;  // outputs; gates/cells hold one step when not training
  at::Tensor h_state, c_state;
};

template <typename T>
void lstm_forward_loop(const RecurrenceShape& s, const RowMask& mask, bool training,
                       at::ScalarType round, LstmForwardTensors& io) {
  const int64_t T_ = s.steps, B = s.batch, H = s.hidden, P = s.hidden_out, G4 = 4 * H;
  const bool proj = io.w_hr.defined();
  const PointwiseKernels<T> k = pointwise_kernels<T>(active_isa());
  const GemmPath path = gemm_path(io.xg.scalar_type());
  const bool amx = amx_recurrence(round == at::kBFloat16);
  // h_{t-1} and h_t, [2][B, P]; the unprojected h of every unit, [B, H].
  std::vector<T> h_buf(2 * B * P);
  std::copy_n(io.h_state.data_ptr<T>(), B * P, h_buf.data());
  Bf16Rows h16(amx, B, P);  // the same h in bfloat16, for AMX
  publish_rows(h16, amx, 0, B, Slice{0, P}, h_buf.data(), P);
  std::vector<T> h_full(proj ? B * H : 0, T(0));
  const T* xg = io.xg.data_ptr<T>();
  const T* w_hh = io.w_hh.data_ptr<T>();
  const T* w_hr = proj ? io.w_hr.data_ptr<T>() : nullptr;
  T* y = io.y.data_ptr<T>();
  T* gates = io.gates.data_ptr<T>();
  T* cells = io.cells.data_ptr<T>();
  T* c = io.c_state.data_ptr<T>();

  run_region(region_threads(H), [&](int tid, int threads) {
    const Slice u = slice_of(H, tid, threads);
    const Slice q = slice_of(P, tid, threads);
    const int64_t n = u.size();
    std::vector<T> rows(G4 == 0 ? 0 : 4 * n * P);  // this slice's i, f, g, o rows of W_hh
    for (int64_t g = 0; g < 4; ++g) {
      std::copy_n(w_hh + (g * H + u.begin) * P, n * P, rows.data() + g * n * P);
    }
    StepGemm<T> gemm(path, amx, rows.data(), P, true, B, 4 * n, P);
    const SliceGemm<T> proj_gemm(path, proj ? w_hr + q.begin * H : nullptr, H, true,
                                 proj ? B : 0, q.size(), H);
    std::vector<T> proj_acc(proj ? B * q.size() : 0);

    for (int64_t t = 0; t < T_; ++t) {
      const T* h_prev = h_buf.data() + (t % 2) * B * P;
      T* h_next = h_buf.data() + ((t + 1) % 2) * B * P;
      T* y_t = y + t * B * P;
      const int64_t slot = training ? t : 0;
      gemm.run(h_prev, P, h16.data(t));
      const T* acc = gemm.out();
      for (int64_t b = 0; b < B; ++b) {
        T* row_gates = gates + (slot * B + b) * G4 + u.begin;
        T* row_cells = cells + (slot * B + b) * H + u.begin;
        T* row_c = c + b * H + u.begin;
        if (mask.active(b, t)) {
          T* h_out = proj ? h_full.data() + b * H + u.begin : y_t + b * P + u.begin;
          k.lstm_forward({n, H, acc + b * gemm.out_stride(), xg + (t * B + b) * G4 + u.begin, row_c,
                          row_gates, row_cells, h_out,
                          proj ? nullptr : h_next + b * P + u.begin});
          if (!proj) {  // h as stored in the input dtype
            round_with(k, h_out, n, round);
            round_with(k, h_next + b * P + u.begin, n, round);
          }
          continue;
        }
        for (int64_t g = 0; g < 4; ++g) {
          std::fill_n(row_gates + g * H, n, T(0));
        }
        std::copy_n(row_c, n, row_cells);
        if (!proj) {  // an ended row keeps its state and writes zeros
          std::fill_n(y_t + b * P + u.begin, n, T(0));
          std::copy_n(h_prev + b * P + u.begin, n, h_next + b * P + u.begin);
        }
      }
      if (proj) {
        step_barrier();  // h_full complete
        proj_gemm.run(h_full.data(), H, proj_acc.data(), q.size());
        for (int64_t b = 0; b < B; ++b) {
          const bool on = mask.active(b, t);
          for (int64_t j = 0; j < q.size(); ++j) {
            T h = proj_acc[b * q.size() + j];
            round_to(&h, 1, round);
            y_t[b * P + q.begin + j] = on ? h : T(0);
            h_next[b * P + q.begin + j] = on ? h : h_prev[b * P + q.begin + j];
          }
        }
      }
      publish_rows(h16, amx, t + 1, B, proj ? q : u, h_next, P);
      step_barrier();  // h_t complete
    }
  });
  std::copy_n(h_buf.data() + (T_ % 2) * B * P, B * P, io.h_state.data_ptr<T>());
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

  const auto compute = state_dtype(dtype);
  const auto opts = xg.options().dtype(compute);
  const int64_t saved_steps = training ? s.steps : 1;
  LstmForwardTensors io;
  io.xg = xg.to(compute).contiguous();
  io.w_hh = w_hh.to(compute).contiguous();
  io.w_hr = w_hr.has_value() ? w_hr->to(compute).contiguous() : at::Tensor();
  io.y = new_output({s.steps, s.batch, s.hidden_out}, opts);
  io.gates = new_output({saved_steps, s.batch, 4 * s.hidden}, opts);
  io.cells = new_output({saved_steps, s.batch, s.hidden}, opts);
  io.h_state = h0.to(compute).contiguous().clone();
  io.c_state = c0.to(compute).contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(compute, "lstm_forward_cpu", [&] {
    lstm_forward_loop<scalar_t>(s, mask, training, dtype, io);
  });
  return {io.y.to(dtype), io.h_state.to(dtype), io.c_state.to(dtype), io.gates, io.cells};
}

struct LstmBackwardTensors {
  at::Tensor dy, w_hh, w_hr, c0, gates, cells;  // inputs
  at::Tensor dxg, dr;                           // dG_t per step; dh_t per step (projection only)
  at::Tensor dh_state, dc_state;                // carries, [B, H_out] and [B, H]
};

template <typename T>
void lstm_backward_loop(const RecurrenceShape& s, const RowMask& mask, int64_t tbptt, bool amx,
                        LstmBackwardTensors& io) {
  const int64_t T_ = s.steps, B = s.batch, H = s.hidden, P = s.hidden_out, G4 = 4 * H;
  const bool proj = io.w_hr.defined();
  const PointwiseKernels<T> k = pointwise_kernels<T>(active_isa());
  const GemmPath path = gemm_path(io.dy.scalar_type());
  std::vector<T> dh_shared(proj ? B * P : 0);  // dh_t over the P outputs (projection only)
  Bf16Rows dg16(amx, B, G4, 2);  // dG_t in two bfloat16 halves, for AMX
  const T* dy = io.dy.data_ptr<T>();
  const T* w_hh = io.w_hh.data_ptr<T>();
  const T* w_hr = proj ? io.w_hr.data_ptr<T>() : nullptr;
  const T* gates = io.gates.data_ptr<T>();
  const T* cells = io.cells.data_ptr<T>();
  const T* c0 = io.c0.data_ptr<T>();
  T* dxg = io.dxg.data_ptr<T>();
  T* dr = proj ? io.dr.data_ptr<T>() : nullptr;
  T* dh_state = io.dh_state.data_ptr<T>();
  T* dc = io.dc_state.data_ptr<T>();

  run_region(region_threads(H), [&](int tid, int threads) {
    const Slice u = slice_of(H, tid, threads);
    // The carry lives over the outputs h_t: the units without projection,
    // a slice of the P outputs with it.
    const Slice q = proj ? slice_of(P, tid, threads) : u;
    const int64_t n = u.size(), m = q.size();
    // dh_{t-1}[:, q] = dG_t W_hh[:, q]; with projection dh_full[:, u] = dh_t W_hr[:, u].
    StepGemm<T> carry_gemm(path, amx, w_hh + q.begin, P, false, B, m, G4, 2);
    const SliceGemm<T> proj_gemm(path, proj ? w_hr + u.begin : nullptr, H, false,
                                 proj ? B : 0, n, P);
    std::vector<T> carry(B * m), dh_full(proj ? B * n : 0);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(dh_state + b * P + q.begin, m, carry.data() + b * m);
    }
    // The carry into h_{t-1} from step t's dG (all units), for rows active at t.
    const auto carry_from = [&](int64_t t) {
      carry_gemm.run(dxg + t * B * G4, G4, dg16.data(t));
      for (int64_t b = 0; b < B; ++b) {
        if (mask.active(b, t)) {
          std::copy_n(carry_gemm.out() + b * carry_gemm.out_stride(), m, carry.data() + b * m);
        }
      }
    };

    for (int64_t t = T_ - 1; t >= 0; --t) {
      if (t < T_ - 1) {
        if (cuts_carry(tbptt, t + 1)) {
          std::fill(carry.begin(), carry.end(), T(0));
          for (int64_t b = 0; b < B; ++b) {
            std::fill_n(dc + b * H + u.begin, n, T(0));
          }
        } else {
          carry_from(t + 1);
        }
      }
      // y_t of an ended row is a constant zero: its dy does not reach the state.
      for (int64_t b = 0; b < B; ++b) {
        if (mask.active(b, t)) {
          const T* row_dy = dy + (t * B + b) * P + q.begin;
          for (int64_t j = 0; j < m; ++j) {
            carry[b * m + j] += row_dy[j];
          }
        }
        if (proj) {
          std::copy_n(carry.data() + b * m, m, dh_shared.data() + b * P + q.begin);
          T* row_dr = dr + (t * B + b) * P + q.begin;
          if (mask.active(b, t)) {
            std::copy_n(carry.data() + b * m, m, row_dr);
          } else {
            std::fill_n(row_dr, m, T(0));
          }
        }
      }
      const T* dh = carry.data();
      int64_t dh_stride = m;
      if (proj) {
        step_barrier();  // dh_t complete
        proj_gemm.run(dh_shared.data(), P, dh_full.data(), n);
        dh = dh_full.data();
        dh_stride = n;
      }
      const T* c_prev = t > 0 ? cells + (t - 1) * B * H : c0;
      for (int64_t b = 0; b < B; ++b) {
        T* row_dxg = dxg + (t * B + b) * G4 + u.begin;
        if (!mask.active(b, t)) {  // dc passes through unchanged
          for (int64_t g = 0; g < 4; ++g) {
            std::fill_n(row_dxg + g * H, n, T(0));
          }
          continue;
        }
        k.lstm_backward({n, H, gates + (t * B + b) * G4 + u.begin,
                         cells + (t * B + b) * H + u.begin, c_prev + b * H + u.begin,
                         dh + b * dh_stride, dc + b * H + u.begin, row_dxg});
      }
      for (int64_t g = 0; g < 4; ++g) {
        publish_rows(dg16, amx, t, B, Slice{g * H + u.begin, g * H + u.end}, dxg + t * B * G4, G4);
      }
      step_barrier();  // dG_t complete
    }
    carry_from(0);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(carry.data() + b * m, m, dh_state + b * P + q.begin);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward_cpu(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& dc_n,
    const at::Tensor& w_hh, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& lengths,
    const at::Tensor& y, const at::Tensor& gates, const at::Tensor& cells,
    int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_saved_recurrence("lstm", gates, w_hh, 4);
  const auto dtype = w_hh.scalar_type();
  const bool proj = w_hr.has_value();
  check_lstm_backward_operands(s, dy, y, dh_n, dc_n, h0, c0, cells, w_hr,
                               CpuOperandCheck{dtype});
  const RowMask mask(lengths, s);

  const auto compute = state_dtype(dtype);
  const auto opts = gates.options();
  LstmBackwardTensors io;
  io.dy = dy.to(compute).contiguous();
  io.w_hh = w_hh.to(compute).contiguous();
  io.w_hr = proj ? w_hr->to(compute).contiguous() : at::Tensor();
  io.c0 = c0.to(compute).contiguous();
  io.gates = gates.contiguous();
  io.cells = cells.contiguous();
  io.dxg = new_output({s.steps, s.batch, 4 * s.hidden}, opts);
  io.dr = proj ? new_output({s.steps, s.batch, s.hidden_out}, opts) : at::Tensor();
  io.dh_state = dh_n.to(compute).contiguous().clone();
  io.dc_state = dc_n.to(compute).contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(compute, "lstm_backward_cpu", [&] {
    lstm_backward_loop<scalar_t>(s, mask, tbptt, amx_recurrence(dtype == at::kBFloat16), io);
  });

  const int64_t rows = s.steps * s.batch;
  // 16-bit: dW_hh from dG rounded to the input dtype, as the dxg returned is,
  // on the 16-bit GEMMs.
  const at::Tensor dxg = io.dxg.to(dtype);
  const at::Tensor dw_hh = weight_gradient(dxg.view({rows, 4 * s.hidden}),
                                           previous_hidden(h0.to(dtype), y.to(dtype)));
  at::Tensor dw_hr = at::empty({0}, opts);
  if (proj) {
    // Unprojected outputs o * tanh(c), recomputed; zero on ended rows.
    const at::Tensor h_full = io.gates.narrow(2, 3 * s.hidden, s.hidden) * io.cells.tanh();
    dw_hr = at::mm(io.dr.view({rows, s.hidden_out}).t(), h_full.reshape({rows, s.hidden}));
  }
  return {dxg, dw_hh, io.dh_state.to(dtype), io.dc_state.to(dtype), dw_hr.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_forward", &lstm_forward_cpu);
  m.impl("lstm_backward", &lstm_backward_cpu);
}

}  // namespace rnnkernels
