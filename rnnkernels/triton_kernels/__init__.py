"""Triton kernels of the triton backend (see rnnkernels/triton_backend.py).

Importing this package imports triton: set TRITON_INTERPRET=1 before that to
run the kernels on CPU tensors with Triton's interpreter (slow; for tests).
"""
