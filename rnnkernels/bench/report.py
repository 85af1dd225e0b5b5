"""What a run shows and leaves besides its JSON: the header, the table, the
skip and summary lines (printed and written to <stem>.txt), and the plots.
Also renders an earlier run's JSON again (`--from-json`)."""

from . import plots, table


def header(meta):
    versions = f"torch {meta['torch']}, triton {meta['triton']}"
    if meta["device_type"] == "cuda":
        versions += f", CUDA {meta['cuda']}, cuDNN {meta['cudnn']}"
    dirty = " (uncommitted changes)" if meta.get("commit_dirty") else ""
    lines = [f"rnnkernels bench ({meta.get('suite')} suite, {meta.get('cases')} cases) on {meta['device']}, "
             f"{meta['date']}, commit {meta['commit']}{dirty}",
             f"{versions}; {meta['cpu_threads']} CPU threads; baseline: {meta['baseline']}",
             f"implementations: {', '.join(meta.get('implementations', []))}; timing: {meta['timing']}"]
    if meta.get("gemm_gflops"):
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in meta["gemm_gflops"].items())
        lines.append(f"floor: every FLOP at the GEMM rate measured now (GFLOP/s: {rates})")
    paths = meta.get("cpu_backend")
    if paths:
        sixteen = (f", 16-bit projection bf16 {paths['gemm_bf16']}, fp16 {paths['gemm_fp16']}"
                   if "gemm_bf16" in paths else "")  # absent in results from before 16-bit GEMMs
        lines.append(f"cpu backend: ISA {paths['isa']} (CPU supports {paths['isas']}; flags "
                     f"{' '.join(meta.get('cpu_flags') or [])}), GEMM fp32 {paths['gemm_fp32']}, "
                     f"fp64 {paths['gemm_fp64']}{sixteen}")
    if meta.get("note"):
        lines.append(f"note: {meta['note']}")
    return "\n".join(lines)


def write_report(meta, records, stem, with_plots):
    """Prints the table and writes <stem>.txt and the plots; returns the
    paths written. Records a note in `meta` when plots were not made."""
    base_name = meta.get("baseline_short", "torch.nn")
    report = [header(meta), "", table.format_table(records, base_name)]
    for extra in (table.format_skips(records), table.format_summary(records, base_name)):
        if extra:
            report += ["", extra]
    if meta.get("stopped_early"):
        report += ["", f"stopped early (time budget or interrupt): {meta['jobs_not_run']} job(s) not run"]
    print("\n" + "\n".join(report[1:]))
    with open(f"{stem}.txt", "w") as out:
        out.write("\n".join(report) + "\n")
    written = [f"{stem}.txt"]
    if with_plots:
        paths, note = plots.write_plots(records, stem, base_name, f"{meta['device']}, {meta['date'][:10]}")
        written += paths
        if note:
            print(note)
            meta["plots_note"] = note
    return written
