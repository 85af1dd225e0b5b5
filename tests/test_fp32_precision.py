"""float32 recurrences follow torch.nn's RNN precision on the C++ side too
(issue 11's leftover): csrc/fp32_precision.h is the rule the cuda backend's
glue reads (the persistent kernels' tf32 or IEEE engine) and the guard its
step path holds around its ATen GEMMs. Both are reached here through the
extension's probe ops, on CPU: the rule must equal precision.py's Python rule
under every setting, and the guard must put the matmul setting on the RNN's
for the op's duration and give the caller's back unchanged."""

import itertools

import pytest
import torch
from packaging.version import Version

from rnnkernels import cpu_backend
from rnnkernels.triton_kernels.precision import rnn_fp32_precision

pytestmark = pytest.mark.skipif(cpu_backend.load_extension()[0] is None,
                                reason=f"rnnkernels._C: {cpu_backend.load_extension()[1]}")

# torch 2.13's C++ API resolves the RNN level; older torch's glue reads the
# legacy cudnn switch only (fp32_precision.h).
ENUM_API = Version(Version(torch.__version__).base_version) >= Version("2.13")
LEVELS = ("tf32", "ieee", "none")


# Every level a test here may change, parents first: setting a parent can
# reset its children, so they are restored after it.
_LEVELS = (torch.backends, torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn,
           torch.backends.cuda.matmul) if ENUM_API else ()


@pytest.fixture
def restore_settings():
    cudnn = torch.backends.cudnn
    if ENUM_API:
        saved = [level.fp32_precision for level in _LEVELS]
    else:
        saved = cudnn.allow_tf32
    yield
    if ENUM_API:
        for level, value in zip(_LEVELS, saved):
            level.fp32_precision = value
    else:
        cudnn.allow_tf32 = saved


def _ops():
    return torch.ops.rnnkernels


@pytest.mark.skipif(not ENUM_API, reason="the RNN level of fp32_precision is read in C++ from torch 2.13 on")
@pytest.mark.parametrize("rnn, cudnn, generic", list(itertools.product(LEVELS, repeat=3)),
                         ids=lambda v: v)
def test_cpp_rule_equals_python_rule(rnn, cudnn, generic, restore_settings):
    torch.backends.cudnn.rnn.fp32_precision = rnn
    torch.backends.cudnn.fp32_precision = cudnn
    torch.backends.fp32_precision = generic
    assert _ops().rnn_fp32_precision() == rnn_fp32_precision(), (rnn, cudnn, generic)


@pytest.mark.parametrize("allow", [True, False], ids=["allow_tf32", "no_tf32"])
def test_cpp_rule_follows_the_legacy_cudnn_switch(allow, restore_settings):
    if ENUM_API:  # the new API's levels left at 'none' defer to the legacy switch
        torch.backends.cudnn.rnn.fp32_precision = "none"
        torch.backends.cudnn.fp32_precision = "none"
        torch.backends.fp32_precision = "none"
    torch.backends.cudnn.allow_tf32 = allow
    assert _ops().rnn_fp32_precision() == rnn_fp32_precision() == ("tf32" if allow else "ieee")


@pytest.mark.parametrize("rnn", ["tf32", "ieee"])
@pytest.mark.parametrize("matmul", ["tf32", "ieee", "none"])
def test_step_gemm_guard_follows_the_rnn_rule_and_restores(rnn, matmul, restore_settings):
    if ENUM_API:
        torch.backends.cudnn.rnn.fp32_precision = rnn
        torch.backends.cuda.matmul.fp32_precision = matmul
    else:
        if matmul == "none":
            pytest.skip("'none' is a level of torch 2.13's fp32_precision API")
        torch.backends.cudnn.allow_tf32 = rnn == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
    assert _ops()._matmul_tf32_under_rnn_precision() == (rnn == "tf32")
    if ENUM_API:
        assert torch.backends.cuda.matmul.fp32_precision == matmul
    else:
        assert torch.backends.cuda.matmul.allow_tf32 == (matmul == "tf32")
