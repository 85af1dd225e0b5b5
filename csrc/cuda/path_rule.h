// Which kernel path runs a forward: the step path (a GEMM plus a fused
// pointwise kernel per step, any shape) or the persistent path (one
// cooperative launch for all steps, persistent_forward.cu). Host-only and
// free of torch and CUDA headers, so the CPU tests compile and run it.
//
// RNNKERNELS_CUDA_PATH picks:
//   step (default, also when unset or empty)  always the step path;
//   persistent  the persistent path, or an error saying why it cannot run;
//   auto        the rule below, falling back to the step path on any refusal.
// The default stays `step` until the persistent kernel has passed the GPU
// checks of tests/test_cuda_backend.py; `auto` is the intended default then.
#pragma once

#include <cstdint>
#include <cstring>

namespace rnnkernels {
namespace cuda {

enum class PathRequest { kStep, kPersistent, kAuto };

// Parses the variable's value (nullptr when unset); false for an unknown value.
inline bool parse_path_request(const char* value, PathRequest* request) {
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "step") == 0) {
    *request = PathRequest::kStep;
  } else if (std::strcmp(value, "persistent") == 0) {
    *request = PathRequest::kPersistent;
  } else if (std::strcmp(value, "auto") == 0) {
    *request = PathRequest::kAuto;
  } else {
    return false;
  }
  return true;
}

struct RecurrenceProblem {
  bool has_projection;  // LSTM with proj_size
  int64_t steps;        // T
  int64_t batch;        // B
  int64_t hidden;       // H
};

// Why the persistent kernel cannot run this problem at all (before asking the
// device whether W_hh fits and the grid can be resident), or nullptr.
inline const char* persistent_problem_refusal(const RecurrenceProblem& p) {
  if (p.has_projection) {
    return "the persistent kernel has no LSTM projection (proj_size) yet";
  }
  if (p.batch < 1 || p.hidden < 1) {
    return "an empty batch or hidden size has nothing to run persistently";
  }
  return nullptr;
}

// The `auto` rule's thresholds. TO BE MEASURED on a GPU (benchmarks/, against
// the step path at the suite's shapes); these are estimates from
// shared/notes/persistent-kernels.md sec. 1: with few steps the one-off cost
// of loading W_hh on-chip is not repaid, and beyond a few hundred rows the
// h broadcast, not the barrier, bounds a step, where per-step GEMMs do well.
constexpr int64_t kAutoMinSteps = 8;
constexpr int64_t kAutoMaxBatch = 256;

// Whether `auto` tries the persistent path (the device may still refuse it).
inline bool auto_prefers_persistent(const RecurrenceProblem& p) {
  return persistent_problem_refusal(p) == nullptr && p.steps >= kAutoMinSteps &&
         p.batch <= kAutoMaxBatch;
}

}  // namespace cuda
}  // namespace rnnkernels
