#!/usr/bin/env bash
# Creates .venv (seeing the system's packages, so a GPU machine's CUDA torch is
# used as is), installs torch if it is missing - the CPU build on a machine
# without an NVIDIA GPU, never the multi-GB CUDA build there - then the test
# tools, then rnnkernels itself with its C++ extension built in place.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
# Installed only where triton is missing (a GPU machine keeps its own). Pinned:
# tests/threaded_grid.py leans on this version's interpreter internals, and an
# unpinned install would move CI to an interpreter whose internals differ.
TRITON_VERSION=3.9.0
PYTHON=${PYTHON:-python3}
VENV=.venv

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --quiet)

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION"
    # A local torch wheel (pip's configured find-links) comes first, and its
    # dependencies from the configured indexes. Failing that: PyPI where an
    # NVIDIA GPU can use the CUDA build, PyTorch's CPU index everywhere else.
    if "${PIP[@]}" --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
        "${PIP[@]}" "torch==$TORCH_VERSION"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        "${PIP[@]}" "torch==$TORCH_VERSION"
    else
        "${PIP[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"$PY" - <<'PYEOF'
import shutil, torch
print(f"setup: torch {torch.__version__} (CUDA {torch.version.cuda})")
if torch.version.cuda and shutil.which("nvidia-smi") is None:
    print("setup: note: this torch is a CUDA build on a machine without nvidia-smi")
PYEOF

missing=()
# triton: the triton backend (under TRITON_INTERPRET=1 on a CPU machine);
# matplotlib: the plots of the benchmark suite and of the char-LM job.
for module in pytest hypothesis triton matplotlib; do
    requirement=$module
    [ "$module" = triton ] && requirement="triton==$TRITON_VERSION"
    "$PY" -c "import $module" 2>/dev/null || missing+=("$requirement")
done
command -v ninja >/dev/null 2>&1 || "$PY" -c "import ninja" 2>/dev/null || missing+=(ninja)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # A machine without a package index (a lent GPU box) may lack one of them:
    # the build then runs without ninja, plots are skipped with a message, and
    # tests needing the tool say so.
    "${PIP[@]}" --retries 1 --timeout 15 "${missing[@]}" || echo "setup: WARNING: could not install ${missing[*]}"
fi

# --no-build-isolation: build against the torch above instead of letting pip
# fetch another one into an isolated build environment. --no-deps: torch is
# already satisfied and nothing else may be pulled in behind our back.
echo "setup: building rnnkernels (C++ extension; about a minute on 2 cores)"
PATH="$VENV/bin:$PATH" "${PIP[@]}" --no-build-isolation --no-deps -e .
"$PY" -m rnnkernels backends
