"""The cuda backend: the C++ ops of csrc/ registered for CUDA tensors.

Work in progress (issue 4): until the CUDA kernels are built into
rnnkernels._C this backend reports itself unavailable.
"""


class CudaBackend:
    name = "cuda"

    def unavailable_reason(self):
        return "this version of rnnkernels has no cuda backend yet"

    def unsupported_reason(self, device, dtype):
        return self.unavailable_reason()
