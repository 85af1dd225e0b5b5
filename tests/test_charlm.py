"""The main job, `python -m rnnkernels charlm`, on tiny models: the loss falls and
validation beats the unigram baseline, torch.nn trains identically, checkpoints
go through torch.nn and back, sampling, and every bad input ends in one line."""

import io
import sys

import pytest
import torch
from torch import nn

import rnnkernels
from rnnkernels.__main__ import main
from rnnkernels.charlm.checkpoint import load_model, save_checkpoint
from rnnkernels.charlm.corpus import default_text, load_corpus, unigram_loss
from rnnkernels.charlm.model import ModelConfig, build_model
from rnnkernels.charlm.plot import save_loss_curves
from rnnkernels.charlm.progress import Progress
from rnnkernels.charlm.sampling import sample
from rnnkernels.charlm.training import History, TrainSettings, train
from rnnkernels.convert import to_torch

TINY = ["--embed", "8", "--hidden", "24", "--layers", "2", "--batch", "4", "--seq-len", "24",
        "--tbptt", "8", "--lr", "0.01", "--eval-every", "20"]


def _toy_text():
    """Short words in a fixed rhythm: far more predictable than character frequencies."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(len(words), (1600,), generator=generator).tolist()
    return " ".join(words[i] for i in picks) + ".\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models spend their time in thread hand-offs, not arithmetic: one thread
    is faster, and immune to other processes holding the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "toy.txt"
    path.write_text(_toy_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(text_file, tmp_path_factory):
    """One short run of the command; its output directory and printed report."""
    out = tmp_path_factory.mktemp("run")
    capture = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", capture)
        code = main(["charlm", "--text", str(text_file), *TINY, "--max-steps", "60",
                     "--out", str(out), "--sample-length", "30"])
    assert code == 0, capture.getvalue()
    return out, capture.getvalue()


def test_training_loss_falls_below_the_unigram_baseline(text_file):
    corpus = load_corpus(text_file)
    torch.manual_seed(0)
    model = build_model(ModelConfig(len(corpus.vocab), embed=8, hidden=24, layers=2), tbptt=8)
    settings = TrainSettings(batch=4, seq_len=24, tbptt=8, lr=0.01, max_steps=60, eval_every=30)
    history = train(model, corpus, settings, "rnnkernels", "cpu")
    first, last = history.losses[0], sum(history.losses[-10:]) / 10
    assert last < first - 0.8, f"training loss {first:.3f} -> {last:.3f}"
    baseline = unigram_loss(corpus.train, corpus.valid, len(corpus.vocab))
    assert history.final_valid_loss < baseline - 0.2, (history.final_valid_loss, baseline)
    assert model.rnn.last_backend in rnnkernels.available_backends()


def test_torch_nn_layers_train_identically_with_chunked_detach(text_file):
    """In-kernel tbptt=8 on 24-step chunks == torch.nn on 8-step pieces with detach."""
    corpus = load_corpus(text_file)
    torch.manual_seed(0)
    ours = build_model(ModelConfig(len(corpus.vocab), embed=8, hidden=16, layers=2, dropout=0.2), tbptt=8)
    theirs = to_torch(build_model(ours.config))
    theirs.load_state_dict(ours.state_dict())
    assert type(theirs.rnn) is nn.LSTM
    settings = TrainSettings(batch=4, seq_len=24, tbptt=8, max_steps=12, eval_every=6)
    our_losses = train(ours, corpus, settings, "rnnkernels", "cpu").losses
    their_losses = train(theirs, corpus, settings, "torch.nn", "cpu").losses
    torch.testing.assert_close(our_losses, their_losses, rtol=0, atol=1e-4)


def test_command_reports_perplexity_beside_unigram_and_writes_outputs(trained):
    out, report = trained
    assert "unigram baseline" in report and "validation perplexity" in report
    assert "(learned)" in report, report
    assert (out / "charlm.pt").is_file()
    pytest.importorskip("matplotlib")
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_round_trip_through_torch_nn(trained, tmp_path):
    path = trained[0] / "charlm.pt"
    ours, vocab, _ = load_model(path, layers="rnnkernels")
    theirs, same_vocab, _ = load_model(path, layers="torch.nn")
    assert same_vocab == vocab and type(theirs.rnn) is nn.LSTM and type(ours.rnn) is rnnkernels.LSTM
    tokens = torch.randint(len(vocab), (10, 3))
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(tokens)[0], theirs(tokens)[0])

    with torch.no_grad():  # a change made on the torch.nn side must come back
        theirs.rnn.weight_hh_l1.mul_(0.5)
    back_path = save_checkpoint(tmp_path / "from-torch.pt", theirs, vocab)
    back, _, _ = load_model(back_path, layers="rnnkernels")
    torch.testing.assert_close(back.eval()(tokens)[0], theirs(tokens)[0])
    plain = nn.LSTM(8, 24, 2)  # the state_dict is plain torch.nn's
    plain.load_state_dict({k[len("rnn."):]: v for k, v in theirs.state_dict().items() if k.startswith("rnn.")})


def test_sampling_feeds_back_characters_and_matches_on_torch_nn(trained, capsys):
    path = trained[0] / "charlm.pt"
    model, vocab, _ = load_model(path)
    text = sample(model, vocab, "the ", 40, temperature=0.5, seed=3)
    assert text.startswith("the ") and len(text) == 44 and set(text) <= set(vocab)
    assert sample(model, vocab, "the ", 40, temperature=0.5, seed=3) == text
    assert main(["charlm", "sample", "--checkpoint", str(path), "--prompt", "the ", "--length", "40",
                 "--temperature", "0.5", "--seed", "3", "--torch-nn"]) == 0
    assert capsys.readouterr().out.strip() == text


def test_loss_curve_is_skipped_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a machine without it
    history = History("rnnkernels", losses=[2.0, 1.5], evals=[(2, 1.6)])
    assert save_loss_curves(tmp_path / "loss.png", [history], 3.0) is None
    assert not (tmp_path / "loss.png").exists()


def test_default_corpus_is_this_pythons_standard_library():
    text, description = default_text(50_000)
    assert len(text) == 50_000 and "standard library" in description
    assert "def " in text and "import " in text


def test_progress_writes_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(3, label="step ", stream=stream, plain_interval_s=0)
    for done in range(1, 4):
        progress.update(done, "loss 1.000")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 3 and lines[-1].startswith("step 3/3 loss 1.000")


def _bad_input_cases(text_file, trained_dir, tmp):
    empty = tmp / "empty.txt"
    empty.write_text("  \n")
    binary = tmp / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    junk = tmp / "junk.pt"
    junk.write_text("this is not a checkpoint\n" * 10)
    checkpoint = str(trained_dir / "charlm.pt")
    tiny = [*TINY, "--max-steps", "1", "--out", str(tmp / "out")]
    return {
        "missing text": (["charlm", "--text", str(tmp / "nope.txt"), *tiny], "no such file"),
        "empty text": (["charlm", "--text", str(empty), *tiny], "empty"),
        "binary text": (["charlm", "--text", str(binary), *tiny], "binary"),
        "prompt outside vocabulary": (["charlm", "sample", "--checkpoint", checkpoint, "--prompt", "XYZ€"],
                                      "outside the model's vocabulary"),
        "checkpoint of another configuration": (
            ["charlm", "--text", str(text_file), *tiny, "--hidden", "32", "--init-from", checkpoint],
            "another configuration: hidden 24 (this run: 32)"),
        "checkpoint with another vocabulary": (
            ["charlm", *tiny, "--max-chars", "20000", "--init-from", checkpoint], "another vocabulary"),
        "not a checkpoint": (["charlm", "sample", "--checkpoint", str(junk)], "not a torch checkpoint"),
        "missing checkpoint": (["charlm", "sample", "--checkpoint", str(tmp / "none.pt")], "no such file"),
        "bad device": (["charlm", "--device", "banana", *tiny], "not a device torch knows"),
        "bad temperature": (["charlm", "sample", "--checkpoint", checkpoint, "--temperature", "0"],
                            "must be positive"),
        "negative clip": (["charlm", "--text", str(text_file), *tiny, "--clip", "-1"],
                          "--clip must be a finite number above 0, got -1.0"),
        "zero clip": (["charlm", "--text", str(text_file), *tiny, "--clip", "0"], "--clip must be a finite number"),
        "nan lr": (["charlm", "--text", str(text_file), *tiny, "--lr", "nan"], "--lr must be a finite number"),
        "negative lr": (["charlm", "--text", str(text_file), *tiny, "--lr", "-1"], "--lr must be a finite number"),
        "infinite lr": (["charlm", "--text", str(text_file), *tiny, "--lr", "inf"], "--lr must be a finite number"),
        "zero steps": (["charlm", "--text", str(text_file), *tiny, "--max-steps", "0"],
                       "--max-steps must be at least 1"),
        "zero batch": (["charlm", "--text", str(text_file), *tiny, "--batch", "0"], "--batch must be at least 1"),
        "zero seq-len": (["charlm", "--text", str(text_file), *tiny, "--seq-len", "0"],
                         "--seq-len must be at least 1"),
        "zero hidden": (["charlm", "--text", str(text_file), *tiny, "--hidden", "0"], "--hidden must be at least 1"),
        "out is a file": (["charlm", "--text", str(text_file), *tiny, "--out", str(junk)], "is a file, not a folder"),
        "out cannot be created": (["charlm", "--text", str(text_file), *tiny, "--out", str(junk / "sub")],
                                  "cannot be written"),
        "demo zero steps": (["demo", "--steps", "0"], "--steps must be at least 1"),
    }


BAD_INPUTS = ["missing text", "empty text", "binary text", "prompt outside vocabulary",
              "checkpoint of another configuration", "checkpoint with another vocabulary",
              "not a checkpoint", "missing checkpoint", "bad device", "bad temperature", "negative clip",
              "zero clip", "nan lr", "negative lr", "infinite lr", "zero steps", "zero batch", "zero seq-len",
              "zero hidden", "out is a file", "out cannot be created", "demo zero steps"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_error(case, text_file, trained, tmp_path, capsys):
    argv, message = _bad_input_cases(text_file, trained[0], tmp_path)[case]
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
