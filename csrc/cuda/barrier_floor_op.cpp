// rnnkernels::grid_barrier_floor(steps, ctas): microseconds per empty grid
// barrier on the current CUDA device, the per-step floor of a persistent
// recurrence (issue 4's benchmark reports step latency against it). Defined
// here, not in csrc/ops.cpp, because only a CUDA build has it; it takes no
// tensors, so its one kernel serves every dispatch key.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "barrier_floor.h"
#include "glue.h"

namespace rnnkernels {
namespace cuda {
namespace {

double grid_barrier_floor(int64_t steps, int64_t ctas) {
  TORCH_CHECK(steps >= 1 && steps <= (1 << 24), "grid_barrier_floor: steps must be in [1, 2^24], got ",
              steps);
  TORCH_CHECK(ctas >= 0 && ctas <= (1 << 20),
              "grid_barrier_floor: ctas must be 0 (one per SM) or a positive count, got ", ctas);
  const at::Tensor counter =
      at::zeros({2}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  const c10::cuda::CUDAGuard guard(counter.device());
  BarrierFloorMeasurement result{};
  const char* refusal = nullptr;
  const cudaError_t error = measure_barrier_floor(
      static_cast<int>(steps), static_cast<int>(ctas),
      reinterpret_cast<unsigned long long*>(counter.data_ptr<int64_t>()),
      c10::cuda::getCurrentCUDAStream(), &result, &refusal);
  TORCH_CHECK(refusal == nullptr, "grid_barrier_floor: cannot launch ", ctas,
              " CTAs cooperatively: ", refusal == nullptr ? "" : refusal);
  check_launch(error, "the empty grid-barrier loop");
  return result.microseconds_per_barrier;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rnnkernels, m) {
  m.def("grid_barrier_floor(int steps=1000, int ctas=0) -> float", &grid_barrier_floor);
}

}  // namespace cuda
}  // namespace rnnkernels
