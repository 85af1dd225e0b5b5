"""The terminal table, led by the ratio to the baseline (cuDNN on a GPU):
above 1 means faster than the baseline; then the fraction of the floor (CPU:
every FLOP at the GEMM rate measured in the run, floor.py). Wrong and failed results are shown as
such, never with a time. Skipped implementations are summarised once below
the table, with their reasons, rather than on every row."""

import collections
import math

from .implementations import BASELINE

_COLUMNS = (  # (heading, width, right-aligned)
    ("x {base}", 9, True), ("floor", 5, True), ("impl", 18, False), ("cell", 4, False), ("dtype", 5, False),
    ("mode", 7, False), ("shape", 12, False), ("T", 5, True), ("B", 4, True), ("I", 5, True),
    ("H", 5, True), ("extra", 15, False), ("median ms", 10, True), ("p20-p80 ms", 17, True),
    ("us/step", 9, True), ("TFLOP/s", 8, True), ("peak MiB", 9, True),
)


def _row(cells):
    out = []
    for (_, width, right), cell in zip(_COLUMNS, cells, strict=True):
        out.append(str(cell).rjust(width) if right else str(cell).ljust(width))
    return " ".join(out).rstrip()


def _extra(record):
    parts = [f"L{record['layers']}"] if record["layers"] > 1 else []
    parts += ["bidir"] if record["bidirectional"] else []
    parts += ["packed"] if record["packed"] else []
    parts += [f"P{record['proj_size']}"] if record["proj_size"] else []
    return " ".join(parts)


def _number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def _significant(value):
    return "-" if value is None else f"{value:.3g}"


def _lead(record):
    if record["status"] == "ok":
        ratio = record["ratio_to_baseline"]
        return "-" if ratio is None else f"{ratio:.2f}x"
    return record["status"].upper()


def format_table(records, base_name):
    header = [heading.format(base=base_name) for heading, _, _ in _COLUMNS]
    lines = [_row(header), "-" * len(_row(header))]
    shown = [r for r in records if r["status"] != "skipped"]
    previous_case = None
    for r in shown:
        case = (r["shape"], r["cell"], r["dtype"], r["mode"])
        if previous_case is not None and case[:3] != previous_case[:3]:
            lines.append("")
        previous_case = case
        peak = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2**20
        spread = "-" if r["p20_ms"] is None else f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f}"
        lines.append(_row([
            _lead(r), _number(r.get("floor_fraction"), 2), r["impl"], r["cell"], r["dtype"], r["mode"], r["shape"], r["seq_len"],
            r["batch"], r["input_size"], r["hidden_size"], _extra(r), _number(r["median_ms"], 3),
            spread, _number(r["us_per_step"], 1), _significant(r["tflops"]), _number(peak, 1)]))
        if r["status"] in ("wrong", "error") or (r["reason"] and r["status"] == "ok"):
            lines.append(f"{'':>9} {r['reason']}")
    return "\n".join(lines)


def format_skips(records):
    """One line per (implementation, reason): how many records it covers."""
    counts = collections.Counter((r["impl"], r["reason"]) for r in records if r["status"] == "skipped")
    return "\n".join(f"skipped {impl} in {count} case(s): {reason}"
                     for (impl, reason), count in sorted(counts.items()))


def format_summary(records, base_name):
    """Geometric mean of the ratio per implementation, dtype and mode."""
    ratios = collections.defaultdict(list)
    for r in records:
        if r["impl"] != BASELINE and r["ratio_to_baseline"]:
            ratios[(r["impl"], r["dtype"], r["mode"])].append(r["ratio_to_baseline"])
    if not ratios:
        return ""
    lines = [f"geometric mean of the ratio to {base_name} (above 1 is faster):",
             f"{'impl':<18} {'dtype':<5} {'mode':<7} {'ratio':>7} {'cases':>5}"]
    for (impl, dtype, mode), values in sorted(ratios.items()):
        mean = math.exp(sum(math.log(v) for v in values) / len(values))
        lines.append(f"{impl:<18} {dtype:<5} {mode:<7} {mean:>6.2f}x {len(values):>5}")
    return "\n".join(lines)
