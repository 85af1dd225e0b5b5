#!/usr/bin/env bash
# One call on a GPU machine: build the extension, run the tests (GPU ones
# included), measure the grid-barrier floor if the cuda backend offers it, and
# run the full benchmark suite; logs, JSON, table and plots go into OUT_DIR.
#
#   bash scripts/gpu_run.sh OUT_DIR [TOTAL_SECONDS]      (TOTAL_SECONDS default 560)
#
# Every step runs under `timeout` inside TOTAL_SECONDS, and the suite gets a
# --time-budget of what is left, so the whole call ends inside a 10-minute
# limit and still writes its JSON. A failing step is logged and the next one
# runs. On this workplace's device tool (at most 8 files come back from $OUT):
#
#   run(command="RNNKERNELS_COMMIT=<short sha> bash scripts/gpu_run.sh $OUT", timeout_s=600)
#
# Files in OUT_DIR: the suite's <date>-<device>-<commit>.json and .txt, its
# PNGs (when matplotlib is there), summary.txt (what each step did), and
# logs.tar.gz (nvidia-smi, versions, build, pytest, barrier floor, the suite's
# full output); GPU_RUN_KEEP_LOGS=1 also keeps the logs/ folder unpacked.
#
# Environment: PYTHON (default python3), BUILD_CAP_S (300), TEST_CAP_S (150),
# BARRIER_CAP_S (45), PYTEST_ARGS (extra pytest arguments), BENCH_ARGS (extra
# bench arguments, e.g. "--shape fastrnns,long"), RNNKERNELS_COMMIT (the
# commit to name results after when the tree has no .git).
# Never touches the GPU's clocks, power or modes.

set -u -o pipefail

OUT_DIR=${1:?usage: bash scripts/gpu_run.sh OUT_DIR [TOTAL_SECONDS]}
TOTAL_S=${2:-560}
PYTHON=${PYTHON:-python3}
BUILD_CAP_S=${BUILD_CAP_S:-300}
TEST_CAP_S=${TEST_CAP_S:-150}
BARRIER_CAP_S=${BARRIER_CAP_S:-45}
FINISH_RESERVE_S=20  # packing the logs and printing the summary

cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOGS="$OUT_DIR/logs"
mkdir -p "$LOGS"
SUMMARY="$OUT_DIR/summary.txt"
: >"$SUMMARY"
START=$(date +%s)
export PYTHONUNBUFFERED=1
export RNNKERNELS_COMMIT=${RNNKERNELS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

seconds_left() { echo $((TOTAL_S - ($(date +%s) - START) - FINISH_RESERVE_S)); }

note() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME CAP_SECONDS COMMAND...: output to logs/NAME.log, its status to summary.txt
run_step() {
    local name=$1 cap=$2 left began status
    shift 2
    left=$(seconds_left)
    if ((left < cap)); then cap=$left; fi
    if ((cap < 5)); then
        note "step $name: not run, no time left"
        return 1
    fi
    began=$(date +%s)
    echo "=== $name (limit ${cap}s): $*"
    timeout --kill-after=10 "$cap" "$@" >"$LOGS/$name.log" 2>&1
    status=$?
    if ((status == 124 || status == 137)); then
        note "step $name: stopped at its limit of ${cap}s (exit $status); see logs/$name.log"
    else
        note "step $name: exit $status in $(($(date +%s) - began))s"
    fi
    tail -n 15 "$LOGS/$name.log"
    return $status
}

note "gpu_run.sh on $(hostname) at $(date -u +%FT%TZ), commit $RNNKERNELS_COMMIT, budget ${TOTAL_S}s"

# Read-only queries of the card and the software.
run_step nvidia-smi 30 bash -c 'nvidia-smi; nvidia-smi -q -d CLOCK,POWER,PERFORMANCE,MEMORY'
run_step versions 60 bash -c "uname -a; nvcc --version; $PYTHON - <<'EOF'
import platform, torch
print('python', platform.python_version())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')
for name in ('triton', 'matplotlib', 'pytest', 'hypothesis', 'xdist'):
    try:
        module = __import__(name)
        print(name, getattr(module, '__version__', 'present'))
    except ImportError:
        print(name, 'missing')
EOF"

# The build compiles the CUDA kernels against the torch already installed;
# there is no network, so no dependency may be fetched.
MAX_JOBS=${MAX_JOBS:-16} run_step build "$BUILD_CAP_S" \
    "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -v -e .
run_step backends 60 "$PYTHON" -m rnnkernels backends

# The default test suite: the GPU tests run where a GPU is present; the rest
# guard against a build that broke the CPU paths. xdist spreads it over cores.
PARALLEL=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 8); fi
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
run_step tests "$TEST_CAP_S" env RNNKERNELS_REQUIRE_CPU_BACKEND=1 "$PYTHON" -m pytest -q -rs "${PARALLEL[@]}" -p no:cacheprovider \
    --junitxml="$LOGS/pytest.xml" ${PYTEST_ARGS:-}

# The per-step floor of an empty grid-barrier loop (microseconds per barrier),
# if the cuda backend offers it; two loop lengths, to see that it is stable.
run_step barrier-floor "$BARRIER_CAP_S" "$PYTHON" - <<EOF
import json
import torch
import rnnkernels.cuda_backend as cuda_backend
measure = getattr(cuda_backend, "measure_barrier_floor", None)
if measure is None:
    print("rnnkernels.cuda_backend has no measure_barrier_floor: nothing measured")
    raise SystemExit(0)
floors = {}
for steps in (1000, 4000):
    try:
        floors[steps] = measure(steps)
        print(f"barrier floor, {steps} steps: {floors[steps]} us per barrier")
    except (RuntimeError, TypeError) as error:
        floors[steps] = f"failed: {error}"
        print(f"barrier floor, {steps} steps: {floors[steps]}")
device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
with open("$LOGS/barrier_floor.json", "w") as out:
    json.dump({"device": device, "us_per_barrier_by_steps": floors}, out, indent=1, default=repr)
EOF

grep -h "barrier floor" "$LOGS/barrier-floor.log" 2>/dev/null | tee -a "$SUMMARY"

# The suite stops starting cases when its budget is spent, then writes the
# table, JSON and plots; the hard limit above it is a last resort.
# 40 s stay back: 10 for the hard limit's grace, 30 to render the report again
BENCH_BUDGET=$(($(seconds_left) - 40))
if ((BENCH_BUDGET >= 30)); then
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
    run_step bench $((BENCH_BUDGET + 10)) "$PYTHON" -m rnnkernels bench --device cuda \
        --time-budget "$BENCH_BUDGET" --out "$OUT_DIR" ${BENCH_ARGS:-}
    status=$?
    # Stopped at the hard limit (a long torch.compile, say): the JSON holds every
    # case finished; render its table and plots again from it.
    latest_json=$(ls -t "$OUT_DIR"/*.json 2>/dev/null | head -n 1)
    if ((status == 124 || status == 137)) && [[ -n $latest_json ]]; then
        run_step render 30 "$PYTHON" -m rnnkernels bench --from-json "$latest_json"
    fi
else
    note "step bench: not run, ${BENCH_BUDGET}s left"
fi

if [[ ${GPU_RUN_KEEP_LOGS:-0} == 1 ]]; then
    tar czf "$OUT_DIR/logs.tar.gz" -C "$OUT_DIR" logs
else
    tar czf "$OUT_DIR/logs.tar.gz" -C "$OUT_DIR" logs && rm -rf "$LOGS"
fi
note "finished in $(($(date +%s) - START))s; files in $OUT_DIR:"
ls -la "$OUT_DIR" | tee -a "$SUMMARY"
# Last, for a reader who sees only the end of the output: the suite's table.
for table in "$OUT_DIR"/*.txt; do
    [[ $table == "$SUMMARY" ]] || { echo; echo "=== $table"; tail -n 60 "$table"; }
done
