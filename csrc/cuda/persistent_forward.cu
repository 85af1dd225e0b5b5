// Persistent forward of one layer and direction: one cooperative launch runs
// all T steps (issue 12; shared/notes/persistent-kernels.md sec. 2-3).
//
// Ownership: CTA k owns hidden units U_k = [k*U, k*U + U) and all G gate rows
// of each (A row m = g*U + j), so the pointwise update stays inside the CTA.
// Its rows of W_hh sit in shared memory for the whole sequence, loaded once
// (slice_product.cuh). Per step each CTA stages h_{t-1} (all units, from the
// global double buffer its owners wrote before the last barrier) in shared
// memory once, multiplies it with its slice on tensor cores (f16, bf16, tf32)
// or CUDA cores (fp32 IEEE, fp64), applies the gate math of cell_math.h to
// its units, writes h_t into the other buffer, and meets the others at one
// grid barrier. State only the owner touches (LSTM's c, GRU's fp32 h) stays
// in global memory owned by that CTA.
//
// A barrier that times out (grid_barrier.cuh) ends the time loop in every
// CTA; each then fills its units' outputs and state with NaN.
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

// Units [first_unit, first_unit + units) of every output and state: NaN.
template <typename scalar_t, CellKind kCell>
__device__ void poison_forward(const PersistentForwardParams<scalar_t>& p, int64_t first_unit,
                               int units) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr int G = gates_of(kCell);
  const acc_t nan = acc_t(NAN);
  const scalar_t nan_s = store<scalar_t>(nan);
  const int64_t B = p.batch, H = p.hidden, S = p.training ? p.steps : 1;
  for (int64_t e = threadIdx.x; e < p.steps * B * units; e += blockDim.x) {
    const int64_t tb = e / units;
    p.y[tb * H + first_unit + (e - tb * units)] = nan_s;
  }
  for (int64_t e = threadIdx.x; e < S * B * units; e += blockDim.x) {
    const int64_t tb = e / units, u = first_unit + (e - tb * units);
    if constexpr (kCell == CellKind::kLstm || kCell == CellKind::kGru) {
#pragma unroll
      for (int g = 0; g < G; ++g) p.gates[tb * G * H + g * H + u] = nan_s;
    }
    if constexpr (kCell == CellKind::kLstm) p.cells[tb * H + u] = nan_s;
    if constexpr (kCell == CellKind::kGru) p.hn[tb * H + u] = nan_s;
  }
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t b = e / units, u = b * H + first_unit + (e - b * units);
    p.h_buffers[u] = nan_s;
    p.h_buffers[B * H + u] = nan_s;
    if constexpr (kCell == CellKind::kLstm) p.c_state[u] = nan;
    if constexpr (kCell == CellKind::kGru) p.h_acc[u] = nan;
  }
}

template <CellKind kCell, Engine E>
__global__ void __launch_bounds__(kPersistentThreads)
    persistent_forward_kernel(const PersistentForwardParams<typename EngineTraits<E>::storage_t> p) {
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
  const int64_t first_unit = static_cast<int64_t>(blockIdx.x) * U;
  // Units this CTA owns; the last CTA may own fewer.
  const int64_t remaining = H - first_unit;
  const int units = remaining <= 0 ? 0 : (remaining < U ? static_cast<int>(remaining) : U);
  bits_t* slice = reinterpret_cast<bits_t*>(shared_raw);
  bits_t* staged = reinterpret_cast<bits_t*>(shared_raw + l.weight_bytes);
  part_t* partials = reinterpret_cast<part_t*>(shared_raw + l.weight_bytes + l.stage_bytes);

  // A(m, k) = W_hh[g*H + first_unit + j, k] for m = g*U + j: read once, streaming.
  stage_slice<E>(slice, l, H, [&](int64_t m, int64_t k) {
    const int64_t g = m / U, j = m - g * U;
    return j < units ? __ldcs(p.w_hh + (g * H + first_unit + j) * H + k) : store<scalar_t>(acc_t(0));
  });
  __syncthreads();

  bool aborted = false;
  for (int64_t t = 0; t < p.steps; ++t) {
    const scalar_t* h_prev = p.h_buffers + (t % 2) * B * H;
    scalar_t* h_next = p.h_buffers + ((t + 1) % 2) * B * H;
    step_product<E>(slice, staged, partials, l, staging_source<E>(h_prev, H, B, H));

    const int64_t slot = p.training ? t : 0;
    const scalar_t* xg_t = p.xg + t * B * G * H;
    scalar_t* y_t = p.y + t * B * H;
    for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
      const int64_t b = e / units;
      const int j = static_cast<int>(e - b * units);
      const int64_t unit = first_unit + j;
      const int64_t u = b * H + unit;  // index into [B, H] tensors
      const bool on = p.lengths == nullptr || t < p.lengths[b];
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
      acc_t pre[G];
#pragma unroll
      for (int g = 0; g < G; ++g) pre[g] = static_cast<acc_t>(partial_sum<E>(partials, l, b, g * U + j));
      const scalar_t* xg_row = xg_t + b * G * H + unit;  // gate g at xg_row[g * H]
      scalar_t h;
      if constexpr (kCell == CellKind::kLstm) {
        const LstmStep<acc_t> s = lstm_step_forward<acc_t>(
            to_acc<acc_t>(xg_row[0]) + pre[0], to_acc<acc_t>(xg_row[H]) + pre[1],
            to_acc<acc_t>(xg_row[2 * H]) + pre[2], to_acc<acc_t>(xg_row[3 * H]) + pre[3], p.c_state[u]);
        p.gates[gate_row] = store<scalar_t>(s.gates.i);
        p.gates[gate_row + H] = store<scalar_t>(s.gates.f);
        p.gates[gate_row + 2 * H] = store<scalar_t>(s.gates.g);
        p.gates[gate_row + 3 * H] = store<scalar_t>(s.gates.o);
        p.c_state[u] = s.c;
        p.cells[slot * B * H + u] = store<scalar_t>(s.c);
        h = store<scalar_t>(s.h);
      } else if constexpr (kCell == CellKind::kGru) {
        const acc_t hn = pre[2] + (p.b_hn != nullptr ? to_acc<acc_t>(p.b_hn[unit]) : acc_t(0));
        const GruStep<acc_t> s = gru_step_forward<acc_t>(to_acc<acc_t>(xg_row[0]) + pre[0],
                                                         to_acc<acc_t>(xg_row[H]) + pre[1],
                                                         to_acc<acc_t>(xg_row[2 * H]), hn, p.h_acc[u]);
        p.gates[gate_row] = store<scalar_t>(s.r);
        p.gates[gate_row + H] = store<scalar_t>(s.z);
        p.gates[gate_row + 2 * H] = store<scalar_t>(s.n);
        p.hn[slot * B * H + u] = store<scalar_t>(hn);
        p.h_acc[u] = s.h;
        h = store<scalar_t>(s.h);
      } else {
        constexpr bool kRelu = kCell == CellKind::kRnnRelu;
        h = store<scalar_t>(rnn_step_forward<kRelu, acc_t>(to_acc<acc_t>(xg_row[0]) + pre[0]));
      }
      h_next[u] = h;
      y_t[u] = h;
    }
    // Every CTA, every step, outside any branch that differs between CTAs.
    if (!grid_barrier(p.barrier, static_cast<unsigned long long>(t + 1))) {
      aborted = true;
      break;
    }
  }
  if (aborted) {
    poison_forward<scalar_t, kCell>(p, first_unit, units);
  }
}

template <Engine E>
const void* forward_kernel_of(CellKind cell) {
  switch (cell) {
    case CellKind::kLstm:
      return reinterpret_cast<const void*>(persistent_forward_kernel<CellKind::kLstm, E>);
    case CellKind::kGru:
      return reinterpret_cast<const void*>(persistent_forward_kernel<CellKind::kGru, E>);
    case CellKind::kRnnTanh:
      return reinterpret_cast<const void*>(persistent_forward_kernel<CellKind::kRnnTanh, E>);
    case CellKind::kRnnRelu:
      return reinterpret_cast<const void*>(persistent_forward_kernel<CellKind::kRnnRelu, E>);
  }
  return nullptr;
}

template <typename scalar_t>
const void* forward_kernel(CellKind cell, bool tf32) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return tf32 ? forward_kernel_of<Engine::kMmaTf32>(cell) : forward_kernel_of<Engine::kFmaF32>(cell);
  } else {
    return forward_kernel_of<engine_for<scalar_t>(false)>(cell);
  }
}

}  // namespace

bool read_device_limits(int device, DeviceLimits* limits) {
  int cooperative = 0, sms = 0, max_shared = 0, major = 0;
  if (cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();  // clear the error of the failed query; the caller reports the refusal
    return false;
  }
  *limits = DeviceLimits{sms, max_shared, major, cooperative != 0};
  return true;
}

template <typename scalar_t>
PersistentPlan plan_persistent_forward(CellKind cell, int64_t batch, int64_t hidden, bool tf32,
                                       const DeviceLimits& limits) {
  return plan_cooperative_grid(forward_kernel<scalar_t>(cell, tf32), engine_for<scalar_t>(tf32),
                               gates_of(cell), batch, hidden, /*backward=*/false, limits);
}

template <typename scalar_t>
cudaError_t launch_persistent_forward(const PersistentForwardParams<scalar_t>& p, CellKind cell,
                                      bool tf32, const PersistentPlan& plan, cudaStream_t stream) {
  return launch_cooperative(forward_kernel<scalar_t>(cell, tf32), p, plan, stream);
}

#define RK_INSTANTIATE_PERSISTENT(scalar_t)                                                        \
  template PersistentPlan plan_persistent_forward<scalar_t>(CellKind, int64_t, int64_t, bool,     \
                                                            const DeviceLimits&);                 \
  template cudaError_t launch_persistent_forward<scalar_t>(                                      \
      const PersistentForwardParams<scalar_t>&, CellKind, bool, const PersistentPlan&, cudaStream_t);

RK_INSTANTIATE_PERSISTENT(float)
RK_INSTANTIATE_PERSISTENT(double)
RK_INSTANTIATE_PERSISTENT(__half)
RK_INSTANTIATE_PERSISTENT(__nv_bfloat16)

}  // namespace cuda
}  // namespace rnnkernels
