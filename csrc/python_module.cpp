// The rnnkernels._C Python module. Importing it loads this library, whose
// static initialisers register the torch.library ops (ops.cpp and the
// backends' kernels). Its Python functions switch output poisoning, a
// testing aid (every output the C++ ops allocate is NaN until written), and
// say which instruction-set level and GEMM path the cpu backend runs.
// Plain CPython API: the ops need no pybind11.
#include <Python.h>

#include <atomic>
#include <cstring>

#include "cpu/common.h"
#include "cpu/gemm.h"
#include "cpu/gemm16.h"
#include "cpu/isa.h"

namespace rnnkernels {
namespace {
std::atomic<bool> g_poison_outputs{false};
}  // namespace

bool poison_outputs_enabled() { return g_poison_outputs.load(std::memory_order_relaxed); }
void set_poison_outputs(bool enabled) { g_poison_outputs.store(enabled); }

}  // namespace rnnkernels

namespace {

PyObject* py_set_poison_outputs(PyObject* /*self*/, PyObject* arg) {
  const int enabled = PyObject_IsTrue(arg);
  if (enabled < 0) {
    return nullptr;
  }
  const bool previous = rnnkernels::poison_outputs_enabled();
  rnnkernels::set_poison_outputs(enabled != 0);
  return PyBool_FromLong(previous);
}

PyObject* py_poison_outputs(PyObject* /*self*/, PyObject* /*unused*/) {
  return PyBool_FromLong(rnnkernels::poison_outputs_enabled());
}

// The level the gate math runs at now; ValueError for a bad RNNKERNELS_CPU_ISA.
PyObject* py_cpu_isa(PyObject* /*self*/, PyObject* /*unused*/) {
  try {
    return PyUnicode_FromString(rnnkernels::isa_name(rnnkernels::active_isa()));
  } catch (const c10::Error& error) {
    PyErr_SetString(PyExc_ValueError, error.what_without_backtrace());
    return nullptr;
  }
}

PyObject* py_cpu_isas(PyObject* /*self*/, PyObject* /*unused*/) {
  return PyUnicode_FromString(rnnkernels::supported_isas().c_str());
}

PyObject* py_cpu_16bit_features(PyObject* /*self*/, PyObject* /*unused*/) {
  return PyUnicode_FromString(rnnkernels::cpu_16bit_features().c_str());
}

PyObject* py_cpu_gemm_path(PyObject* /*self*/, PyObject* arg) {
  const char* dtype = PyUnicode_AsUTF8(arg);
  if (dtype == nullptr) {
    return nullptr;
  }
  if (std::strcmp(dtype, "bfloat16") == 0 || std::strcmp(dtype, "float16") == 0) {
    const at::ScalarType type = dtype[0] == 'b' ? at::kBFloat16 : at::kHalf;
    try {
      return PyUnicode_FromString(rnnkernels::gemm16_path_name(rnnkernels::gemm16_path(type)));
    } catch (const c10::Error& error) {  // a bad RNNKERNELS_CPU_GEMM16
      PyErr_SetString(PyExc_ValueError, error.what_without_backtrace());
      return nullptr;
    }
  }
  const at::ScalarType type = std::strcmp(dtype, "float64") == 0 ? at::kDouble : at::kFloat;
  return PyUnicode_FromString(rnnkernels::gemm_path_name(rnnkernels::gemm_path(type)));
}

PyMethodDef methods[] = {
    {"set_poison_outputs", py_set_poison_outputs, METH_O,
     "Fill every output of the C++ ops with NaN before writing it; returns the previous setting."},
    {"poison_outputs", py_poison_outputs, METH_NOARGS,
     "Whether outputs are poisoned with NaN before being written."},
    {"cpu_isa", py_cpu_isa, METH_NOARGS,
     "The instruction-set level of the cpu backend's gate math (RNNKERNELS_CPU_ISA or the widest supported)."},
    {"cpu_isas", py_cpu_isas, METH_NOARGS, "The levels this CPU supports, comma-separated."},
    {"cpu_16bit_features", py_cpu_16bit_features, METH_NOARGS,
     "This CPU's 16-bit features among avx512_bf16, avx512_fp16, amx_bf16, amx_tile (space-separated)."},
    {"cpu_gemm_path", py_cpu_gemm_path, METH_O,
     "The GEMM path of the cpu backend for 'float32' or 'float64' ('mkl_packed', 'blas' or "
     "'aten'), or the 16-bit GEMMs' for 'bfloat16' or 'float16' ('torch', 'mkl_16bit' or "
     "'float32'; ValueError for a bad RNNKERNELS_CPU_GEMM16)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "Compiled rnnkernels ops (registered with torch.library).",
                          -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
