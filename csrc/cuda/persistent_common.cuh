// Host pieces shared by the persistent forward and backward kernels: the
// engine a dtype runs on, and the no-deadlock sizing of the cooperative grid
// (shared/notes/persistent-kernels.md sec. 3): check the device supports
// cooperative launches, plan the slice layout (persistent_plan.h) for its
// SM count and shared memory, set the kernel's shared-memory attribute,
// query its occupancy with that same shared memory and block size, and
// refuse when more CTAs are needed than can be resident. Every refusal is a
// reason, never a launch. Last, the cooperative launch itself.
#pragma once

#include "params.h"

namespace rnnkernels {
namespace cuda {

// Opt-in shared memory kept back from the plan: the kernels' static shared
// memory (the barrier's abort flag) must fit beside the dynamic part.
constexpr int64_t kStaticSharedReserve = 1024;

// The engine of a storage type: tensor cores for 16-bit (sm_80+), tf32
// tensor cores or fp32 FMA for float as torch.nn's RNN precision says
// (`tf32`, chosen by the glue), fp64 FMA for double.
template <typename scalar_t>
constexpr Engine engine_for(bool tf32);
template <>
constexpr Engine engine_for<__nv_bfloat16>(bool) { return Engine::kMmaBf16; }
template <>
constexpr Engine engine_for<__half>(bool) { return Engine::kMmaF16; }
template <>
constexpr Engine engine_for<float>(bool tf32) { return tf32 ? Engine::kMmaTf32 : Engine::kFmaF32; }
template <>
constexpr Engine engine_for<double>(bool) { return Engine::kFmaF64; }

// `kernel` is the launch's kernel for `engine`; `gates` its cell's G.
inline PersistentPlan plan_cooperative_grid(const void* kernel, Engine engine, int gates,
                                            int64_t batch, int64_t hidden, bool backward,
                                            const DeviceLimits& limits) {
  PersistentPlan plan{};
  if (!limits.cooperative) {
    plan.refusal = "the device does not support cooperative launches";
    return plan;
  }
  if (engine_is_mma(engine) && limits.major < 8) {
    plan.refusal = "its tensor-core kernels (mma.sync m16n8k16 / m16n8k8.tf32) need sm_80 or newer";
    return plan;
  }
  plan = plan_persistent(
      PlanRequest{engine, gates, batch, hidden, backward, limits.multiprocessors,
                  limits.max_shared - kStaticSharedReserve});
  if (plan.refusal != nullptr) {
    return plan;
  }
  int per_sm = 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(plan.shared_bytes)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistentThreads,
                                                    plan.shared_bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error of the refused query
    plan.refusal = "the occupancy query for this shared-memory size failed";
    return plan;
  }
  if (plan.ctas > int64_t{per_sm} * limits.multiprocessors) {
    plan.refusal = "more CTAs are needed than can be resident at once";
  }
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
