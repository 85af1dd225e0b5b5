"""`python -m rnnkernels charlm`: train the character-level language model (the
main job), and `python -m rnnkernels charlm sample`: generate text from a checkpoint."""

import argparse
import copy
import math
import time
from pathlib import Path

from ..backends import BACKEND_NAMES
from ..cli_support import CommandError, check_device, check_positive, check_writable_folder

DEFAULT_OUT = Path("runs") / "charlm"
CHECKPOINT_NAME = "charlm.pt"

# Sizes when an option is not given: small enough to show learning on a
# 2-core CPU in about 2 minutes, larger on a GPU. One CPU thread: this model's
# per-step matrices are small, so a second thread gains little, while on cores
# that other programs share each thread hand-off can wait a time slice
# (measured: 2 threads 10-20x slower than 1 on a busy 2-core machine).
PRESETS = {
    "cpu": {"embed": 48, "hidden": 128, "layers": 2, "batch": 32, "seq_len": 128, "tbptt": 64,
            "max_steps": 500, "eval_every": 100, "max_chars": 2_000_000, "threads": 1},
    "cuda": {"embed": 128, "hidden": 512, "layers": 2, "batch": 128, "seq_len": 256, "tbptt": 128,
             "max_steps": 2000, "eval_every": 250, "max_chars": 5_000_000, "threads": None},
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those options take the device's preset, named in their help."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _preset(name):
    return f"preset: {PRESETS['cpu'][name]} on cpu, {PRESETS['cuda'][name]} on cuda"


def add_command(commands):
    """Adds `charlm` (training; `charlm sample` generates), see __main__.py."""
    parser = commands.add_parser(
        "charlm", help="train a character-level language model (the main job); `charlm sample` generates",
        description="Train embedding -> LSTM/GRU (rnnkernels) -> linear on characters with truncated BPTT, "
                    "report validation perplexity beside the unigram baseline, save a checkpoint, a "
                    "loss-curve PNG and a sample. Sizes left out take a preset for the device.",
        formatter_class=_HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--text", help="UTF-8 text file to learn (default: this Python's standard library sources)")
    data.add_argument("--max-chars", type=int,
                      help=f"use at most this many characters of the text ({_preset('max_chars')})")
    model = parser.add_argument_group("model")
    model.add_argument("--cell", choices=("lstm", "gru"), default="lstm", help="recurrent layer")
    model.add_argument("--embed", type=int, help=f"embedding width ({_preset('embed')})")
    model.add_argument("--hidden", type=int, help=f"hidden units per layer ({_preset('hidden')})")
    model.add_argument("--layers", type=int, help=f"recurrent layers ({_preset('layers')})")
    model.add_argument("--dropout", type=float, default=0.1, help="between layers and before the output layer")
    run = parser.add_argument_group("training")
    run.add_argument("--batch", type=int, help=f"parallel text streams ({_preset('batch')})")
    run.add_argument("--seq-len", type=int, help="characters per stream per optimizer step (one chunk); the "
                     f"hidden state carries over, detached, from chunk to chunk ({_preset('seq_len')})")
    run.add_argument("--tbptt", type=int, help="inside a chunk, cut the gradient through the hidden state "
                     "every TBPTT steps, in rnnkernels' backward kernel (one call per chunk); 0: backpropagate "
                     f"through the whole chunk ({_preset('tbptt')})")
    run.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    run.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    run.add_argument("--max-steps", type=int, help=f"optimizer steps ({_preset('max_steps')})")
    run.add_argument("--eval-every", type=int,
                     help=f"steps between validation perplexities ({_preset('eval_every')})")
    run.add_argument("--seed", type=int, default=0, help="initial weights, dropout masks, sample")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    run.add_argument("--threads", type=int, help="CPU threads for torch (preset: 1 with --device cpu, "
                     "torch's own choice with cuda)")
    run.add_argument("--backend", default="auto", choices=("auto",) + BACKEND_NAMES,
                     help="rnnkernels backend of the recurrent layers")
    run.add_argument("--init-from", metavar="CHECKPOINT", help="start from a checkpoint's weights "
                     "(same configuration and vocabulary)")
    run.add_argument("--compare", action="store_true",
                     help="also train the same model on torch.nn layers from the same weights and seed, "
                          "and print both losses and characters per second")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the checkpoint and loss curve go")
    run.add_argument("--sample-length", type=int, default=200, help="characters sampled at the end (0: none)")
    parser.set_defaults(run=_train_command)

    actions = parser.add_subparsers(dest="action", title="actions",
                                    description="without an action, charlm trains")
    sample = actions.add_parser(
        "sample", help="generate text from a checkpoint",
        formatter_class=_HelpFormatter,
        description="Feed the prompt, then sample characters one at a time, each fed back as the next input.")
    sample.add_argument("--checkpoint", type=Path, default=DEFAULT_OUT / CHECKPOINT_NAME,
                        help="written by charlm training")
    sample.add_argument("--prompt", default="def ", help="text the sample continues (characters of the corpus)")
    sample.add_argument("--length", type=int, default=400, help="characters to generate")
    sample.add_argument("--temperature", type=float, default=0.8, help="below 1: safer; above 1: wilder")
    sample.add_argument("--seed", type=int, default=0, help="the random draws of the sample")
    sample.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    sample.add_argument("--backend", default="auto", choices=("auto",) + BACKEND_NAMES,
                        help="rnnkernels backend of the recurrent layers")
    sample.add_argument("--torch-nn", action="store_true",
                        help="load the checkpoint into torch.nn layers instead of rnnkernels'")
    sample.set_defaults(run=_sample_command)


def _resolve_presets(args, device):
    preset = PRESETS["cuda" if device.type == "cuda" else "cpu"]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("embed", "hidden", "layers", "batch", "seq_len", "max_steps", "eval_every", "max_chars"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.tbptt < 0:
        raise CommandError(f"--tbptt must be 0 (off) or a positive number of steps, got {args.tbptt}")
    if not 0 <= args.dropout < 1:
        raise CommandError(f"--dropout must be in [0, 1), got {args.dropout}")
    check_positive("--lr", args.lr)
    check_positive("--clip", args.clip)
    if args.sample_length < 0:
        raise CommandError(f"--sample-length must be at least 0, got {args.sample_length}")


def _train_command(args):
    import torch

    from ..convert import to_torch
    from .checkpoint import check_same_configuration, load_into, read_checkpoint
    from .corpus import load_corpus, unigram_loss
    from .model import ModelConfig, build_model
    from .training import TrainSettings, train

    device = check_device(args.device)
    _resolve_presets(args, device)
    if args.threads is not None:
        if args.threads < 1:
            raise CommandError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    check_writable_folder("--out", args.out)
    started = time.perf_counter()
    corpus = load_corpus(args.text, args.max_chars)
    config = ModelConfig(vocab_size=len(corpus.vocab), cell=args.cell, embed=args.embed,
                         hidden=args.hidden, layers=args.layers, dropout=args.dropout)
    tbptt = args.tbptt if 0 < args.tbptt < args.seq_len else None
    settings = TrainSettings(batch=args.batch, seq_len=args.seq_len, tbptt=tbptt, lr=args.lr, clip=args.clip,
                             max_steps=args.max_steps, eval_every=args.eval_every, seed=args.seed)
    init = None
    if args.init_from:
        init = read_checkpoint(args.init_from)
        check_same_configuration(init, args.init_from, config, corpus.vocab)

    torch.manual_seed(args.seed)
    ours = build_model(config, layers="rnnkernels", backend=args.backend, tbptt=tbptt)
    if init is not None:
        load_into(ours, init, args.init_from)
    # --compare: the same model on torch.nn layers, from the same initial weights.
    theirs = to_torch(copy.deepcopy(ours)) if args.compare else None

    baseline = unigram_loss(corpus.train, corpus.valid, config.vocab_size)
    _print_setup(args, corpus, ours, settings, device, baseline)
    histories = [train(ours, corpus, settings, "rnnkernels", device)]
    print(f"rnnkernels ran on backend '{ours.rnn.last_backend}'")
    if theirs is not None:
        histories.append(train(theirs, corpus, settings, "torch.nn", device))
        _print_comparison(*histories)
        if tbptt and config.layers > 2 and config.dropout > 0:
            print("note: torch.nn runs each chunk in tbptt-step pieces, which draw the masks of 2+ inter-layer "
                  "dropouts in another order, so the losses differ by more than rounding (--tbptt 0 avoids it)")
    _finish(args, corpus, ours, histories[0], histories, baseline, started)
    return 0


def _print_setup(args, corpus, model, settings, device, baseline):
    import torch

    from .model import parameter_count

    print(f"corpus: {corpus.description}")
    print(f"  {corpus.train.numel() + corpus.valid.numel():,} characters, vocabulary {len(corpus.vocab)}; "
          f"train {corpus.train.numel():,}, validation {corpus.valid.numel():,} (the last 5%; each "
          f"evaluation reads up to {settings.eval_chars:,} of it)")
    print(f"model: {model.config.describe()}; {parameter_count(model):,} parameters; device {device}, "
          f"backend {args.backend}, {torch.get_num_threads()} CPU thread(s)")
    cut = (f"gradient cut every {settings.tbptt} steps in-kernel (tbptt={settings.tbptt})" if settings.tbptt
           else "full BPTT within a chunk")
    print(f"training: {settings.batch} streams x {settings.seq_len} characters per step, state carried "
          f"between chunks, {cut}; Adam lr {settings.lr}, clip {settings.clip}, {settings.max_steps} steps")
    print(f"unigram baseline (character frequencies): validation perplexity {math.exp(baseline):.2f}")


def _finish(args, corpus, model, history, histories, baseline, started):
    """Checkpoint, loss curve, the result beside the baseline, and a sample."""
    from .checkpoint import save_checkpoint
    from .plot import save_loss_curves
    from .sampling import sample

    path = save_checkpoint(args.out / CHECKPOINT_NAME, model, corpus.vocab, step=len(history.losses),
                           valid_loss=history.final_valid_loss)
    plot = save_loss_curves(args.out / "loss.png", histories, baseline)
    final = history.final_valid_loss
    print(f"\nvalidation perplexity {math.exp(final):.2f} vs unigram baseline {math.exp(baseline):.2f} "
          f"({'learned' if final < baseline else 'NOT below the baseline'}); "
          f"{history.chars_per_second:,.0f} characters/s training; {time.perf_counter() - started:.0f} s in all")
    print(f"checkpoint: {path} (loads into torch.nn too: python -m rnnkernels charlm sample --torch-nn "
          f"--checkpoint {path})")
    print(f"loss curve: {plot}" if plot else "loss curve: skipped (matplotlib is not installed)")
    if args.sample_length > 0:
        prompt = "\n" if "\n" in corpus.vocab else corpus.vocab[0]
        text = sample(model, corpus.vocab, prompt, args.sample_length, seed=args.seed)
        print(f"sample (temperature 0.8):\n{text}")


def _print_comparison(ours, theirs):
    print(f"\n{'step':>6}  {'rnnkernels loss':>15}  {'torch.nn loss':>13}  {'|difference|':>12}")
    for (step, our_loss), (_, their_loss) in zip(ours.evals, theirs.evals, strict=True):
        print(f"{step:>6}  {our_loss:>15.4f}  {their_loss:>13.4f}  {abs(our_loss - their_loss):>12.2e}")
    worst = max(abs(a - b) for a, b in zip(ours.losses, theirs.losses, strict=True))
    print(f"training losses differ by at most {worst:.2e} over {len(ours.losses)} steps")
    print(f"characters/s: rnnkernels {ours.chars_per_second:,.0f}, torch.nn {theirs.chars_per_second:,.0f} "
          f"({ours.chars_per_second / theirs.chars_per_second:.2f}x); wall clock on this machine, not a benchmark")


def _sample_command(args):
    from .checkpoint import load_model
    from .sampling import sample

    device = check_device(args.device)
    if args.length < 0:
        raise CommandError(f"--length must be at least 0, got {args.length}")
    layers = "torch.nn" if args.torch_nn else "rnnkernels"
    model, vocab, _ = load_model(args.checkpoint, layers=layers, backend=args.backend)
    print(sample(model.to(device), vocab, args.prompt, args.length, args.temperature, args.seed))
    return 0
