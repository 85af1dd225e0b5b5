"""The triton backend (work in progress, issue 3)."""


class TritonBackend:
    name = "triton"

    def unavailable_reason(self):
        return "this version of rnnkernels has no triton backend yet"

    def unsupported_reason(self, device, dtype):
        return self.unavailable_reason()
