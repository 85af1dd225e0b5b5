// GRU recurrence on CUDA tensors (op contract of DESIGN.md, cell "gru"; the
// schemas of csrc/ops.cpp for the CUDA dispatch key). The forward runs on the
// persistent path when RNNKERNELS_CUDA_PATH selects it (persistent_glue.h),
// and so does the backward; otherwise the step path runs. Step forward, per
// step: hg = h_{t-1} W_hh^T (one ATen GEMM on the current stream), then the
// fused pointwise kernel, where b_hn joins the n row inside r * (W_hn h + b_hn).
// h is carried in fp32 (fp64 for fp64) beside the copy the GEMM reads.
// Backward produces dxg = [dr, dz, dn] and the recurrent gradient
// [dr, dz, dhn], which feeds the carry and, after the loop, dW_hh and db_hn.
#include <torch/library.h>

#include "../fp32_precision.h"
#include "glue.h"
#include "persistent_glue.h"

namespace rnnkernels {
namespace cuda {
namespace {

struct GruForwardTensors {
  at::Tensor xg, w_hh, b_hn;  // inputs, contiguous; b_hn undefined without bias
  at::Tensor y, gates, hn;    // outputs; gates/hn hold one step when not training
  at::Tensor h_state;         // [B, H] input dtype: the next GEMM's operand
  at::Tensor h_acc;           // [B, H] accumulation dtype: the state the gate math reads
};

template <typename scalar_t>
void gru_forward_steps(const RecurrenceShape& s, const DeviceLengths& rows, bool training,
                       GruForwardTensors& io, cudaStream_t stream) {
  using k_t = kernel_t<scalar_t>;
  at::Tensor hg = at::empty({s.batch, 3 * s.hidden}, io.xg.options());
  const at::Tensor w_hh_t = io.w_hh.t();
  for (int64_t t = 0; t < s.steps; ++t) {
    at::mm_out(hg, io.h_state, w_hh_t);
    const int64_t slot = training ? t : 0;
    GruForwardStepParams<k_t> p;
    p.xg = ptr<scalar_t>(io.xg[t]);
    p.hg = ptr<scalar_t>(hg);
    p.b_hn = ptr<scalar_t>(io.b_hn);
    p.h_acc = acc_ptr<scalar_t>(io.h_acc);
    p.h_state = ptr<scalar_t>(io.h_state);
    p.gates = ptr<scalar_t>(io.gates[slot]);
    p.hn = ptr<scalar_t>(io.hn[slot]);
    p.y = ptr<scalar_t>(io.y[t]);
    p.rows = rows.at_step(t);
    p.batch = s.batch;
    p.hidden = s.hidden;
    check_launch(launch_gru_forward_step(p, stream), "the GRU forward step kernel");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_forward_cuda(
    const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& b_hn, const std::optional<at::Tensor>& lengths,
    bool training) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_cuda_recurrence("gru", xg, w_hh, 3);
  const auto dtype = xg.scalar_type();
  const auto device = xg.device();
  check_gru_forward_operands(s, h0, b_hn, CudaOperandCheck{dtype, device});
  const c10::cuda::CUDAGuard guard(device);
  // float32 GEMMs at torch.nn's RNN precision (fp32_precision.h), not the matmul switch's.
  const MatmulPrecisionFollowsRnn precision(dtype == at::kFloat);
  const DeviceLengths rows(lengths, s, device);

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
  io.h_acc = acc_copy(h0);
  PersistentForwardTensors persistent;
  persistent.xg = io.xg;
  persistent.w_hh = io.w_hh;
  persistent.b_hn = io.b_hn;
  persistent.y = io.y;
  persistent.gates = io.gates;
  persistent.hn = io.hn;
  persistent.h0 = io.h_state;
  persistent.h_acc = io.h_acc;
  if (try_persistent_forward(CellKind::kGru, s, false, rows, training, persistent)) {
    return {io.y, persistent.h_n, io.gates, io.hn};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  RK_DISPATCH_CUDA_FLOATING(dtype, "gru_forward_cuda", [&] {
    gru_forward_steps<scalar_t>(s, rows, training, io, stream);
  });
  return {io.y, io.h_state, io.gates, io.hn};
}

struct GruBackwardTensors {
  at::Tensor dy, w_hh, h0, y, gates, hn;  // inputs, contiguous
  at::Tensor dxg, dg_rec;                 // [dr, dz, dn] and [dr, dz, dhn] per step
  at::Tensor carry;                       // [B, H] accumulation dtype
};

template <typename scalar_t>
void gru_backward_steps(const RecurrenceShape& s, const DeviceLengths& rows, int64_t tbptt,
                        GruBackwardTensors& io, RecurrentGrad& rec, cudaStream_t stream) {
  using k_t = kernel_t<scalar_t>;
  at::Tensor dh = at::empty({s.batch, s.hidden}, io.carry.options());
  for (int64_t t = s.steps - 1; t >= 0; --t) {
    combine_carry<scalar_t>(io.carry, rec, io.dy[t], dh, at::Tensor(), rows.at_step(t),
                            "the GRU carry combine kernel", stream);

    GruBackwardStepParams<k_t> p;
    p.gates = ptr<scalar_t>(io.gates[t]);
    p.hn = ptr<scalar_t>(io.hn[t]);
    p.h_prev = ptr<scalar_t>(t > 0 ? io.y[t - 1] : io.h0);  // y_{t-1} is h_{t-1} for an active row
    p.dh = acc_ptr<scalar_t>(dh);
    p.carry = acc_ptr<scalar_t>(io.carry);
    p.dxg = ptr<scalar_t>(io.dxg[t]);
    p.dg_rec = ptr<scalar_t>(io.dg_rec[t]);
    p.rows = rows.at_step(t);
    p.batch = s.batch;
    p.hidden = s.hidden;
    check_launch(launch_gru_backward_step(p, stream), "the GRU backward step kernel");

    rec.after_step(tbptt, t, io.dg_rec[t], io.w_hh, {io.carry});
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward_cuda(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& y, const at::Tensor& gates,
    const at::Tensor& hn, bool has_b_hn, int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_cuda_recurrence("gru", gates, w_hh, 3);
  const auto dtype = gates.scalar_type();
  const auto device = gates.device();
  check_gru_backward_operands(s, dy, y, hn, dh_n, h0, CudaOperandCheck{dtype, device});
  const c10::cuda::CUDAGuard guard(device);
  // float32 GEMMs at torch.nn's RNN precision (fp32_precision.h), not the matmul switch's.
  const MatmulPrecisionFollowsRnn precision(dtype == at::kFloat);
  const DeviceLengths rows(lengths, s, device);

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
  io.carry = acc_copy(dh_n);
  RecurrentGrad rec(s.batch, s.hidden, opts);
  PersistentBackwardTensors persistent;
  persistent.dy = io.dy;
  persistent.w_hh = io.w_hh;
  persistent.y = io.y;
  persistent.gates = io.gates;
  persistent.hn = io.hn;
  persistent.h0 = io.h0;
  persistent.carry = io.carry;
  persistent.dxg = io.dxg;
  persistent.dg_rec = io.dg_rec;
  if (!try_persistent_backward(CellKind::kGru, s, false, rows, tbptt, persistent)) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    RK_DISPATCH_CUDA_FLOATING(dtype, "gru_backward_cuda", [&] {
      gru_backward_steps<scalar_t>(s, rows, tbptt, io, rec, stream);
    });
  }

  const at::Tensor dh0 = rec.added_to(io.carry).to(dtype);
  at::Tensor dw_hh = at::mm(io.dg_rec.view({-1, 3 * s.hidden}).t(), previous_hidden(io.h0, io.y));
  at::Tensor db_hn = has_b_hn ? io.dg_rec.narrow(2, 2 * s.hidden, s.hidden).sum({0, 1})
                              : at::empty({0}, opts);
  return {io.dxg, dw_hh, dh0, db_hn};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("gru_forward", &gru_forward_cuda);
  m.impl("gru_backward", &gru_backward_cuda);
}

}  // namespace cuda
}  // namespace rnnkernels
