// The rnnkernels._C Python module. Importing it loads this library, whose
// static initialisers register the torch.library ops (ops.cpp and the
// backends' kernels). Its only Python functions switch output poisoning,
// a testing aid: every output the C++ ops allocate is NaN until written.
// Plain CPython API: the ops need no pybind11.
#include <Python.h>

#include <atomic>

#include "cpu/common.h"

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

PyMethodDef methods[] = {
    {"set_poison_outputs", py_set_poison_outputs, METH_O,
     "Fill every output of the C++ ops with NaN before writing it; returns the previous setting."},
    {"poison_outputs", py_poison_outputs, METH_NOARGS,
     "Whether outputs are poisoned with NaN before being written."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "Compiled rnnkernels ops (registered with torch.library).",
                          -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
