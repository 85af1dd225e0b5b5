// float32 recurrences follow torch.nn's RNN precision, not the matmul switch:
// cuDNN runs fp32 RNNs on TF32 tensor cores by default (torch 2.13:
// torch.backends.cudnn.rnn.fp32_precision == "tf32") while plain matmuls run
// IEEE. rnnkernels/triton_kernels/precision.py is the same rule in Python;
// tests/test_fp32_precision.py checks the two agree under every setting.
//
// The cuda backend's persistent kernels pick their engine from
// rnn_fp32_uses_tf32(); its step path runs ATen GEMMs, which read the matmul
// switch, so it holds a MatmulPrecisionFollowsRnn for the op's duration.
#pragma once

#include <ATen/Context.h>
#include <torch/version.h>

namespace rnnkernels {

// torch 2.13 resolves the RNN setting through cuDNN's and the global one
// ("none" defers to the next level, the legacy cudnn.allow_tf32 is the
// default); older torch has only the legacy switch.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13)
#define RK_TORCH_HAS_FP32_PRECISION_ENUMS 1
#else
#define RK_TORCH_HAS_FP32_PRECISION_ENUMS 0
#endif

inline bool rnn_fp32_uses_tf32() {
#if RK_TORCH_HAS_FP32_PRECISION_ENUMS
  return at::globalContext().allowTF32CuDNN(at::Float32Op::RNN);
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

// Whether ATen's float32 GEMMs on CUDA run on TF32 tensor cores now.
inline bool matmul_uses_tf32() {
#if RK_TORCH_HAS_FP32_PRECISION_ENUMS
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
         at::Float32Precision::TF32;
#else
  return at::globalContext().allowTF32CuBLAS();
#endif
}

// While alive, ATen's float32 GEMMs on CUDA run at the RNN's precision, and
// the caller's matmul setting comes back unchanged at the end. torch 2.13:
// through the new API alone (its legacy getters refuse a state the new API
// set); older torch: through the legacy switch, which keeps both states
// consistent, and left alone when the caller's state is already a mix torch
// refuses to read. Process-wide: a float32 matmul another thread runs
// meanwhile sees it too.
class MatmulPrecisionFollowsRnn {
 public:
  explicit MatmulPrecisionFollowsRnn(bool active) {
    if (!active) {
      return;
    }
    at::Context& context = at::globalContext();
    const bool tf32 = rnn_fp32_uses_tf32();
#if RK_TORCH_HAS_FP32_PRECISION_ENUMS
    saved_ = context.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL);
    context.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL,
                                tf32 ? at::Float32Precision::TF32 : at::Float32Precision::IEEE);
#else
    try {
      saved_ = context.allowTF32CuBLAS();
    } catch (const c10::Error&) {
      return;  // torch refuses to read the caller's mixed state; so leave it
    }
    context.setAllowTF32CuBLAS(tf32);
#endif
    active_ = true;
  }
  ~MatmulPrecisionFollowsRnn() {
    if (!active_) {
      return;
    }
#if RK_TORCH_HAS_FP32_PRECISION_ENUMS
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, saved_);
#else
    at::globalContext().setAllowTF32CuBLAS(saved_);
#endif
  }
  MatmulPrecisionFollowsRnn(const MatmulPrecisionFollowsRnn&) = delete;
  MatmulPrecisionFollowsRnn& operator=(const MatmulPrecisionFollowsRnn&) = delete;

 private:
  bool active_ = false;
#if RK_TORCH_HAS_FP32_PRECISION_ENUMS
  at::Float32Precision saved_ = at::Float32Precision::NONE;
#else
  bool saved_ = false;
#endif
};

}  // namespace rnnkernels
