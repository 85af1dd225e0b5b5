// Host-side helpers of the cuda backend's glue (*_cuda.cpp): argument checks
// for CUDA tensors, the variable-length rows on the device, the dtype
// mapping from ATen's scalar types to the kernels' CUDA types, and the
// launch check that turns a CUDA error into a Python RuntimeError.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

#include "../cpu/common.h"  // new_output (NaN poisoning), RecurrenceShape, cuts_carry, previous_hidden
#include "params.h"

namespace rnnkernels {
namespace cuda {

// The storage type a kernel sees for an ATen scalar type: at::Half and
// at::BFloat16 have the same 16-bit layout as CUDA's __half and __nv_bfloat16.
template <typename scalar_t>
struct KernelType {
  using type = scalar_t;
};
template <>
struct KernelType<at::Half> {
  using type = __half;
};
template <>
struct KernelType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename scalar_t>
using kernel_t = typename KernelType<scalar_t>::type;

// Typed device pointer of a tensor in the kernels' type (nullptr if undefined).
template <typename scalar_t>
kernel_t<scalar_t>* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<kernel_t<scalar_t>*>(t.data_ptr<scalar_t>()) : nullptr;
}

// The dtype of the state carried inside an op: float64 for float64, else float32.
inline at::ScalarType acc_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

template <typename scalar_t>
typename AccOf<kernel_t<scalar_t>>::type* acc_ptr(const at::Tensor& t) {
  using acc_t = typename AccOf<kernel_t<scalar_t>>::type;
  return t.defined() ? t.data_ptr<acc_t>() : nullptr;
}

inline void check_launch(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, "rnnkernels cuda backend: launching ", what,
              " failed: ", cudaGetErrorString(error));
}

// Checks that `t` is a tensor of `sizes` in `dtype` on `device`.
inline void check_cuda_operand(const at::Tensor& t, const char* name, at::IntArrayRef sizes,
                               at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK(t.device() == device, "rnnkernels cuda backend: ", name, " is on ", t.device(),
              " but xg is on ", device);
  TORCH_CHECK(t.scalar_type() == dtype, "rnnkernels cuda backend: ", name, " has dtype ",
              t.scalar_type(), " but xg has dtype ", dtype);
  TORCH_CHECK(t.sizes() == sizes, "rnnkernels cuda backend: ", name, " has shape ", shape_of(t),
              ", expected ", sizes);
}

inline RecurrenceShape check_cuda_recurrence(const char* cell, const at::Tensor& xg,
                                             const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(xg.is_cuda(), "rnnkernels cuda backend runs on CUDA tensors, got xg on ",
              xg.device());
  const auto dtype = xg.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "rnnkernels cuda backend supports float32, float64, float16 and bfloat16, got ",
              dtype);
  TORCH_CHECK(xg.dim() == 3, cell, ": xg must be [T, B, ", gates, "*H], got shape ", shape_of(xg));
  TORCH_CHECK(xg.size(0) > 0, "Expected sequence length to be larger than 0 in RNN");
  TORCH_CHECK(xg.size(2) % gates == 0, cell, ": xg's last dimension ", xg.size(2),
              " is not a multiple of the ", gates, " gates");
  TORCH_CHECK(w_hh.dim() == 2, cell, ": w_hh must be 2-D, got shape ", shape_of(w_hh));
  RecurrenceShape s{xg.size(0), xg.size(1), xg.size(2) / gates, w_hh.size(1), gates};
  check_cuda_operand(w_hh, "w_hh", {gates * s.hidden, s.hidden_out}, dtype, xg.device());
  return s;
}

// Variable lengths, checked on the host (int64 [B] within [0, T], on the
// CPU or on xg's device) and held on the device for the kernels.
class DeviceLengths {
 public:
  DeviceLengths(const std::optional<at::Tensor>& lengths, const RecurrenceShape& s,
                const at::Device& device) {
    if (!lengths.has_value()) {
      return;
    }
    const at::Tensor& l = *lengths;
    TORCH_CHECK((l.device().is_cpu() || l.device() == device) && l.scalar_type() == at::kLong &&
                    l.dim() == 1 && l.size(0) == s.batch,
                "rnnkernels cuda backend: lengths must be an int64 tensor of shape [", s.batch,
                "] on the CPU or on ", device, ", got ", l.scalar_type(), " of shape ",
                shape_of(l), " on ", l.device());
    const at::Tensor host = l.to(at::kCPU).contiguous();
    const int64_t* values = host.data_ptr<int64_t>();
    for (int64_t b = 0; b < s.batch; ++b) {
      TORCH_CHECK(values[b] >= 0 && values[b] <= s.steps, "rnnkernels cuda backend: lengths[", b,
                  "] = ", values[b], " is outside [0, ", s.steps, "]");
    }
    on_device_ = l.to(device).contiguous();
  }

  RowLengths at_step(int64_t step) const {
    return RowLengths{on_device_.defined() ? on_device_.data_ptr<int64_t>() : nullptr, step};
  }

 private:
  at::Tensor on_device_;
};

// Dispatches `body` (a lambda using scalar_t) over the four supported dtypes.
#define RK_DISPATCH_CUDA_FLOATING(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

}  // namespace cuda
}  // namespace rnnkernels
