// Schemas of the recurrence ops: the op contract of DESIGN.md as torch.library
// sees it. One forward/backward pair per cell. Backends register kernels for
// their dispatch key (cpu/*.cpp for CPU); the fake (meta) implementations that
// let torch.compile trace these ops live in rnnkernels/cpu_backend.py.
//
// Shapes: xg [T, B, G*H], w_hh [G*H, H_out], h0 [B, H_out], c0 [B, H],
// w_hr [H_out, H], b_hn [H], lengths int64 [B]. `training` false skips saving
// per-step state (gates/cells/hn then hold a single step). tbptt = 0 is full
// BPTT; k > 0 cuts the dh/dc carry into step t-1 at t = k, 2k, ...
// Tensors a cell does not have come back as empty [0] tensors. For bfloat16
// and float16 inputs the saved per-step buffers (gates, cells, hn) are
// float32 (the cpu backend's fakes say so); y, the states and every gradient
// keep the input dtype.
#include <torch/library.h>

TORCH_LIBRARY(rnnkernels, m) {
  m.def(
      "lstm_forward(Tensor xg, Tensor w_hh, Tensor h0, Tensor c0, Tensor? w_hr, "
      "Tensor? lengths, bool training) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  m.def(
      "lstm_backward(Tensor dy, Tensor dh_n, Tensor dc_n, Tensor w_hh, Tensor h0, "
      "Tensor c0, Tensor? w_hr, Tensor? lengths, Tensor y, Tensor gates, Tensor cells, "
      "int tbptt) -> (Tensor dxg, Tensor dw_hh, Tensor dh0, Tensor dc0, Tensor dw_hr)");
  m.def(
      "gru_forward(Tensor xg, Tensor w_hh, Tensor h0, Tensor? b_hn, Tensor? lengths, "
      "bool training) -> (Tensor y, Tensor h_n, Tensor gates, Tensor hn)");
  m.def(
      "gru_backward(Tensor dy, Tensor dh_n, Tensor w_hh, Tensor h0, Tensor? lengths, "
      "Tensor y, Tensor gates, Tensor hn, bool has_b_hn, int tbptt) "
      "-> (Tensor dxg, Tensor dw_hh, Tensor dh0, Tensor db_hn)");
  m.def(
      "rnn_forward(Tensor xg, Tensor w_hh, Tensor h0, Tensor? lengths, bool relu) "
      "-> (Tensor y, Tensor h_n)");
  m.def(
      "rnn_backward(Tensor dy, Tensor dh_n, Tensor w_hh, Tensor h0, Tensor? lengths, "
      "Tensor y, bool relu, int tbptt) -> (Tensor dxg, Tensor dw_hh, Tensor dh0)");
  // The cpu backend's input projection of 16-bit layers (csrc/cpu/linear16.cpp):
  // x [..., I], weight [O, I], bias [O] -> [..., O], float32 accumulation.
  m.def("linear16(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def(
      "linear16_backward(Tensor dy, Tensor x, Tensor weight, bool[3] output_mask) "
      "-> (Tensor dx, Tensor dweight, Tensor dbias)");
}
