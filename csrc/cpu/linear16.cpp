// The input projection of 16-bit layers, xg = x W_ih^T + b, and its
// gradients, through the 16-bit GEMMs (gemm16.h): float32 accumulation, the
// bias added in float32, one rounding to the input dtype at the end, as
// torch's own 16-bit linear rounds its output (on the torch path it is
// torch's own linear).
//
// Shapes: x [..., I], weight [O, I], bias [O] -> [..., O]. Backward takes
// dy [..., O] and returns dx [..., I], dweight [O, I], dbias [O] (each an
// empty [0] tensor where output_mask says it is not needed).
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common.h"
#include "gemm16.h"

namespace rnnkernels {
namespace {

void check_linear16(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(),
              "rnnkernels linear16: expected CPU tensors, got x on ", x.device(),
              " and weight on ", weight.device());
  TORCH_CHECK(is_16bit(x.scalar_type()), "rnnkernels linear16: expected bfloat16 or float16 "
              "input, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "rnnkernels linear16: weight has dtype ",
              weight.scalar_type(), " but x has dtype ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(1),
              "rnnkernels linear16: x of shape ", shape_of(x), " and weight of shape ",
              shape_of(weight), " cannot be multiplied");
}

// x as [N, I], contiguous.
at::Tensor as_rows(const at::Tensor& x) {
  return x.reshape({-1, x.size(-1)}).contiguous();
}

std::vector<int64_t> with_last(const at::Tensor& x, int64_t last) {
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.back() = last;
  return sizes;
}

at::Tensor linear16_cpu(const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias) {
  const at::NoGradGuard no_grad;  // autograd is the Python Function's job
  check_linear16(x, weight);
  const int64_t out_features = weight.size(0);
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->dim() == 1 &&
                    bias->size(0) == out_features,
                "rnnkernels linear16: bias must be [", out_features, "] in ", x.scalar_type(),
                ", got ", bias->scalar_type(), " of shape ", shape_of(*bias));
  }
  if (gemm16_path(x.scalar_type()) == Gemm16Path::kTorch) {
    return at::linear(x, weight, bias);
  }
  const at::Tensor rows = as_rows(x);
  const at::Tensor w = weight.contiguous();
  const int64_t n = rows.size(0), k = rows.size(1);
  // The bias is added in float32 (the GEMM accumulates onto it), and the sum
  // rounded once on the way out.
  at::Tensor acc = bias.has_value()
                       ? bias->to(at::kFloat).expand({n, out_features}).contiguous()
                       : at::empty({n, out_features}, x.options().dtype(at::kFloat));
  gemm16(x.scalar_type(), false, true, n, out_features, k, rows.data_ptr(), k, w.data_ptr(), k,
         bias.has_value() ? 1.0f : 0.0f, acc.data_ptr<float>(), out_features);
  const at::Tensor out = acc.to(x.scalar_type());
  return out.view(with_last(x, out_features));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear16_backward_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  const at::NoGradGuard no_grad;
  check_linear16(x, weight);
  const int64_t out_features = weight.size(0);
  TORCH_CHECK(dy.scalar_type() == x.scalar_type() && dy.sizes() == at::IntArrayRef(with_last(x, out_features)),
              "rnnkernels linear16_backward: dy has shape ", shape_of(dy), " (", dy.scalar_type(),
              "), expected ", at::IntArrayRef(with_last(x, out_features)), " in ", x.scalar_type());
  const at::Tensor dy_rows = as_rows(dy);
  const auto empty = [&] { return at::empty({0}, x.options()); };
  at::Tensor dx = output_mask[0]
                      ? mm16(dy_rows, false, weight.contiguous(), false).view(x.sizes())
                      : empty();
  at::Tensor dweight = output_mask[1]
                           ? mm16(dy_rows, true, as_rows(x), false)
                           : empty();
  // torch's 16-bit sum accumulates in float32 too
  at::Tensor dbias = output_mask[2] ? dy_rows.sum(0) : empty();
  return {dx, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("linear16", &linear16_cpu);
  m.impl("linear16_backward", &linear16_backward_cpu);
}

}  // namespace rnnkernels
