// Path choice and launches of the persistent kernels. See persistent_glue.h.
#include "persistent_glue.h"

#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "../fp32_precision.h"

namespace rnnkernels {
namespace cuda {
namespace {

// The longest a grid barrier waits before the launch gives up: far beyond
// any legitimate wait (one step), short enough to end a hang.
constexpr long long kDefaultSpinLimitMs = 10'000;

// What a timed-out barrier writes to the error flag.
constexpr int kForwardTimedOut = 1;
constexpr int kBackwardTimedOut = 2;

long long spin_limit_ns() {
  const char* value = std::getenv("RNNKERNELS_CUDA_SPIN_LIMIT_MS");
  if (value == nullptr || value[0] == '\0') {
    return kDefaultSpinLimitMs * 1'000'000LL;
  }
  char* end = nullptr;
  const long long ms = std::strtoll(value, &end, 10);
  TORCH_CHECK(end != value && *end == '\0' && ms >= 0,
              "RNNKERNELS_CUDA_SPIN_LIMIT_MS must be a non-negative number of milliseconds, got '",
              value, "'");
  return ms * 1'000'000LL;
}

bool debug_sync() {
  const char* value = std::getenv("RNNKERNELS_CUDA_DEBUG_SYNC");
  return value != nullptr && value[0] != '\0' && std::string(value) != "0";
}

// One int of pinned host memory, mapped into every device's address space:
// a persistent kernel whose barrier times out writes its code there, and the
// next call reads it on the host without any CUDA call or sync. Allocated
// at the first persistent launch (nullptr before: nothing can have failed).
std::atomic<int*> error_flag_storage{nullptr};

int* device_error_flag() {
  static int* flag = [] {
    // Relaxed capture mode: the first launch may happen inside a CUDA graph capture.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    int* p = nullptr;
    const cudaError_t error = cudaHostAlloc(reinterpret_cast<void**>(&p), sizeof(int),
                                            cudaHostAllocMapped | cudaHostAllocPortable);
    cudaThreadExchangeStreamCaptureMode(&mode);
    check_launch(error, "the persistent kernels' error flag (cudaHostAlloc)");
    *p = 0;
    error_flag_storage.store(p);
    return p;
  }();
  void* device = nullptr;
  check_launch(cudaHostGetDevicePointer(&device, flag, 0),
               "the persistent kernels' error flag (cudaHostGetDevicePointer)");
  return static_cast<int*>(device);
}

// Raises (once) if a persistent kernel launched earlier gave up at a barrier.
void check_previous_launches() {
  volatile int* flag = error_flag_storage.load();
  if (flag == nullptr) {
    return;
  }
  const int code = *flag;
  if (code == 0) {
    return;
  }
  *flag = 0;
  TORCH_CHECK(false, "rnnkernels cuda backend: an earlier persistent ",
              code == kBackwardTimedOut ? "backward" : "forward",
              " kernel waited past RNNKERNELS_CUDA_SPIN_LIMIT_MS at a grid barrier and gave up: "
              "its CTAs were not all running at once (another kernel or process holding SMs, "
              "MPS or MIG limits). Its outputs were filled with NaN. RNNKERNELS_CUDA_PATH=step "
              "avoids the persistent path.");
}

PathRequest requested_path() {
  const char* value = std::getenv("RNNKERNELS_CUDA_PATH");
  PathRequest request = PathRequest::kStep;
  TORCH_CHECK(parse_path_request(value, &request),
              "RNNKERNELS_CUDA_PATH must be 'step', 'persistent' or 'auto', got '", value, "'");
  return request;
}

const char* cell_name(CellKind cell) {
  switch (cell) {
    case CellKind::kLstm: return "lstm";
    case CellKind::kGru: return "gru";
    case CellKind::kRnnTanh: return "rnn_tanh";
    case CellKind::kRnnRelu: return "rnn_relu";
  }
  return "?";
}

// Whether `plan` lets the launch go ahead; a refusal raises when the path was
// forced. `what` names the op in the message ("lstm", "the gru backward").
bool plan_accepted(const PersistentPlan& plan, bool forced, const std::string& what,
                   const RecurrenceShape& s) {
  if (plan.refusal == nullptr) {
    return true;
  }
  TORCH_CHECK(!forced, "rnnkernels cuda backend: RNNKERNELS_CUDA_PATH=persistent, but ", what,
              " with B=", s.batch, ", H=", s.hidden, " cannot run on it: ", plan.refusal);
  return false;
}

// Fills what both persistent kernels take beside their tensors; `scratch`
// is two zeroed int64: the grid barrier's counter, then its abort word.
void fill_grid_params(PersistentGridParams& p, const RecurrenceShape& s, const DeviceLengths& rows,
                      const at::Tensor& scratch, const PersistentPlan& plan, int error_code) {
  p.lengths = rows.at_step(0).lengths;
  auto* words = reinterpret_cast<unsigned long long*>(scratch.data_ptr<int64_t>());
  p.barrier = GridBarrier{words, reinterpret_cast<unsigned int*>(words + 1), device_error_flag(),
                          spin_limit_ns(), error_code};
  p.layout = plan.layout();
  p.steps = s.steps;
  p.batch = s.batch;
  p.hidden = s.hidden;
  p.units_per_cta = plan.units_per_cta;
}

// The device's limits, or a refusal naming why they could not be read.
DeviceLimits current_device_limits(bool forced) {
  DeviceLimits limits{};
  int device = 0;
  const bool read = cudaGetDevice(&device) == cudaSuccess && read_device_limits(device, &limits);
  if (!read) {
    cudaGetLastError();
    TORCH_CHECK(!forced, "rnnkernels cuda backend: RNNKERNELS_CUDA_PATH=persistent, but the "
                         "device attributes could not be read");
  }
  return limits;
}

// After a launch: with RNNKERNELS_CUDA_DEBUG_SYNC set (and no graph being
// captured), wait for the kernel and raise at once if a barrier gave up.
void debug_check(cudaStream_t stream) {
  if (!debug_sync()) {
    return;
  }
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check_launch(cudaStreamIsCapturing(stream, &capturing), "cudaStreamIsCapturing");
  if (capturing != cudaStreamCaptureStatusNone) {
    return;
  }
  check_launch(cudaStreamSynchronize(stream), "the persistent kernel (RNNKERNELS_CUDA_DEBUG_SYNC)");
  check_previous_launches();
}

// Whether the launch ran. A grid too large to be resident is the one error
// left to the step path, unless the path was forced; any other error raises.
bool launched(cudaError_t error, bool forced, const char* what) {
  if (error == cudaErrorCooperativeLaunchTooLarge && !forced) {
    cudaGetLastError();  // not sticky: clear it and let the step path run
    return false;
  }
  check_launch(error, what);
  return true;
}

template <typename scalar_t>
bool run_forward(CellKind cell, const RecurrenceShape& s, const DeviceLengths& rows, bool training,
                 bool forced, PersistentForwardTensors& io) {
  using k_t = kernel_t<scalar_t>;
  const bool tf32 = std::is_same_v<scalar_t, float> && rnn_fp32_uses_tf32();
  const DeviceLimits limits = current_device_limits(forced);
  const PersistentPlan plan = plan_persistent_forward<k_t>(cell, s.batch, s.hidden, tf32, limits);
  if (!plan_accepted(plan, forced, cell_name(cell), s)) {
    return false;
  }
  at::Tensor h_buffers = at::empty({2, s.batch, s.hidden}, io.xg.options());
  h_buffers[0].copy_(io.h0);
  const at::Tensor scratch = at::zeros({2}, io.xg.options().dtype(at::kLong));

  PersistentForwardParams<k_t> p;
  p.xg = ptr<scalar_t>(io.xg);
  p.w_hh = ptr<scalar_t>(io.w_hh);
  p.b_hn = ptr<scalar_t>(io.b_hn);
  p.h_buffers = ptr<scalar_t>(h_buffers);
  p.c_state = acc_ptr<scalar_t>(io.c_state);
  p.h_acc = acc_ptr<scalar_t>(io.h_acc);
  p.y = ptr<scalar_t>(io.y);
  p.gates = ptr<scalar_t>(io.gates);
  p.cells = ptr<scalar_t>(io.cells);
  p.hn = ptr<scalar_t>(io.hn);
  p.training = training;
  fill_grid_params(p, s, rows, scratch, plan, kForwardTimedOut);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (!launched(launch_persistent_forward(p, cell, tf32, plan, stream), forced,
                "the persistent forward kernel")) {
    return false;
  }
  debug_check(stream);
  io.h_n = h_buffers[s.steps % 2].clone();
  return true;
}

template <typename scalar_t>
bool run_backward(CellKind cell, const RecurrenceShape& s, const DeviceLengths& rows, int64_t tbptt,
                  bool forced, PersistentBackwardTensors& io) {
  using k_t = kernel_t<scalar_t>;
  const bool tf32 = std::is_same_v<scalar_t, float> && rnn_fp32_uses_tf32();
  const DeviceLimits limits = current_device_limits(forced);
  const PersistentPlan plan = plan_persistent_backward<k_t>(cell, s.batch, s.hidden, tf32, limits);
  if (!plan_accepted(plan, forced, std::string("the ") + cell_name(cell) + " backward", s)) {
    return false;
  }
  const at::Tensor scratch = at::zeros({2}, io.dy.options().dtype(at::kLong));
  PersistentBackwardParams<k_t> p;
  p.dy = ptr<scalar_t>(io.dy);
  p.w_hh = ptr<scalar_t>(io.w_hh);
  p.gates = ptr<scalar_t>(io.gates);
  p.cells = ptr<scalar_t>(io.cells);
  p.c0 = ptr<scalar_t>(io.c0);
  p.hn = ptr<scalar_t>(io.hn);
  p.y = ptr<scalar_t>(io.y);
  p.h0 = ptr<scalar_t>(io.h0);
  p.carry = acc_ptr<scalar_t>(io.carry);
  p.dc = acc_ptr<scalar_t>(io.dc);
  p.dxg = ptr<scalar_t>(io.dxg);
  p.dg_rec = ptr<scalar_t>(io.dg_rec);
  p.tbptt = tbptt;
  fill_grid_params(p, s, rows, scratch, plan, kBackwardTimedOut);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (!launched(launch_persistent_backward(p, cell, tf32, plan, stream), forced,
                "the persistent backward kernel")) {
    return false;
  }
  debug_check(stream);
  return true;
}

// Whether RNNKERNELS_CUDA_PATH and the problem ask for the persistent path;
// *forced says a refusal must raise rather than fall back.
bool wants_persistent(CellKind cell, const RecurrenceShape& s, bool has_projection, bool* forced) {
  const PathRequest request = requested_path();
  if (request == PathRequest::kStep) {
    return false;
  }
  const RecurrenceProblem problem{has_projection, s.steps, s.batch, s.hidden};
  *forced = request == PathRequest::kPersistent;
  if (*forced) {
    const char* refusal = persistent_problem_refusal(problem);
    TORCH_CHECK(refusal == nullptr, "rnnkernels cuda backend: RNNKERNELS_CUDA_PATH=persistent, but ",
                cell_name(cell), " cannot run on it: ", refusal);
    return true;
  }
  return auto_prefers_persistent(problem);
}

}  // namespace

bool try_persistent_forward(CellKind cell, const RecurrenceShape& s, bool has_projection,
                            const DeviceLengths& rows, bool training, PersistentForwardTensors& io) {
  check_previous_launches();
  bool forced = false;
  if (!wants_persistent(cell, s, has_projection, &forced)) {
    return false;
  }
  bool ran = false;
  RK_DISPATCH_CUDA_FLOATING(io.xg.scalar_type(), "persistent_forward", [&] {
    ran = run_forward<scalar_t>(cell, s, rows, training, forced, io);
  });
  return ran;
}

bool try_persistent_backward(CellKind cell, const RecurrenceShape& s, bool has_projection,
                             const DeviceLengths& rows, int64_t tbptt,
                             PersistentBackwardTensors& io) {
  check_previous_launches();
  bool forced = false;
  if (!wants_persistent(cell, s, has_projection, &forced)) {
    return false;
  }
  bool ran = false;
  RK_DISPATCH_CUDA_FLOATING(io.dy.scalar_type(), "persistent_backward", [&] {
    ran = run_backward<scalar_t>(cell, s, rows, tbptt, forced, io);
  });
  return ran;
}

}  // namespace cuda
}  // namespace rnnkernels
