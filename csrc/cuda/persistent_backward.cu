// Persistent backward of one layer and direction (issue 12; shared/notes/
// persistent-kernels.md sec. 2 "Backward transposes ownership").
//
// CTA k owns hidden units U_k, as in the forward, and keeps their columns of
// W_hh in shared memory (A row m = j, column r: W_hh[r, first_unit + j]).
// Walking t = T-1 .. 0, each step:
//   1. rec[b, j] = sum_r dG_{t+1}[b, r] W_hh[r, first_unit + j]: dG_{t+1},
//      written by every CTA before the last barrier, is staged in shared
//      memory (in K-chunks where B*G*H does not fit) and multiplied on tensor
//      cores or CUDA cores (slice_product.cuh); skipped at t = T-1 and where
//      tbptt cuts the carry at t+1, a grid-uniform test;
//   2. dh_t = carry + rec + dy_t (dy only on active rows), then the gate math
//      of cell_math.h for its units (all G gate rows of each), writing dG_t
//      and the carry (and LSTM's dc) that only the owner touches;
//   3. one grid barrier, after which every CTA may read all of dG_t.
// After the loop one more product with dG_0 completes dh0. A barrier that
// times out ends the loop in every CTA, and each fills its units' gradients
// with NaN.
#include <cmath>
#include <type_traits>

#include "../cell_math.h"
#include "device_common.cuh"
#include "grid_barrier.cuh"
#include "persistent_common.cuh"
#include "slice_product.cuh"

namespace rnnkernels {
namespace cuda {
namespace {

__device__ __forceinline__ bool cuts_carry_at(int64_t tbptt, int64_t t) {
  return tbptt > 0 && t > 0 && t % tbptt == 0;
}

// Units [first_unit, first_unit + units) of every gradient: NaN.
template <typename scalar_t, CellKind kCell>
__device__ void poison_backward(const PersistentBackwardParams<scalar_t>& p, int64_t first_unit,
                                int units) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr int G = gates_of(kCell);
  const acc_t nan = acc_t(NAN);
  const scalar_t nan_s = store<scalar_t>(nan);
  const int64_t B = p.batch, H = p.hidden;
  for (int64_t e = threadIdx.x; e < p.steps * B * units; e += blockDim.x) {
    const int64_t tb = e / units, unit = first_unit + (e - tb * units);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      p.dxg[tb * G * H + g * H + unit] = nan_s;
      if constexpr (kCell == CellKind::kGru) p.dg_rec[tb * G * H + g * H + unit] = nan_s;
    }
  }
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t b = e / units, u = b * H + first_unit + (e - b * units);
    p.carry[u] = nan;
    if constexpr (kCell == CellKind::kLstm) p.dc[u] = nan;
  }
}

template <CellKind kCell, Engine E>
__global__ void __launch_bounds__(kPersistentThreads)
    persistent_backward_kernel(const PersistentBackwardParams<typename EngineTraits<E>::storage_t> p) {
  using Traits = EngineTraits<E>;
  using scalar_t = typename Traits::storage_t;
  using acc_t = typename AccOf<scalar_t>::type;
  using bits_t = typename Traits::bits_t;
  using part_t = typename Traits::acc_t;
  constexpr int G = gates_of(kCell);
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const SliceLayout& l = p.layout;
  const int U = p.units_per_cta;
  const int64_t H = p.hidden, B = p.batch;
  const int64_t rows = G * H;
  const int64_t first_unit = static_cast<int64_t>(blockIdx.x) * U;
  // Units this CTA owns; the last CTA may own fewer.
  const int64_t remaining = H - first_unit;
  const int units = remaining <= 0 ? 0 : (remaining < U ? static_cast<int>(remaining) : U);
  bits_t* slice = reinterpret_cast<bits_t*>(shared_raw);
  bits_t* staged = reinterpret_cast<bits_t*>(shared_raw + l.weight_bytes);
  part_t* partials = reinterpret_cast<part_t*>(shared_raw + l.weight_bytes + l.stage_bytes);
  // The gradient W_hh sees: GRU's [dr, dz, dhn], dG itself for the others.
  const scalar_t* d_rec = kCell == CellKind::kGru ? p.dg_rec : p.dxg;

  // A(j, r) = W_hh[r, first_unit + j]: read once, streaming.
  stage_slice<E>(slice, l, rows, [&](int64_t j, int64_t r) {
    return j < units ? __ldcs(p.w_hh + r * H + first_unit + j) : store<scalar_t>(acc_t(0));
  });
  __syncthreads();

  bool aborted = false;
  for (int64_t t = p.steps - 1; t >= 0; --t) {
    // Grid-uniform: whether dG_{t+1} reaches h_t at all.
    const bool cut = t + 1 < p.steps && cuts_carry_at(p.tbptt, t + 1);
    const bool has_rec = t + 1 < p.steps && !cut;
    if (has_rec) {
      step_product<E>(slice, staged, partials, l,
                      staging_source<E>(d_rec + (t + 1) * B * rows, rows, B, rows));
    }

    for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
      const int64_t b = e / units;
      const int j = static_cast<int>(e - b * units);
      const int64_t unit = first_unit + j;
      const int64_t u = b * H + unit;                      // index into [B, H] tensors
      const int64_t gate_row = (t * B + b) * rows + unit;  // gate g at + g * H
      const bool on = p.lengths == nullptr || t < p.lengths[b];
      // The carry (and dc) into step t: cut to zero at a tbptt boundary, for every row.
      acc_t total = cut ? acc_t(0) : p.carry[u];
      if (has_rec) total += static_cast<acc_t>(partial_sum<E>(partials, l, b, j));
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
    // Every CTA, every step, outside any branch that differs between CTAs.
    if (!grid_barrier(p.barrier, static_cast<unsigned long long>(p.steps - t))) {
      aborted = true;
      break;
    }
  }
  if (aborted) {
    poison_backward<scalar_t, kCell>(p, first_unit, units);
    return;
  }

  // dh0 = carry + dG_0 W_hh (t = 0 never cuts).
  step_product<E>(slice, staged, partials, l, staging_source<E>(d_rec, rows, B, rows));
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t b = e / units;
    const int j = static_cast<int>(e - b * units);
    p.carry[b * H + first_unit + j] += static_cast<acc_t>(partial_sum<E>(partials, l, b, j));
  }
}

template <Engine E>
const void* backward_kernel_of(CellKind cell) {
  switch (cell) {
    case CellKind::kLstm:
      return reinterpret_cast<const void*>(persistent_backward_kernel<CellKind::kLstm, E>);
    case CellKind::kGru:
      return reinterpret_cast<const void*>(persistent_backward_kernel<CellKind::kGru, E>);
    case CellKind::kRnnTanh:
      return reinterpret_cast<const void*>(persistent_backward_kernel<CellKind::kRnnTanh, E>);
    case CellKind::kRnnRelu:
      return reinterpret_cast<const void*>(persistent_backward_kernel<CellKind::kRnnRelu, E>);
  }
  return nullptr;
}

template <typename scalar_t>
const void* backward_kernel(CellKind cell, bool tf32) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return tf32 ? backward_kernel_of<Engine::kMmaTf32>(cell) : backward_kernel_of<Engine::kFmaF32>(cell);
  } else {
    return backward_kernel_of<engine_for<scalar_t>(false)>(cell);
  }
}

}  // namespace

template <typename scalar_t>
PersistentPlan plan_persistent_backward(CellKind cell, int64_t batch, int64_t hidden, bool tf32,
                                        const DeviceLimits& limits) {
  return plan_cooperative_grid(backward_kernel<scalar_t>(cell, tf32), engine_for<scalar_t>(tf32),
                               gates_of(cell), batch, hidden, /*backward=*/true, limits);
}

template <typename scalar_t>
cudaError_t launch_persistent_backward(const PersistentBackwardParams<scalar_t>& p, CellKind cell,
                                       bool tf32, const PersistentPlan& plan, cudaStream_t stream) {
  return launch_cooperative(backward_kernel<scalar_t>(cell, tf32), p, plan, stream);
}

#define RK_INSTANTIATE_PERSISTENT_BACKWARD(scalar_t)                                               \
  template PersistentPlan plan_persistent_backward<scalar_t>(CellKind, int64_t, int64_t, bool,    \
                                                             const DeviceLimits&);                \
  template cudaError_t launch_persistent_backward<scalar_t>(                                     \
      const PersistentBackwardParams<scalar_t>&, CellKind, bool, const PersistentPlan&, cudaStream_t);

RK_INSTANTIATE_PERSISTENT_BACKWARD(float)
RK_INSTANTIATE_PERSISTENT_BACKWARD(double)
RK_INSTANTIATE_PERSISTENT_BACKWARD(__half)
RK_INSTANTIATE_PERSISTENT_BACKWARD(__nv_bfloat16)

}  // namespace cuda
}  // namespace rnnkernels
