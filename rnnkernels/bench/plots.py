"""PNG plots: time and ratio to the baseline against H and against B, one
panel per cell (rows) and dtype (columns), a line per implementation, solid
for inference and dashed for a training step.

matplotlib is optional: without it the plots are skipped with a note."""

import collections

from .implementations import BASELINE, all_names
from .suite import ALL_SHAPES, CELLS, DTYPES

SWEEPS = {"H": ("hidden_size", "hidden size H"), "B": ("batch", "batch B")}
MODE_STYLE = {"fwd": "-", "fwd+bwd": "--"}


def _sweep_records(records, sweep):
    return [r for r in records if r["status"] == "ok" and r["shape"] in ALL_SHAPES
            and sweep in ALL_SHAPES[r["shape"]].sweeps]


def _panel_grid(plt, records):
    cells = [cell for cell in CELLS if any(r["cell"] == cell for r in records)]
    dtypes = [dtype for dtype in DTYPES if any(r["dtype"] == dtype for r in records)]
    figure, axes = plt.subplots(len(cells), len(dtypes), squeeze=False,
                                figsize=(4.2 * len(dtypes), 3.2 * len(cells)))
    return figure, {(c, d): axes[i][j] for i, c in enumerate(cells) for j, d in enumerate(dtypes)}


def _plot(plt, records, sweep, metric, base_name, title, path):
    key, label = SWEEPS[sweep]
    figure, panels = _panel_grid(plt, records)
    lines = collections.defaultdict(list)
    for r in records:
        value = r["median_ms"] if metric == "time" else r["ratio_to_baseline"]
        if value is not None and not (metric == "ratio" and r["impl"] == BASELINE):
            lines[(r["cell"], r["dtype"], r["impl"], r["mode"])].append((r[key], value))
    # one colour per implementation in every figure
    colors = {name: f"C{index}" for index, name in enumerate(all_names())}
    sizes = sorted({r[key] for r in records})
    for (cell, dtype, impl, mode), points in sorted(lines.items()):
        color = colors.get(impl, "black")
        axis = panels[(cell, dtype)]
        xs, ys = zip(*sorted(points), strict=True)
        axis.plot(xs, ys, MODE_STYLE[mode], marker="o", color=color, label=f"{impl} {mode}")
    for (cell, dtype), axis in panels.items():
        axis.set_title(f"{cell} {dtype}")
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        axis.set_xlabel(label)
        if metric == "time":
            axis.set_yscale("log")
            axis.set_ylabel("median ms per call (all T steps)")
        else:
            axis.axhline(1.0, color="grey", linewidth=0.8)
            axis.set_ylabel(f"x {base_name} (above 1: faster)")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = {}, {}
    for axis in panels.values():
        for handle, text in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
            labels[text] = text
    figure.legend(list(handles.values()), list(labels), loc="lower center",
                  ncol=min(4, max(1, len(labels))), fontsize="small")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_plots(records, stem_path, base_name, title):
    """(paths written, note on what was not plotted)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed"
    written, missing = [], []
    for sweep in SWEEPS:
        chosen = _sweep_records(records, sweep)
        if len({r[SWEEPS[sweep][0]] for r in chosen}) < 2:
            missing.append(sweep)
            continue
        for metric in ("time", "ratio"):
            path = f"{stem_path}-{metric}-vs-{sweep}.png"
            _plot(plt, chosen, sweep, metric, base_name, f"{title}: {metric} against {sweep}", path)
            written.append(path)
    note = f"no plot against {' or '.join(missing)}: fewer than two sizes measured" if missing else ""
    return written, note
