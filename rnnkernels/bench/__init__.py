"""`python -m rnnkernels bench`: every rnnkernels backend against torch.nn
(cuDNN on CUDA, torch's native CPU path on CPU) on the same inputs, in the
same run.

    suite.py            the shapes, cells, dtypes and modes; filters
    workload.py         one case's modules, inputs and the step that is timed
    implementations.py  what is compared: torch.nn, each backend, torch.compile
    correctness.py      each output checked against torch.nn before timing
    timing.py           CUDA events / perf_counter, percentiles, peak memory
    flops.py            FLOP formulas behind TFLOP/s
    runner.py           the loop over cases, with a time budget
    results.py          JSON records and run metadata
    table.py, plots.py, progress.py   what the user sees
    cli.py              the command line
"""
