// An empty loop of grid barriers, launched with the no-deadlock procedure of
// shared/notes/persistent-kernels.md section 3: check the device supports
// cooperative launches, size the grid from the occupancy of this exact kernel
// (same block size and shared memory), refuse if it exceeds what can be
// resident, launch cooperatively and check the launch. Its time per barrier
// is the floor of a persistent recurrence's step.
#include "barrier_floor.h"
#include "grid_barrier.cuh"

namespace rnnkernels {
namespace cuda {
namespace {

constexpr int kFloorThreads = 128;
// Ten seconds: far beyond any legitimate wait of one barrier.
constexpr long long kSpinLimitNs = 10'000'000'000LL;

__global__ void empty_barrier_loop(GridBarrier barrier, int steps) {
  for (int epoch = 1; epoch <= steps; ++epoch) {
    if (!grid_barrier(barrier, static_cast<unsigned long long>(epoch))) {
      return;
    }
  }
}

CooperativeGrid plan_grid(int device, int requested_ctas) {
  CooperativeGrid grid{0, 0, nullptr};
  int cooperative = 0, sms = 0, per_sm = 0;
  if (cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess ||
      cooperative == 0) {
    grid.refusal = "this device does not support cooperative launches";
    return grid;
  }
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, empty_barrier_loop, kFloorThreads,
                                                    0) != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error; the caller reports the refusal
    grid.refusal = "the occupancy query failed";
    return grid;
  }
  grid.max_resident_ctas = per_sm * sms;
  grid.ctas = requested_ctas > 0 ? requested_ctas : sms;
  if (grid.ctas > grid.max_resident_ctas) {
    grid.refusal = "more CTAs were asked for than can be resident at once";
    grid.ctas = 0;
  }
  return grid;
}

// scratch: [0, 8) the counter, [8, 12) the abort word, [12, 16) the error flag.
cudaError_t timed_launch(int ctas, int steps, unsigned long long* scratch, cudaStream_t stream,
                         cudaEvent_t start, cudaEvent_t stop, float* milliseconds) {
  GridBarrier barrier{scratch, reinterpret_cast<unsigned int*>(scratch + 1),
                      reinterpret_cast<int*>(scratch + 1) + 1, kSpinLimitNs, 1};
  void* args[] = {&barrier, &steps};
  cudaError_t error = cudaMemsetAsync(scratch, 0, 2 * sizeof(*scratch), stream);
  if (error == cudaSuccess) error = cudaEventRecord(start, stream);
  if (error == cudaSuccess) {
    error = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(empty_barrier_loop),
                                        dim3(ctas), dim3(kFloorThreads), args, 0, stream);
  }
  if (error == cudaSuccess) error = cudaEventRecord(stop, stream);
  if (error == cudaSuccess) error = cudaEventSynchronize(stop);
  if (error == cudaSuccess) error = cudaEventElapsedTime(milliseconds, start, stop);
  unsigned int aborted = 0;
  if (error == cudaSuccess) {
    error = cudaMemcpy(&aborted, scratch + 1, sizeof(aborted), cudaMemcpyDeviceToHost);
  }
  // A barrier that gave up: the CTAs were not all running (the grid was not co-resident).
  return error == cudaSuccess && aborted != 0 ? cudaErrorLaunchTimeout : error;
}

}  // namespace

cudaError_t measure_barrier_floor(int steps, int requested_ctas, unsigned long long* counter,
                                  cudaStream_t stream, BarrierFloorMeasurement* result,
                                  const char** refusal) {
  *refusal = nullptr;
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) {
    return error;
  }
  const CooperativeGrid grid = plan_grid(device, requested_ctas);
  if (grid.refusal != nullptr) {
    *refusal = grid.refusal;
    return grid.max_resident_ctas > 0 ? cudaErrorCooperativeLaunchTooLarge : cudaErrorNotSupported;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  error = cudaEventCreate(&start);
  if (error == cudaSuccess) error = cudaEventCreate(&stop);
  float warmup = 0, single = 0, twice = 0;
  if (error == cudaSuccess) error = timed_launch(grid.ctas, steps, counter, stream, start, stop, &warmup);
  if (error == cudaSuccess) error = timed_launch(grid.ctas, steps, counter, stream, start, stop, &single);
  if (error == cudaSuccess) error = timed_launch(grid.ctas, 2 * steps, counter, stream, start, stop, &twice);
  // Destroying cannot fail in a way that changes the measurement.
  if (start != nullptr) (void)cudaEventDestroy(start);
  if (stop != nullptr) (void)cudaEventDestroy(stop);
  if (error == cudaSuccess) {
    // The difference cancels the launch overhead, which both launches pay once.
    result->microseconds_per_barrier = 1000.0 * (twice - single) / steps;
    result->ctas = grid.ctas;
    result->threads = kFloorThreads;
  }
  return error;
}

}  // namespace cuda
}  // namespace rnnkernels
