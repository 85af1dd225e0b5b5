// Fused pointwise forward of one timestep (the fallback path): the glue runs
// hg = h_{t-1} W_hh^T as one GEMM, then one of these kernels adds xg_t,
// applies the gate math of cell_math.h in acc_t and writes y_t, the state
// and what backward needs. One thread per (row, hidden unit).
#include "../cell_math.h"
#include "device_common.cuh"

namespace rnnkernels {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void lstm_forward_step_kernel(const LstmForwardStepParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  const int64_t H = p.hidden, G4 = 4 * p.hidden;
  RK_GRID_STRIDE_LOOP(u, p.batch * H) {
    const int64_t b = u / H, j = u - b * H;
    const int64_t row = b * G4;
    if (!row_active(p.rows, b)) {
      p.gates[row + j] = p.gates[row + H + j] = p.gates[row + 2 * H + j] =
          p.gates[row + 3 * H + j] = store<scalar_t>(acc_t(0));
      p.cells[u] = store<scalar_t>(p.c_state[u]);
      p.h_out[u] = store<scalar_t>(acc_t(0));
      continue;
    }
    acc_t pre[4];
#pragma unroll
    for (int gate = 0; gate < 4; ++gate) {
      const int64_t k = row + gate * H + j;
      pre[gate] = to_acc<acc_t>(p.xg[k]) + to_acc<acc_t>(p.hg[k]);
    }
    const LstmStep<acc_t> s = lstm_step_forward<acc_t>(pre[0], pre[1], pre[2], pre[3], p.c_state[u]);
    p.gates[row + j] = store<scalar_t>(s.gates.i);
    p.gates[row + H + j] = store<scalar_t>(s.gates.f);
    p.gates[row + 2 * H + j] = store<scalar_t>(s.gates.g);
    p.gates[row + 3 * H + j] = store<scalar_t>(s.gates.o);
    p.c_state[u] = s.c;
    p.cells[u] = store<scalar_t>(s.c);
    const scalar_t h = store<scalar_t>(s.h);
    p.h_out[u] = h;
    if (p.h_state != nullptr) {
      p.h_state[u] = h;
    }
  }
}

template <typename scalar_t>
__global__ void masked_state_update_kernel(const MaskedStateUpdateParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  RK_GRID_STRIDE_LOOP(u, p.batch * p.width) {
    if (row_active(p.rows, u / p.width)) {
      p.y[u] = p.source[u];
      p.h_state[u] = p.source[u];
    } else {
      p.y[u] = store<scalar_t>(acc_t(0));
    }
  }
}

template <typename scalar_t>
__global__ void gru_forward_step_kernel(const GruForwardStepParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  const int64_t H = p.hidden, G3 = 3 * p.hidden;
  RK_GRID_STRIDE_LOOP(u, p.batch * H) {
    const int64_t b = u / H, j = u - b * H;
    const int64_t row = b * G3;
    if (!row_active(p.rows, b)) {
      p.gates[row + j] = p.gates[row + H + j] = p.gates[row + 2 * H + j] = store<scalar_t>(acc_t(0));
      p.hn[u] = store<scalar_t>(acc_t(0));
      p.y[u] = store<scalar_t>(acc_t(0));
      continue;
    }
    const acc_t bias = p.b_hn != nullptr ? to_acc<acc_t>(p.b_hn[j]) : acc_t(0);
    const acc_t hn = to_acc<acc_t>(p.hg[row + 2 * H + j]) + bias;
    const GruStep<acc_t> s = gru_step_forward<acc_t>(
        to_acc<acc_t>(p.xg[row + j]) + to_acc<acc_t>(p.hg[row + j]),
        to_acc<acc_t>(p.xg[row + H + j]) + to_acc<acc_t>(p.hg[row + H + j]),
        to_acc<acc_t>(p.xg[row + 2 * H + j]), hn, p.h_acc[u]);
    p.gates[row + j] = store<scalar_t>(s.r);
    p.gates[row + H + j] = store<scalar_t>(s.z);
    p.gates[row + 2 * H + j] = store<scalar_t>(s.n);
    p.hn[u] = store<scalar_t>(hn);
    p.h_acc[u] = s.h;
    const scalar_t h = store<scalar_t>(s.h);
    p.h_state[u] = h;
    p.y[u] = h;
  }
}

template <typename scalar_t, bool kRelu>
__global__ void rnn_forward_step_kernel(const RnnForwardStepParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  RK_GRID_STRIDE_LOOP(u, p.batch * p.hidden) {
    if (!row_active(p.rows, u / p.hidden)) {
      p.y[u] = store<scalar_t>(acc_t(0));
      continue;
    }
    const acc_t pre = to_acc<acc_t>(p.xg[u]) + to_acc<acc_t>(p.hg[u]);
    const scalar_t h = store<scalar_t>(rnn_step_forward<kRelu, acc_t>(pre));
    p.h_state[u] = h;
    p.y[u] = h;
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_lstm_forward_step(const LstmForwardStepParams<scalar_t>& p, cudaStream_t stream) {
  return launch_elementwise(lstm_forward_step_kernel<scalar_t>, p, p.batch * p.hidden, stream);
}

template <typename scalar_t>
cudaError_t launch_masked_state_update(const MaskedStateUpdateParams<scalar_t>& p, cudaStream_t stream) {
  return launch_elementwise(masked_state_update_kernel<scalar_t>, p, p.batch * p.width, stream);
}

template <typename scalar_t>
cudaError_t launch_gru_forward_step(const GruForwardStepParams<scalar_t>& p, cudaStream_t stream) {
  return launch_elementwise(gru_forward_step_kernel<scalar_t>, p, p.batch * p.hidden, stream);
}

template <typename scalar_t>
cudaError_t launch_rnn_forward_step(const RnnForwardStepParams<scalar_t>& p, bool relu,
                                    cudaStream_t stream) {
  return launch_elementwise(relu ? rnn_forward_step_kernel<scalar_t, true>
                                 : rnn_forward_step_kernel<scalar_t, false>,
                            p, p.batch * p.hidden, stream);
}

#define RK_INSTANTIATE_FORWARD(scalar_t)                                                        \
  template cudaError_t launch_lstm_forward_step<scalar_t>(const LstmForwardStepParams<scalar_t>&, \
                                                          cudaStream_t);                        \
  template cudaError_t launch_masked_state_update<scalar_t>(                                    \
      const MaskedStateUpdateParams<scalar_t>&, cudaStream_t);                                  \
  template cudaError_t launch_gru_forward_step<scalar_t>(const GruForwardStepParams<scalar_t>&,  \
                                                         cudaStream_t);                         \
  template cudaError_t launch_rnn_forward_step<scalar_t>(const RnnForwardStepParams<scalar_t>&,  \
                                                         bool, cudaStream_t);

RK_INSTANTIATE_FORWARD(float)
RK_INSTANTIATE_FORWARD(double)
RK_INSTANTIATE_FORWARD(__half)
RK_INSTANTIATE_FORWARD(__nv_bfloat16)

}  // namespace cuda
}  // namespace rnnkernels
