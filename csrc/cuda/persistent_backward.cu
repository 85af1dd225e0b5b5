// Persistent backward of one layer and direction (issue 4, kernel 2;
// shared/notes/persistent-kernels.md sec. 2 "Backward transposes ownership").
//
// CTA k owns hidden units U_k, as in the forward, and keeps their columns of
// W_hh in shared memory. Walking t = T-1 .. 0, each step:
//   1. rec[b, u] = sum_r dG_{t+1}[b, r] W_hh[r, u] for its units (skipped at
//      t = T-1 and where tbptt cuts the carry at t+1: a grid-uniform test);
//   2. dh_t = carry + rec + dy_t (dy only on active rows), then the gate math
//      of cell_math.h for its units (all G gate rows of each), writing dG_t
//      and the carry (and LSTM's dc) that only the owner touches;
//   3. one grid barrier, after which every CTA may read all of dG_t.
// After the loop one more product with dG_0 completes dh0. dG is read with
// __ldcg: each step reads fresh addresses written by other CTAs.
#include "../cell_math.h"
#include "device_common.cuh"
#include "grid_barrier.cuh"
#include "persistent_common.cuh"

namespace rnnkernels {
namespace cuda {
namespace {

// rec[b * U + j] = dG[b, :] . W_hh[:, first_unit + j] for this CTA's units.
template <typename scalar_t, typename acc_t>
__device__ void recurrent_product(const scalar_t* w_cols, const scalar_t* d_gates, acc_t* rec,
                                  int64_t batch, int rows, int units, int U) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t item = warp; item < batch * units; item += kPersistentWarps) {
    const int64_t b = item / units;
    const int j = static_cast<int>(item - b * units);
    const scalar_t* w_col = w_cols + static_cast<int64_t>(j) * rows;  // W_hh[:, unit j], contiguous
    const scalar_t* d_row = d_gates + b * rows;
    acc_t sum = 0;
    for (int64_t r = lane; r < rows; r += 32) {
      sum += to_acc<acc_t>(w_col[r]) * to_acc<acc_t>(__ldcg(d_row + r));
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      rec[b * U + j] = sum;
    }
  }
}

__device__ __forceinline__ bool cuts_carry_at(int64_t tbptt, int64_t t) {
  return tbptt > 0 && t > 0 && t % tbptt == 0;
}

template <typename scalar_t, CellKind kCell>
__global__ void __launch_bounds__(kPersistentThreads)
    persistent_backward_kernel(const PersistentBackwardParams<scalar_t> p) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr int G = gates_of(kCell);
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int U = p.units_per_cta;
  const int64_t H = p.hidden, B = p.batch;
  const int rows = static_cast<int>(G * H);
  const int64_t first_unit = static_cast<int64_t>(blockIdx.x) * U;
  // Units this CTA owns; the last CTA may own fewer (or none: it still joins every barrier).
  const int64_t remaining = H - first_unit;
  const int units = remaining <= 0 ? 0 : (remaining < U ? static_cast<int>(remaining) : U);
  // w_cols[j * G*H + r] = W_hh[r, first_unit + j]
  scalar_t* w_cols = reinterpret_cast<scalar_t*>(shared_raw);
  // rec[b * U + j]: dG_{t+1} W_hh for (row b, unit first_unit + j)
  acc_t* rec = reinterpret_cast<acc_t*>(shared_raw + weight_bytes(G, U, H, sizeof(scalar_t)));
  // The gradient W_hh sees: GRU's [dr, dz, dhn], dG itself for the others.
  scalar_t* d_rec = kCell == CellKind::kGru ? p.dg_rec : p.dxg;

  for (int64_t e = threadIdx.x; e < static_cast<int64_t>(rows) * units; e += blockDim.x) {
    const int64_t r = e / units;
    const int j = static_cast<int>(e - r * units);
    w_cols[static_cast<int64_t>(j) * rows + r] = p.w_hh[r * H + first_unit + j];
  }
  __syncthreads();

  for (int64_t t = p.steps - 1; t >= 0; --t) {
    // Grid-uniform: whether dG_{t+1} reaches h_t at all.
    const bool has_rec = t + 1 < p.steps && !cuts_carry_at(p.tbptt, t + 1);
    const bool cut = t + 1 < p.steps && cuts_carry_at(p.tbptt, t + 1);
    if (has_rec) {
      recurrent_product(w_cols, d_rec + (t + 1) * B * rows, rec, B, rows, units, U);
    }
    __syncthreads();

    for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
      const int64_t b = e / units;
      const int j = static_cast<int>(e - b * units);
      const int64_t unit = first_unit + j;
      const int64_t u = b * H + unit;                        // index into [B, H] tensors
      const int64_t gate_row = (t * B + b) * rows + unit;    // gate g at + g * H
      const bool on = p.lengths == nullptr || t < p.lengths[b];
      // The carry (and dc) into step t: cut to zero at a tbptt boundary, for every row.
      acc_t total = cut ? acc_t(0) : p.carry[u];
      if (has_rec) total += rec[b * U + j];
      if (on) total += to_acc<acc_t>(p.dy[t * B * H + u]);
      if constexpr (kCell == CellKind::kLstm) {
        if (cut) p.dc[u] = acc_t(0);
      }
      const scalar_t zero = store<scalar_t>(acc_t(0));
      if (!on) {  // the row's state did not change at t: its gradients pass through
#pragma unroll
        for (int g = 0; g < G; ++g) p.dxg[gate_row + g * H] = zero;
        if constexpr (kCell == CellKind::kGru) {
#pragma unroll
          for (int g = 0; g < G; ++g) p.dg_rec[gate_row + g * H] = zero;
        }
        p.carry[u] = total;
        continue;
      }
      if constexpr (kCell == CellKind::kLstm) {
        const int64_t saved = (t * B + b) * H + unit;
        const LstmGates<acc_t> a{to_acc<acc_t>(p.gates[gate_row]), to_acc<acc_t>(p.gates[gate_row + H]),
                                 to_acc<acc_t>(p.gates[gate_row + 2 * H]),
                                 to_acc<acc_t>(p.gates[gate_row + 3 * H])};
        const acc_t c_prev = to_acc<acc_t>(t > 0 ? p.cells[saved - B * H] : p.c0[u]);
        const LstmStepGrad<acc_t> g =
            lstm_step_backward<acc_t>(a, to_acc<acc_t>(p.cells[saved]), c_prev, total, p.dc[u]);
        p.dxg[gate_row] = store<scalar_t>(g.d_pre_i);
        p.dxg[gate_row + H] = store<scalar_t>(g.d_pre_f);
        p.dxg[gate_row + 2 * H] = store<scalar_t>(g.d_pre_g);
        p.dxg[gate_row + 3 * H] = store<scalar_t>(g.d_pre_o);
        p.dc[u] = g.dc_prev;
        p.carry[u] = acc_t(0);
      } else if constexpr (kCell == CellKind::kGru) {
        const int64_t saved = (t * B + b) * H + unit;
        const acc_t h_prev = to_acc<acc_t>(t > 0 ? p.y[saved - B * H] : p.h0[u]);
        const GruStepGrad<acc_t> g = gru_step_backward<acc_t>(
            to_acc<acc_t>(p.gates[gate_row]), to_acc<acc_t>(p.gates[gate_row + H]),
            to_acc<acc_t>(p.gates[gate_row + 2 * H]), to_acc<acc_t>(p.hn[saved]), h_prev, total);
        const scalar_t d_pre_r = store<scalar_t>(g.d_pre_r);
        const scalar_t d_pre_z = store<scalar_t>(g.d_pre_z);
        p.dxg[gate_row] = p.dg_rec[gate_row] = d_pre_r;
        p.dxg[gate_row + H] = p.dg_rec[gate_row + H] = d_pre_z;
        p.dxg[gate_row + 2 * H] = store<scalar_t>(g.d_pre_n);
        p.dg_rec[gate_row + 2 * H] = store<scalar_t>(g.d_hn);
        p.carry[u] = g.dh_prev_direct;
      } else {
        constexpr bool kRelu = kCell == CellKind::kRnnRelu;
        p.dxg[gate_row] =
            store<scalar_t>(rnn_step_backward<kRelu, acc_t>(to_acc<acc_t>(p.y[t * B * H + u]), total));
        p.carry[u] = acc_t(0);
      }
    }
    // Every CTA, every step, outside any branch: unequal counts would hang.
    grid_barrier(p.barrier_count, static_cast<unsigned long long>(p.steps - t), p.spin_limit_cycles);
  }

  // dh0 = carry + dG_0 W_hh (t = 0 never cuts).
  recurrent_product(w_cols, d_rec, rec, B, rows, units, U);
  __syncthreads();
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t b = e / units;
    const int j = static_cast<int>(e - b * units);
    p.carry[b * H + first_unit + j] += rec[b * U + j];
  }
}

template <typename scalar_t>
const void* kernel_for(CellKind cell) {
  switch (cell) {
    case CellKind::kLstm:
      return reinterpret_cast<const void*>(persistent_backward_kernel<scalar_t, CellKind::kLstm>);
    case CellKind::kGru:
      return reinterpret_cast<const void*>(persistent_backward_kernel<scalar_t, CellKind::kGru>);
    case CellKind::kRnnTanh:
      return reinterpret_cast<const void*>(persistent_backward_kernel<scalar_t, CellKind::kRnnTanh>);
    case CellKind::kRnnRelu:
      return reinterpret_cast<const void*>(persistent_backward_kernel<scalar_t, CellKind::kRnnRelu>);
  }
  return nullptr;
}

}  // namespace

template <typename scalar_t>
PersistentPlan plan_persistent_backward(CellKind cell, int64_t batch, int64_t hidden) {
  // Scratch: one recurrent product per (unit, row).
  return plan_cooperative_grid(kernel_for<scalar_t>(cell), gates_of(cell), batch, hidden,
                               sizeof(scalar_t), sizeof(typename AccOf<scalar_t>::type), 1);
}

template <typename scalar_t>
cudaError_t launch_persistent_backward(const PersistentBackwardParams<scalar_t>& p, CellKind cell,
                                       const PersistentPlan& plan, cudaStream_t stream) {
  return launch_cooperative(kernel_for<scalar_t>(cell), p, plan, stream);
}

#define RK_INSTANTIATE_PERSISTENT_BACKWARD(scalar_t)                                             \
  template PersistentPlan plan_persistent_backward<scalar_t>(CellKind, int64_t, int64_t);      \
  template cudaError_t launch_persistent_backward<scalar_t>(                                   \
      const PersistentBackwardParams<scalar_t>&, CellKind, const PersistentPlan&, cudaStream_t);

RK_INSTANTIATE_PERSISTENT_BACKWARD(float)
RK_INSTANTIATE_PERSISTENT_BACKWARD(double)
RK_INSTANTIATE_PERSISTENT_BACKWARD(__half)
RK_INSTANTIATE_PERSISTENT_BACKWARD(__nv_bfloat16)

}  // namespace cuda
}  // namespace rnnkernels
