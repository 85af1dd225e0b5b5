// Persistent forward of one layer and direction: one cooperative launch runs
// all T steps (issue 4, kernel 1; shared/notes/persistent-kernels.md sec. 2-3).
//
// Ownership: CTA k owns hidden units U_k = [k*U, k*U + U) and all G gate rows
// of each, so the pointwise update stays inside the CTA. Their rows of W_hh
// sit in shared memory for the whole sequence. Per step each CTA reads
// h_{t-1} (all units, from the global double buffer), computes its slice of
// h_{t-1} W_hh^T with fp32 (fp64) accumulation, applies the gate math of
// cell_math.h to its units, writes h_t into the other buffer, and meets the
// others at one grid barrier. This version computes the slice on CUDA cores
// (one warp per (row, gate row) dot product); tensor cores are a later step.
//
// State that only the owner touches (LSTM's c, GRU's fp32 h) stays in global
// memory owned by that CTA. h is read with __ldcg (L2, never a stale L1 line
// of the buffer's use two steps earlier) after the barrier's acquire.
#include "../cell_math.h"
#include "device_common.cuh"
#include "grid_barrier.cuh"
#include "persistent_common.cuh"

namespace rnnkernels {
namespace cuda {
namespace {

template <typename scalar_t, CellKind kCell>
__global__ void __launch_bounds__(kPersistentThreads)
    persistent_forward_kernel(const PersistentForwardParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr int G = gates_of(kCell);
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int U = p.units_per_cta;
  const int64_t H = p.hidden, B = p.batch;
  const int64_t first_unit = static_cast<int64_t>(blockIdx.x) * U;
  // Units this CTA owns; the last CTA may own fewer (or none: it still joins every barrier).
  const int64_t remaining = H - first_unit;
  const int units = remaining <= 0 ? 0 : (remaining < U ? static_cast<int>(remaining) : U);
  // w_slice[(g * U + j) * H + k] = W_hh[g * H + first_unit + j, k]
  scalar_t* w_slice = reinterpret_cast<scalar_t*>(shared_raw);
  // pre[(b * G + g) * U + j] = (h_{t-1} W_hh^T)[b, g * H + first_unit + j]
  acc_t* pre = reinterpret_cast<acc_t*>(shared_raw + weight_bytes(G, U, H, sizeof(scalar_t)));

  for (int64_t e = threadIdx.x; e < static_cast<int64_t>(G) * units * H; e += blockDim.x) {
    const int64_t row = e / H, k = e - row * H;
    const int g = static_cast<int>(row / units), j = static_cast<int>(row - g * units);
    w_slice[(static_cast<int64_t>(g) * U + j) * H + k] = p.w_hh[(g * H + first_unit + j) * H + k];
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t dots = B * G * units;
  for (int64_t t = 0; t < p.steps; ++t) {
    const scalar_t* h_prev = p.h_buffers + (t % 2) * B * H;
    scalar_t* h_next = p.h_buffers + ((t + 1) % 2) * B * H;

    for (int64_t item = warp; item < dots; item += kPersistentWarps) {
      const int64_t b = item / (G * units);
      const int r = static_cast<int>(item - b * G * units);
      const int g = r / units, j = r - g * units;
      const scalar_t* w_row = w_slice + (static_cast<int64_t>(g) * U + j) * H;
      const scalar_t* h_row = h_prev + b * H;
      acc_t sum = 0;
      for (int64_t k = lane; k < H; k += 32) {
        sum += to_acc<acc_t>(w_row[k]) * to_acc<acc_t>(__ldcg(h_row + k));
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        pre[(b * G + g) * U + j] = sum;
      }
    }
    __syncthreads();

    const int64_t slot = p.training ? t : 0;
    const scalar_t* xg_t = p.xg + t * B * G * H;
    scalar_t* y_t = p.y + t * B * H;
    for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
      const int64_t b = e / units;
      const int j = static_cast<int>(e - b * units);
      const int64_t unit = first_unit + j;
      const int64_t u = b * H + unit;  // index into [B, H] tensors
      const bool on = p.lengths == nullptr || t < p.lengths[b];
      const acc_t* pre_row = pre + b * G * U + j;  // gate g at pre_row[g * U]
      const int64_t gate_row = (slot * B + b) * G * H + unit;  // gate g at + g * H
      const scalar_t zero = store<scalar_t>(acc_t(0));
      if (!on) {
        h_next[u] = __ldcg(h_prev + u);
        y_t[u] = zero;
        if constexpr (kCell == CellKind::kLstm || kCell == CellKind::kGru) {
#pragma unroll
          for (int g = 0; g < G; ++g) p.gates[gate_row + g * H] = zero;
        }
        if constexpr (kCell == CellKind::kLstm) p.cells[slot * B * H + u] = store<scalar_t>(p.c_state[u]);
        if constexpr (kCell == CellKind::kGru) p.hn[slot * B * H + u] = zero;
        continue;
      }
      const scalar_t* xg_row = xg_t + b * G * H + unit;  // gate g at xg_row[g * H]
      scalar_t h;
      if constexpr (kCell == CellKind::kLstm) {
        const LstmStep<acc_t> s = lstm_step_forward<acc_t>(
            to_acc<acc_t>(xg_row[0]) + pre_row[0], to_acc<acc_t>(xg_row[H]) + pre_row[U],
            to_acc<acc_t>(xg_row[2 * H]) + pre_row[2 * U], to_acc<acc_t>(xg_row[3 * H]) + pre_row[3 * U],
            p.c_state[u]);
        p.gates[gate_row] = store<scalar_t>(s.gates.i);
        p.gates[gate_row + H] = store<scalar_t>(s.gates.f);
        p.gates[gate_row + 2 * H] = store<scalar_t>(s.gates.g);
        p.gates[gate_row + 3 * H] = store<scalar_t>(s.gates.o);
        p.c_state[u] = s.c;
        p.cells[slot * B * H + u] = store<scalar_t>(s.c);
        h = store<scalar_t>(s.h);
      } else if constexpr (kCell == CellKind::kGru) {
        const acc_t hn = pre_row[2 * U] + (p.b_hn != nullptr ? to_acc<acc_t>(p.b_hn[unit]) : acc_t(0));
        const GruStep<acc_t> s = gru_step_forward<acc_t>(
            to_acc<acc_t>(xg_row[0]) + pre_row[0], to_acc<acc_t>(xg_row[H]) + pre_row[U],
            to_acc<acc_t>(xg_row[2 * H]), hn, p.h_acc[u]);
        p.gates[gate_row] = store<scalar_t>(s.r);
        p.gates[gate_row + H] = store<scalar_t>(s.z);
        p.gates[gate_row + 2 * H] = store<scalar_t>(s.n);
        p.hn[slot * B * H + u] = store<scalar_t>(hn);
        p.h_acc[u] = s.h;
        h = store<scalar_t>(s.h);
      } else {
        constexpr bool kRelu = kCell == CellKind::kRnnRelu;
        h = store<scalar_t>(rnn_step_forward<kRelu, acc_t>(to_acc<acc_t>(xg_row[0]) + pre_row[0]));
      }
      h_next[u] = h;
      y_t[u] = h;
    }
    // Every CTA, every step, outside any branch: unequal counts would hang.
    grid_barrier(p.barrier_count, static_cast<unsigned long long>(t + 1), p.spin_limit_cycles);
  }
}

template <typename scalar_t>
const void* kernel_for(CellKind cell) {
  switch (cell) {
    case CellKind::kLstm:
      return reinterpret_cast<const void*>(persistent_forward_kernel<scalar_t, CellKind::kLstm>);
    case CellKind::kGru:
      return reinterpret_cast<const void*>(persistent_forward_kernel<scalar_t, CellKind::kGru>);
    case CellKind::kRnnTanh:
      return reinterpret_cast<const void*>(persistent_forward_kernel<scalar_t, CellKind::kRnnTanh>);
    case CellKind::kRnnRelu:
      return reinterpret_cast<const void*>(persistent_forward_kernel<scalar_t, CellKind::kRnnRelu>);
  }
  return nullptr;
}

}  // namespace

template <typename scalar_t>
PersistentPlan plan_persistent_forward(CellKind cell, int64_t batch, int64_t hidden) {
  // Scratch: the G pre-activations of each (unit, row).
  return plan_cooperative_grid(kernel_for<scalar_t>(cell), gates_of(cell), batch, hidden,
                               sizeof(scalar_t), sizeof(typename AccOf<scalar_t>::type),
                               gates_of(cell));
}

template <typename scalar_t>
cudaError_t launch_persistent_forward(const PersistentForwardParams<scalar_t>& p, CellKind cell,
                                      const PersistentPlan& plan, cudaStream_t stream) {
  return launch_cooperative(kernel_for<scalar_t>(cell), p, plan, stream);
}

#define RK_INSTANTIATE_PERSISTENT(scalar_t)                                                      \
  template PersistentPlan plan_persistent_forward<scalar_t>(CellKind, int64_t, int64_t);       \
  template cudaError_t launch_persistent_forward<scalar_t>(                                    \
      const PersistentForwardParams<scalar_t>&, CellKind, const PersistentPlan&, cudaStream_t);

RK_INSTANTIATE_PERSISTENT(float)
RK_INSTANTIATE_PERSISTENT(double)
RK_INSTANTIATE_PERSISTENT(__half)
RK_INSTANTIATE_PERSISTENT(__nv_bfloat16)

}  // namespace cuda
}  // namespace rnnkernels
