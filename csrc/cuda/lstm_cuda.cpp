// LSTM recurrence on CUDA tensors (op contract of DESIGN.md, cell "lstm";
// the same op schemas as csrc/cpu/lstm.cpp, for the CUDA dispatch key). The
// forward runs on the persistent path when RNNKERNELS_CUDA_PATH selects it
// (persistent_glue.h), and so does the backward; otherwise the step path
// runs. Step forward, per step: hg = h_{t-1} W_hh^T (one GEMM through
// ATen, on the current stream, at torch.nn's RNN precision for float32), then the
// fused pointwise kernel of step_forward.cu, then the optional projection
// GEMM and a masked copy into y_t and the state. Backward walks the steps in
// reverse: carry combine, pointwise kernel, and dG_t W_hh for step t-1 unless
// tbptt cuts there; dW_hh and dW_hr are one GEMM each after the loop.
// The cell state and the gradient carries stay in fp32 (fp64 for fp64).
#include <torch/library.h>

#include "../fp32_precision.h"
#include "glue.h"
#include "persistent_glue.h"

namespace rnnkernels {
namespace cuda {
namespace {

struct LstmForwardTensors {
  at::Tensor xg, w_hh, w_hr;   // inputs, contiguous; w_hr undefined without projection
  at::Tensor y, gates, cells;  // outputs; gates/cells hold one step when not training
  at::Tensor h_state;          // [B, H_out] in the input dtype: the next GEMM's operand
  at::Tensor c_state;          // [B, H] in the accumulation dtype
};

template <typename scalar_t>
void lstm_forward_steps(const RecurrenceShape& s, const DeviceLengths& rows, bool training,
                        LstmForwardTensors& io, cudaStream_t stream) {
  using k_t = kernel_t<scalar_t>;
  const int64_t B = s.batch, H = s.hidden, P = s.hidden_out;
  const bool proj = io.w_hr.defined();
  const auto opts = io.xg.options();
  at::Tensor hg = at::empty({B, 4 * H}, opts);
  at::Tensor h_full = proj ? at::empty({B, H}, opts) : at::Tensor();
  at::Tensor projected = proj ? at::empty({B, P}, opts) : at::Tensor();
  const at::Tensor w_hh_t = io.w_hh.t();

  for (int64_t t = 0; t < s.steps; ++t) {
    at::mm_out(hg, io.h_state, w_hh_t);
    const int64_t slot = training ? t : 0;
    LstmForwardStepParams<k_t> p;
    p.xg = ptr<scalar_t>(io.xg[t]);
    p.hg = ptr<scalar_t>(hg);
    p.c_state = acc_ptr<scalar_t>(io.c_state);
    p.gates = ptr<scalar_t>(io.gates[slot]);
    p.cells = ptr<scalar_t>(io.cells[slot]);
    p.h_out = proj ? ptr<scalar_t>(h_full) : ptr<scalar_t>(io.y[t]);
    p.h_state = proj ? nullptr : ptr<scalar_t>(io.h_state);
    p.rows = rows.at_step(t);
    p.batch = B;
    p.hidden = H;
    check_launch(launch_lstm_forward_step(p, stream), "the LSTM forward step kernel");

    if (proj) {
      at::mm_out(projected, h_full, io.w_hr.t());
      MaskedStateUpdateParams<k_t> m;
      m.source = ptr<scalar_t>(projected);
      m.y = ptr<scalar_t>(io.y[t]);
      m.h_state = ptr<scalar_t>(io.h_state);
      m.rows = rows.at_step(t);
      m.batch = B;
      m.width = P;
      check_launch(launch_masked_state_update(m, stream), "the LSTM projection update kernel");
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward_cuda(
    const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& lengths,
    bool training) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_cuda_recurrence("lstm", xg, w_hh, 4);
  const auto dtype = xg.scalar_type();
  const auto device = xg.device();
  check_lstm_forward_operands(s, w_hh, h0, c0, w_hr, CudaOperandCheck{dtype, device});
  const c10::cuda::CUDAGuard guard(device);
  // float32 GEMMs at torch.nn's RNN precision (fp32_precision.h), not the matmul switch's.
  const MatmulPrecisionFollowsRnn precision(dtype == at::kFloat);
  const DeviceLengths rows(lengths, s, device);

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
  io.c_state = acc_copy(c0);
  PersistentForwardTensors persistent;
  persistent.xg = io.xg;
  persistent.w_hh = io.w_hh;
  persistent.y = io.y;
  persistent.gates = io.gates;
  persistent.cells = io.cells;
  persistent.h0 = io.h_state;
  persistent.c_state = io.c_state;
  if (try_persistent_forward(CellKind::kLstm, s, io.w_hr.defined(), rows, training, persistent)) {
    return {io.y, persistent.h_n, io.c_state.to(dtype), io.gates, io.cells};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  RK_DISPATCH_CUDA_FLOATING(dtype, "lstm_forward_cuda", [&] {
    lstm_forward_steps<scalar_t>(s, rows, training, io, stream);
  });
  return {io.y, io.h_state, io.c_state.to(dtype), io.gates, io.cells};
}

struct LstmBackwardTensors {
  at::Tensor dy, w_hh, w_hr, c0, gates, cells;  // inputs, contiguous
  at::Tensor dxg, dr;    // dG_t per step; dh_t per step (projection only)
  at::Tensor carry, dc;  // accumulation dtype: [B, H_out] and [B, H]
};

template <typename scalar_t>
void lstm_backward_steps(const RecurrenceShape& s, const DeviceLengths& rows, int64_t tbptt,
                         LstmBackwardTensors& io, RecurrentGrad& rec, cudaStream_t stream) {
  using k_t = kernel_t<scalar_t>;
  const int64_t B = s.batch, H = s.hidden, P = s.hidden_out;
  const bool proj = io.w_hr.defined();
  const at::ScalarType acc = acc_dtype(io.dy.scalar_type());
  at::Tensor dh = at::empty({B, P}, io.dy.options().dtype(acc));
  at::Tensor dh_full = proj ? at::empty({B, H}, io.dy.options().dtype(acc)) : dh;

  for (int64_t t = s.steps - 1; t >= 0; --t) {
    combine_carry<scalar_t>(io.carry, rec, io.dy[t], dh, proj ? io.dr[t] : at::Tensor(),
                            rows.at_step(t), "the LSTM carry combine kernel", stream);
    if (proj) {
      dh_full.copy_(at::mm(io.dr[t], io.w_hr));
    }

    LstmBackwardStepParams<k_t> p;
    p.gates = ptr<scalar_t>(io.gates[t]);
    p.cells = ptr<scalar_t>(io.cells[t]);
    p.cells_prev = ptr<scalar_t>(t > 0 ? io.cells[t - 1] : io.c0);
    p.dh = acc_ptr<scalar_t>(dh_full);
    p.dc = acc_ptr<scalar_t>(io.dc);
    p.dxg = ptr<scalar_t>(io.dxg[t]);
    p.rows = rows.at_step(t);
    p.batch = B;
    p.hidden = H;
    check_launch(launch_lstm_backward_step(p, stream), "the LSTM backward step kernel");

    rec.after_step(tbptt, t, io.dxg[t], io.w_hh, {io.carry, io.dc});
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward_cuda(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& dc_n, const at::Tensor& w_hh,
    const at::Tensor& h0, const at::Tensor& c0, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& lengths, const at::Tensor& y, const at::Tensor& gates,
    const at::Tensor& cells, int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_cuda_recurrence("lstm", gates, w_hh, 4);
  const auto dtype = gates.scalar_type();
  const auto device = gates.device();
  const bool proj = w_hr.has_value();
  check_lstm_backward_operands(s, dy, y, dh_n, dc_n, h0, c0, cells, w_hr,
                               CudaOperandCheck{dtype, device});
  const c10::cuda::CUDAGuard guard(device);
  // float32 GEMMs at torch.nn's RNN precision (fp32_precision.h), not the matmul switch's.
  const MatmulPrecisionFollowsRnn precision(dtype == at::kFloat);
  const DeviceLengths rows(lengths, s, device);

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
  io.carry = acc_copy(dh_n);
  io.dc = acc_copy(dc_n);
  RecurrentGrad rec(s.batch, s.hidden_out, opts);
  PersistentBackwardTensors persistent;
  persistent.dy = io.dy;
  persistent.w_hh = io.w_hh;
  persistent.y = y.contiguous();
  persistent.gates = io.gates;
  persistent.cells = io.cells;
  persistent.c0 = io.c0;
  persistent.carry = io.carry;
  persistent.dc = io.dc;
  persistent.dxg = io.dxg;
  if (!try_persistent_backward(CellKind::kLstm, s, proj, rows, tbptt, persistent)) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    RK_DISPATCH_CUDA_FLOATING(dtype, "lstm_backward_cuda", [&] {
      lstm_backward_steps<scalar_t>(s, rows, tbptt, io, rec, stream);
    });
  }

  const at::Tensor dh0 = rec.added_to(io.carry).to(dtype);
  const at::Tensor dxg_rows = io.dxg.view({-1, 4 * s.hidden});
  at::Tensor dw_hh = at::mm(dxg_rows.t(), previous_hidden(h0.contiguous(), y.contiguous()));
  at::Tensor dw_hr = at::empty({0}, opts);
  if (proj) {
    // Unprojected outputs o * tanh(c), recomputed; zero on ended rows.
    const at::Tensor h_full = io.gates.narrow(2, 3 * s.hidden, s.hidden) * io.cells.tanh();
    dw_hr = at::mm(io.dr.view({-1, s.hidden_out}).t(), h_full.view({-1, s.hidden}));
  }
  return {io.dxg, dw_hh, dh0, io.dc.to(dtype), dw_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("lstm_forward", &lstm_forward_cuda);
  m.impl("lstm_backward", &lstm_backward_cuda);
}

}  // namespace cuda
}  // namespace rnnkernels
