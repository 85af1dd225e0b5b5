"""scripts/gpu_run.sh end to end on a CPU machine, every GPU stage replaced by
a stand-in (GPU_RUN_DRY=1): both calls run their stages in order, within
their budget, say what they skip, and leave summary.txt and the packed logs."""

import os
import shutil
import subprocess
import tarfile

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "gpu_run.sh")
CALL1_STAGES = ["versions", "triton-cache", "build", "backends", "gpu-tests", "sanitizer-racecheck",
                "sanitizer-synccheck", "barrier-floor", "headline"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _run(out, call, budget, **env):
    done = subprocess.run(["bash", SCRIPT, str(out), call, str(budget)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GPU_RUN_DRY": "1", **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return (out / "summary.txt").read_text()


def test_call1_runs_every_stage_in_order(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    summary = _run(tmp_path / "out", "call1", 400, TRITON_CACHE_DIR=str(cache))
    ran = [line.split()[1].rstrip(":") for line in summary.splitlines() if line.startswith("step ")]
    assert ran == CALL1_STAGES, summary
    assert "skipped" not in summary, summary
    with tarfile.open(tmp_path / "out" / "logs-call1.tar.gz") as logs:
        names = {os.path.basename(n) for n in logs.getnames()}
    assert {f"{stage}.log" for stage in CALL1_STAGES} <= names, names
    headline = (tmp_path / "out" / "summary.txt").read_text()
    assert "gpu_run.sh call1" in headline


def test_call1_says_what_it_skips(tmp_path):
    summary = _run(tmp_path / "out", "call1", 60, TRITON_CACHE_DIR="")
    assert "step triton-cache: skipped, TRITON_CACHE_DIR is not a folder" in summary, summary
    assert "step headline: skipped" in summary, summary


def test_call2_makes_the_table_checks_auto_and_runs_the_suite(tmp_path):
    summary = _run(tmp_path / "out", "call2", 330)
    ran = [line.split()[1].rstrip(":") for line in summary.splitlines() if line.startswith("step ")]
    assert ran == ["handoff-table", "auto", "bench"], summary
    with tarfile.open(tmp_path / "out" / "logs-call2.tar.gz") as logs:
        commands = {os.path.basename(n): logs.extractfile(n).read().decode() for n in logs.getnames()
                    if n.endswith(".log")}
    assert "RNNKERNELS_HANDOFF_TABLES=" in commands["auto.log"] and "--impl torch,auto" in commands["auto.log"]


def test_headline_forces_each_kernel_path_and_names_real_implementations(tmp_path):
    """The headline's --impl list is one the bench accepts: every 'backend:path' exists."""
    from rnnkernels.bench import implementations

    text = open(SCRIPT).read()
    paths = text.split("HEADLINE_PATHS=", 1)[1].split()[0].split(",")
    assert set(paths) - {"torch"} <= set(implementations.all_names()), paths
    assert {"triton:persistent", "triton:step-graph", "cuda:persistent", "cuda:step"} <= set(paths)


def test_unknown_call_is_refused(tmp_path):
    done = subprocess.run(["bash", SCRIPT, str(tmp_path), "call3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "call1 or call2" in done.stderr
