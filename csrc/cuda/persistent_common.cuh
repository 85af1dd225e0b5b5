// Pieces shared by the persistent forward and backward kernels: the block
// shape, the shared-memory layout's sizes, a warp reduction, and the
// no-deadlock sizing of the cooperative grid (shared/notes/
// persistent-kernels.md sec. 3): check the device supports cooperative
// launches, size U so one CTA per SM covers H, check the shared memory fits,
// set the kernel's shared-memory attribute, query its occupancy with that
// same shared memory and block size, and refuse when more CTAs are needed
// than can be resident. Every refusal is a reason, never a launch. Last,
// the cooperative launch itself.
#pragma once

#include "params.h"

namespace rnnkernels {
namespace cuda {

constexpr int kPersistentThreads = 256;
constexpr int kPersistentWarps = kPersistentThreads / 32;

constexpr int gates_of(CellKind cell) {
  return cell == CellKind::kLstm ? 4 : cell == CellKind::kGru ? 3 : 1;
}

// Bytes of a CTA's slice of W_hh (G*U rows or columns of length H), rounded
// up to 16 so the buffer after it is aligned.
__host__ __device__ inline size_t weight_bytes(int gates, int units, int64_t hidden, size_t element) {
  return (static_cast<size_t>(gates) * units * hidden * element + 15) / 16 * 16;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Shared memory: the W_hh slice, then `scratch_per_unit_row` acc values per
// (unit, batch row).
inline PersistentPlan plan_cooperative_grid(const void* kernel, int gates, int64_t batch,
                                            int64_t hidden, size_t element, size_t acc_element,
                                            int scratch_per_unit_row) {
  PersistentPlan plan{0, 0, 0, nullptr};
  int device = 0, cooperative = 0, sms = 0, max_shared = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    cudaGetLastError();  // clear the error of the failed query; the caller reports the refusal
    plan.refusal = "the device attributes could not be read";
    return plan;
  }
  if (cooperative == 0) {
    plan.refusal = "the device does not support cooperative launches";
    return plan;
  }
  if (batch < 1 || hidden < 1) {
    plan.refusal = "an empty batch or hidden size has nothing to run persistently";
    return plan;
  }
  const int64_t units = (hidden + sms - 1) / sms;
  const size_t shared = weight_bytes(gates, static_cast<int>(units), hidden, element) +
                        static_cast<size_t>(scratch_per_unit_row) * units * batch * acc_element;
  if (units > (1 << 20) || shared > static_cast<size_t>(max_shared)) {
    plan.refusal = "the CTAs' slices of W_hh do not fit in shared memory";
    return plan;
  }
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(shared)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistentThreads, shared) !=
          cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error of the refused query
    plan.refusal = "the occupancy query for this shared-memory size failed";
    return plan;
  }
  const int64_t ctas = (hidden + units - 1) / units;
  if (ctas > static_cast<int64_t>(per_sm) * sms) {
    plan.refusal = "more CTAs are needed than can be resident at once";
    return plan;
  }
  plan.ctas = static_cast<int>(ctas);
  plan.units_per_cta = static_cast<int>(units);
  plan.shared_bytes = shared;
  return plan;
}

// Launches `kernel` (a persistent kernel taking Params by value) cooperatively
// on the grid `plan` sized; returns the launch's error.
template <typename Params>
cudaError_t launch_cooperative(const void* kernel, Params params, const PersistentPlan& plan,
                               cudaStream_t stream) {
  void* args[] = {&params};
  return cudaLaunchCooperativeKernel(kernel, dim3(plan.ctas), dim3(kPersistentThreads), args,
                                     plan.shared_bytes, stream);
}

}  // namespace cuda
}  // namespace rnnkernels
