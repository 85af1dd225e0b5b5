// Elman RNN recurrence on CUDA tensors (op contract of DESIGN.md, cells
// "rnn_tanh" and "rnn_relu"; the schemas of csrc/ops.cpp for the CUDA
// dispatch key): h_t = act(xg_t + h_{t-1} W_hh^T). Forward and backward run
// on the persistent path when RNNKERNELS_CUDA_PATH selects it
// (persistent_glue.h), else as one ATen GEMM and one fused pointwise kernel
// per step. The backward needs nothing beyond y.
#include <torch/library.h>

#include "../fp32_precision.h"
#include "glue.h"
#include "persistent_glue.h"

namespace rnnkernels {
namespace cuda {
namespace {

template <typename scalar_t>
void rnn_forward_steps(const RecurrenceShape& s, const DeviceLengths& rows, bool relu,
                       const at::Tensor& xg, const at::Tensor& w_hh, at::Tensor& y,
                       at::Tensor& h_state, cudaStream_t stream) {
  using k_t = kernel_t<scalar_t>;
  at::Tensor hg = at::empty({s.batch, s.hidden}, xg.options());
  const at::Tensor w_hh_t = w_hh.t();
  for (int64_t t = 0; t < s.steps; ++t) {
    at::mm_out(hg, h_state, w_hh_t);
    RnnForwardStepParams<k_t> p;
    p.xg = ptr<scalar_t>(xg[t]);
    p.hg = ptr<scalar_t>(hg);
    p.h_state = ptr<scalar_t>(h_state);
    p.y = ptr<scalar_t>(y[t]);
    p.rows = rows.at_step(t);
    p.batch = s.batch;
    p.hidden = s.hidden;
    check_launch(launch_rnn_forward_step(p, relu, stream), "the RNN forward step kernel");
  }
}

std::tuple<at::Tensor, at::Tensor> rnn_forward_cuda(const at::Tensor& xg, const at::Tensor& w_hh,
                                                    const at::Tensor& h0,
                                                    const std::optional<at::Tensor>& lengths,
                                                    bool relu) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_cuda_recurrence("rnn", xg, w_hh, 1);
  check_cuda_operand(h0, "h0", {s.batch, s.hidden}, xg.scalar_type(), xg.device());
  const c10::cuda::CUDAGuard guard(xg.device());
  // float32 GEMMs at torch.nn's RNN precision (fp32_precision.h), not the matmul switch's.
  const MatmulPrecisionFollowsRnn precision(xg.scalar_type() == at::kFloat);
  const DeviceLengths rows(lengths, s, xg.device());

  at::Tensor y = new_output({s.steps, s.batch, s.hidden}, xg.options());
  at::Tensor h_state = h0.contiguous().clone();
  const at::Tensor xg_c = xg.contiguous();
  const at::Tensor w_hh_c = w_hh.contiguous();
  PersistentForwardTensors persistent;
  persistent.xg = xg_c;
  persistent.w_hh = w_hh_c;
  persistent.y = y;
  persistent.h0 = h_state;
  if (try_persistent_forward(relu ? CellKind::kRnnRelu : CellKind::kRnnTanh, s, false, rows,
                             true, persistent)) {
    return {y, persistent.h_n};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  RK_DISPATCH_CUDA_FLOATING(xg.scalar_type(), "rnn_forward_cuda", [&] {
    rnn_forward_steps<scalar_t>(s, rows, relu, xg_c, w_hh_c, y, h_state, stream);
  });
  return {y, h_state};
}

template <typename scalar_t>
void rnn_backward_steps(const RecurrenceShape& s, const DeviceLengths& rows, bool relu,
                        int64_t tbptt, const at::Tensor& dy, const at::Tensor& w_hh,
                        const at::Tensor& y, at::Tensor& dxg, at::Tensor& carry,
                        RecurrentGrad& rec, cudaStream_t stream) {
  using k_t = kernel_t<scalar_t>;
  at::Tensor dh = at::empty_like(carry);
  for (int64_t t = s.steps - 1; t >= 0; --t) {
    combine_carry<scalar_t>(carry, rec, dy[t], dh, at::Tensor(), rows.at_step(t),
                            "the RNN carry combine kernel", stream);

    RnnBackwardStepParams<k_t> p;
    p.y = ptr<scalar_t>(y[t]);
    p.dh = acc_ptr<scalar_t>(dh);
    p.dxg = ptr<scalar_t>(dxg[t]);
    p.rows = rows.at_step(t);
    p.batch = s.batch;
    p.hidden = s.hidden;
    check_launch(launch_rnn_backward_step(p, relu, stream), "the RNN backward step kernel");

    rec.after_step(tbptt, t, dxg[t], w_hh, {carry});
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_backward_cuda(
    const at::Tensor& dy, const at::Tensor& dh_n, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& y, bool relu, int64_t tbptt) {
  const at::NoGradGuard no_grad;  // autograd is the Function's job; buffers need none
  const RecurrenceShape s = check_cuda_recurrence("rnn", y, w_hh, 1);
  const auto dtype = y.scalar_type();
  const auto device = y.device();
  check_rnn_backward_operands(s, dy, dh_n, h0, CudaOperandCheck{dtype, device});
  const c10::cuda::CUDAGuard guard(device);
  // float32 GEMMs at torch.nn's RNN precision (fp32_precision.h), not the matmul switch's.
  const MatmulPrecisionFollowsRnn precision(dtype == at::kFloat);
  const DeviceLengths rows(lengths, s, device);

  at::Tensor dxg = new_output({s.steps, s.batch, s.hidden}, y.options());
  at::Tensor carry = acc_copy(dh_n);
  RecurrentGrad rec(s.batch, s.hidden, y.options());
  const at::Tensor dy_c = dy.contiguous();
  const at::Tensor y_c = y.contiguous();
  const at::Tensor w_hh_c = w_hh.contiguous();
  PersistentBackwardTensors persistent;
  persistent.dy = dy_c;
  persistent.w_hh = w_hh_c;
  persistent.y = y_c;
  persistent.carry = carry;
  persistent.dxg = dxg;
  if (!try_persistent_backward(relu ? CellKind::kRnnRelu : CellKind::kRnnTanh, s, false, rows,
                               tbptt, persistent)) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    RK_DISPATCH_CUDA_FLOATING(dtype, "rnn_backward_cuda", [&] {
      rnn_backward_steps<scalar_t>(s, rows, relu, tbptt, dy_c, w_hh_c, y_c, dxg, carry, rec,
                                   stream);
    });
  }
  at::Tensor dw_hh = at::mm(dxg.view({-1, s.hidden}).t(), previous_hidden(h0.contiguous(), y_c));
  return {dxg, dw_hh, rec.added_to(carry).to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("rnn_forward", &rnn_forward_cuda);
  m.impl("rnn_backward", &rnn_backward_cuda);
}

}  // namespace cuda
}  // namespace rnnkernels
