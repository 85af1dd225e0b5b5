// Fused pointwise backward of one timestep (the fallback path), walking t
// from T-1 down. Per step the glue launches the carry combine (dh_t = the
// carried gradient + dG_{t+1} W_hh + dy_t), then the cell's kernel, which
// turns dh_t into dG_t with the gate math of cell_math.h, then (unless
// tbptt cuts the carry at t) the GEMM dG_t W_hh for step t-1.
#include "../cell_math.h"
#include "device_common.cuh"

namespace rnnkernels {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void carry_combine_kernel(const CarryCombineParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  RK_GRID_STRIDE_LOOP(u, p.batch * p.width) {
    const bool on = row_active(p.rows, u / p.width);
    acc_t total = p.carry[u];
    if (p.rec != nullptr) {
      total += to_acc<acc_t>(p.rec[u]);
    }
    if (on) {
      total += to_acc<acc_t>(p.dy[u]);
    }
    // An ended row's state is untouched by step t: its whole gradient goes on.
    p.carry[u] = on ? acc_t(0) : total;
    p.dh[u] = on ? total : acc_t(0);
    if (p.dh_rounded != nullptr) {
      p.dh_rounded[u] = store<scalar_t>(on ? total : acc_t(0));
    }
  }
}

template <typename scalar_t>
__global__ void lstm_backward_step_kernel(const LstmBackwardStepParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  const int64_t H = p.hidden, G4 = 4 * p.hidden;
  RK_GRID_STRIDE_LOOP(u, p.batch * H) {
    const int64_t b = u / H, j = u - b * H;
    const int64_t row = b * G4;
    if (!row_active(p.rows, b)) {
      p.dxg[row + j] = p.dxg[row + H + j] = p.dxg[row + 2 * H + j] = p.dxg[row + 3 * H + j] =
          store<scalar_t>(acc_t(0));
      continue;  // dc passes through unchanged
    }
    const LstmGates<acc_t> a{to_acc<acc_t>(p.gates[row + j]), to_acc<acc_t>(p.gates[row + H + j]),
                             to_acc<acc_t>(p.gates[row + 2 * H + j]),
                             to_acc<acc_t>(p.gates[row + 3 * H + j])};
    const LstmStepGrad<acc_t> g = lstm_step_backward<acc_t>(
        a, to_acc<acc_t>(p.cells[u]), to_acc<acc_t>(p.cells_prev[u]), p.dh[u], p.dc[u]);
    p.dxg[row + j] = store<scalar_t>(g.d_pre_i);
    p.dxg[row + H + j] = store<scalar_t>(g.d_pre_f);
    p.dxg[row + 2 * H + j] = store<scalar_t>(g.d_pre_g);
    p.dxg[row + 3 * H + j] = store<scalar_t>(g.d_pre_o);
    p.dc[u] = g.dc_prev;
  }
}

template <typename scalar_t>
__global__ void gru_backward_step_kernel(const GruBackwardStepParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  const int64_t H = p.hidden, G3 = 3 * p.hidden;
  RK_GRID_STRIDE_LOOP(u, p.batch * H) {
    const int64_t b = u / H, j = u - b * H;
    const int64_t row = b * G3;
    if (!row_active(p.rows, b)) {
      const scalar_t zero = store<scalar_t>(acc_t(0));
      p.dxg[row + j] = p.dxg[row + H + j] = p.dxg[row + 2 * H + j] = zero;
      p.dg_rec[row + j] = p.dg_rec[row + H + j] = p.dg_rec[row + 2 * H + j] = zero;
      continue;  // the combine kernel already passed the carry on
    }
    const GruStepGrad<acc_t> g = gru_step_backward<acc_t>(
        to_acc<acc_t>(p.gates[row + j]), to_acc<acc_t>(p.gates[row + H + j]),
        to_acc<acc_t>(p.gates[row + 2 * H + j]), to_acc<acc_t>(p.hn[u]),
        to_acc<acc_t>(p.h_prev[u]), p.dh[u]);
    const scalar_t d_pre_r = store<scalar_t>(g.d_pre_r);
    const scalar_t d_pre_z = store<scalar_t>(g.d_pre_z);
    p.dxg[row + j] = p.dg_rec[row + j] = d_pre_r;
    p.dxg[row + H + j] = p.dg_rec[row + H + j] = d_pre_z;
    p.dxg[row + 2 * H + j] = store<scalar_t>(g.d_pre_n);
    p.dg_rec[row + 2 * H + j] = store<scalar_t>(g.d_hn);
    p.carry[u] = g.dh_prev_direct;
  }
}

template <typename scalar_t, bool kRelu>
__global__ void rnn_backward_step_kernel(const RnnBackwardStepParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  RK_GRID_STRIDE_LOOP(u, p.batch * p.hidden) {
    // An ended row has dh = 0 from the combine kernel, so its dG_t is 0 too.
    p.dxg[u] = store<scalar_t>(rnn_step_backward<kRelu, acc_t>(to_acc<acc_t>(p.y[u]), p.dh[u]));
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_carry_combine(const CarryCombineParams<scalar_t>& p, cudaStream_t stream) {
  return launch_elementwise(carry_combine_kernel<scalar_t>, p, p.batch * p.width, stream);
}

template <typename scalar_t>
cudaError_t launch_lstm_backward_step(const LstmBackwardStepParams<scalar_t>& p, cudaStream_t stream) {
  return launch_elementwise(lstm_backward_step_kernel<scalar_t>, p, p.batch * p.hidden, stream);
}

template <typename scalar_t>
cudaError_t launch_gru_backward_step(const GruBackwardStepParams<scalar_t>& p, cudaStream_t stream) {
  return launch_elementwise(gru_backward_step_kernel<scalar_t>, p, p.batch * p.hidden, stream);
}

template <typename scalar_t>
cudaError_t launch_rnn_backward_step(const RnnBackwardStepParams<scalar_t>& p, bool relu,
                                     cudaStream_t stream) {
  return launch_elementwise(relu ? rnn_backward_step_kernel<scalar_t, true>
                                 : rnn_backward_step_kernel<scalar_t, false>,
                            p, p.batch * p.hidden, stream);
}

#define RK_INSTANTIATE_BACKWARD(scalar_t)                                                         \
  template cudaError_t launch_carry_combine<scalar_t>(const CarryCombineParams<scalar_t>&,        \
                                                      cudaStream_t);                              \
  template cudaError_t launch_lstm_backward_step<scalar_t>(const LstmBackwardStepParams<scalar_t>&, \
                                                           cudaStream_t);                         \
  template cudaError_t launch_gru_backward_step<scalar_t>(const GruBackwardStepParams<scalar_t>&,  \
                                                          cudaStream_t);                          \
  template cudaError_t launch_rnn_backward_step<scalar_t>(const RnnBackwardStepParams<scalar_t>&,  \
                                                          bool, cudaStream_t);

RK_INSTANTIATE_BACKWARD(float)
RK_INSTANTIATE_BACKWARD(double)
RK_INSTANTIATE_BACKWARD(__half)
RK_INSTANTIATE_BACKWARD(__nv_bfloat16)

}  // namespace cuda
}  // namespace rnnkernels
