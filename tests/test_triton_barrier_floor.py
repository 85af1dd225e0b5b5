"""The Triton grid barrier's own floor (an empty persistent loop of barriers),
beside the CUDA one (tests/test_cuda_backend.py): measured on a GPU only."""

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from rnnkernels.triton_backend import measure_triton_barrier_floor  # noqa: E402

GPU = torch.cuda.is_available()


@pytest.mark.skipif(GPU, reason="checks the refusal where no GPU exists")
def test_needs_a_gpu():
    with pytest.raises(RuntimeError, match="measure_triton_barrier_floor needs a CUDA GPU"):
        measure_triton_barrier_floor(10)


@pytest.mark.skipif(not GPU, reason="GPU only: a cooperative launch of one program per SM (scripts/gpu_run.sh)")
def test_floor_is_measured_on_every_sm_and_on_few():
    per_sm = measure_triton_barrier_floor(200)
    few = measure_triton_barrier_floor(200, programs=2)
    assert 0 < per_sm < 100, f"{per_sm} us per barrier on every SM"
    assert 0 < few < 100, f"{few} us per barrier on 2 programs"
