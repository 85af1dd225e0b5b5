// The per-step floor of a persistent recurrence: the cost of one empty grid
// barrier, measured with a cooperative launch. Host interface of
// barrier_floor.cu (no torch headers; barrier_floor_op.cpp is the torch glue).
#pragma once

#include <cuda_runtime.h>

namespace rnnkernels {
namespace cuda {

// How the cooperative launch of a persistent kernel is sized, and why it
// cannot be made (refusal non-null: the caller raises or falls back).
struct CooperativeGrid {
  int ctas;               // grid size P (0 when refused)
  int max_resident_ctas;  // occupancy per SM x SMs for this kernel, block and shared memory
  const char* refusal;    // nullptr when the launch may go ahead
};

struct BarrierFloorMeasurement {
  double microseconds_per_barrier;  // (time of 2N barriers - time of N) / N
  int ctas;                         // grid size measured
  int threads;                      // threads per CTA
};

// Measures `steps` (>= 1) empty barriers on the current device and stream.
// `counter` is 16 zero-able bytes of device memory (the barrier's counter,
// abort word and error flag); `requested_ctas` 0 means
// one CTA per SM. On a refusal (no cooperative launch, more CTAs than can be
// resident) returns cudaErrorCooperativeLaunchTooLarge or
// cudaErrorNotSupported with *refusal set to the reason.
cudaError_t measure_barrier_floor(int steps, int requested_ctas, unsigned long long* counter,
                                  cudaStream_t stream, BarrierFloorMeasurement* result,
                                  const char** refusal);

}  // namespace cuda
}  // namespace rnnkernels
