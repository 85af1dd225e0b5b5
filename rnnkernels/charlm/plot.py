"""The loss-curve PNG. matplotlib is optional (GPU images often lack it): without
it the plot is skipped with a note, and training is unaffected."""

import math


def save_loss_curves(path, histories, unigram_loss):
    """Training loss (smoothed) and validation loss per step for each History,
    with the unigram baseline; returns the path, or None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for history in histories:
        steps = range(1, len(history.losses) + 1)
        line, = axes.plot(steps, _smoothed(history.losses), linewidth=1, label=f"{history.label} train")
        if history.evals:
            eval_steps, eval_losses = zip(*history.evals, strict=True)
            axes.plot(eval_steps, eval_losses, "o--", color=line.get_color(), label=f"{history.label} valid")
    axes.axhline(unigram_loss, color="gray", linestyle=":",
                 label=f"unigram baseline (perplexity {math.exp(unigram_loss):.1f})")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy (nats per character)")
    axes.set_title("rnnkernels charlm")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _smoothed(values, weight=0.9):
    """Exponential moving average, bias-corrected so the first points are not pulled to 0."""
    smoothed, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight ** count))
    return smoothed
