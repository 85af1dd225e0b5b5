#!/usr/bin/env bash
# A GPU session in two calls, sized for 15 minutes of device time in all (the
# machine's start, 1-2 minutes, included; at most 10 minutes a command):
#
#   on the CPU machine first (fills the Triton cache for sm_90 under triton 3.6,
#   the GPU machines' version; minutes, cached):
#     python scripts/warm_triton_cache.py --cache .triton-cache --anchors-only
#   call 1 (must-haves, about 6 minutes):
#     run(command="TRITON_CACHE_DIR=$PWD/.triton-cache bash scripts/gpu_run.sh $OUT call1",
#         carry=[".triton-cache"], timeout_s=480)
#   call 2 (while the machine is warm: the rest of the benchmark suite):
#     run(command="bash scripts/gpu_run.sh $OUT call2", timeout_s=600)
#
#   bash scripts/gpu_run.sh OUT_DIR call1|call2 [TOTAL_SECONDS]   (default 400 / 560)
#
# call1 stages, each capped, each writing its log (and JSON) before the next:
#   versions, triton-cache (counts cache hits, compiles what misses), build
#   (TORCH_CUDA_ARCH_LIST=9.0), gpu-tests (the files with GPU tests; CI ran
#   the rest), sanitizer (compute-sanitizer racecheck and synccheck at tiny
#   shapes), barrier-floor, headline (bench against cuDNN: LSTM and GRU,
#   B 16/64, H 768/1024, bf16 and fp32, fwd+bwd).
# call2: the full benchmark suite within what is left.
# Every stage that does not run says why in summary.txt. Files in OUT_DIR:
# summary.txt, the bench's JSON/.txt/PNGs, logs.tar.gz (every stage's log,
# pytest.xml, barrier_floor.json, warm-summary.json).
#
# GPU_RUN_DRY=1 replaces every GPU stage by a stand-in that prints its
# command (tests/test_gpu_script.py runs it so on CPU). Environment: PYTHON
# (python3), TRITON_CACHE_DIR, GPU_TESTS (test files of the gpu-tests stage),
# PYTEST_ARGS, BENCH_ARGS, RNNKERNELS_COMMIT (names results when the tree has
# no .git). Never touches the GPU's clocks, power or modes.

set -u -o pipefail

OUT_DIR=${1:?usage: bash scripts/gpu_run.sh OUT_DIR call1|call2 [TOTAL_SECONDS]}
CALL=${2:-call1}
case $CALL in
    call1) TOTAL_S=${3:-400} ;;
    call2) TOTAL_S=${3:-560} ;;
    *) echo "gpu_run.sh: the second argument is call1 or call2, got $CALL" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
DRY=${GPU_RUN_DRY:-0}
GPU_TESTS=${GPU_TESTS:-tests/test_cuda_backend.py tests/test_triton_graphs.py tests/test_triton_kernels.py tests/test_cell_math_device.py}
FINISH_RESERVE_S=15  # packing the logs and printing the summary

cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOGS="$OUT_DIR/logs-$CALL"
mkdir -p "$LOGS"
SUMMARY="$OUT_DIR/summary.txt"
START=$(date +%s)
export PYTHONUNBUFFERED=1
export RNNKERNELS_COMMIT=${RNNKERNELS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

seconds_left() { echo $((TOTAL_S - ($(date +%s) - START) - FINISH_RESERVE_S)); }

note() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME CAP_SECONDS COMMAND...: output to LOGS/NAME.log, its status to summary.txt
run_step() {
    local name=$1 cap=$2 left began status
    shift 2
    left=$(seconds_left)
    if ((left < cap)); then cap=$left; fi
    if ((cap < 5)); then
        note "step $name: skipped, ${left}s left of the call's budget"
        return 1
    fi
    began=$(date +%s)
    echo "=== $name (limit ${cap}s): $*"
    if [[ $DRY == 1 ]]; then
        echo "dry run: $*" >"$LOGS/$name.log"
        status=0
    else
        timeout --kill-after=10 "$cap" "$@" >"$LOGS/$name.log" 2>&1
        status=$?
    fi
    if ((status == 124 || status == 137)); then
        note "step $name: stopped at its limit of ${cap}s (exit $status); see logs-$CALL/$name.log"
    else
        note "step $name: exit $status in $(($(date +%s) - began))s"
    fi
    tail -n 15 "$LOGS/$name.log"
    return $status
}

# skip NAME WHY: a stage that does not run, said so
skip() { note "step $1: skipped, $2"; }

note "gpu_run.sh $CALL on $(hostname) at $(date -u +%FT%TZ), commit $RNNKERNELS_COMMIT, budget ${TOTAL_S}s"

call1() {
    run_step versions 30 bash -c "nvidia-smi; nvcc --version; $PYTHON -c 'import torch, triton; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version()); \
print(\"triton\", triton.__version__); \
print(\"device\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")'"

    if [[ -n ${TRITON_CACHE_DIR:-} && -d ${TRITON_CACHE_DIR:-} ]]; then
        # this machine's triton, the warmed cache: hits cost nothing, misses compile here
        run_step triton-cache 60 "$PYTHON" scripts/warm_triton_cache.py --cache "$TRITON_CACHE_DIR" \
            --triton here --anchors-only --summary "$LOGS/warm-summary.json"
        grep -h '"hits"\|"misses"' "$LOGS/warm-summary.json" 2>/dev/null | tee -a "$SUMMARY"
    else
        skip triton-cache "TRITON_CACHE_DIR is not a folder carried here: every Triton variant compiles on first use"
    fi

    # There is no network: nothing may be fetched. One arch: the build is a third of the default.
    TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16} run_step build 150 \
        "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -e .
    run_step backends 20 "$PYTHON" -m rnnkernels backends

    # shellcheck disable=SC2086  # GPU_TESTS and PYTEST_ARGS are lists of words on purpose
    run_step gpu-tests 120 env RNNKERNELS_REQUIRE_CPU_BACKEND=1 "$PYTHON" -m pytest -q -rs -p no:cacheprovider \
        --junitxml="$LOGS/pytest.xml" $GPU_TESTS ${PYTEST_ARGS:-}

    if [[ $DRY == 1 ]] || command -v compute-sanitizer >/dev/null 2>&1; then
        for tool in racecheck synccheck; do
            run_step "sanitizer-$tool" 15 compute-sanitizer --tool "$tool" --error-exitcode 3 "$PYTHON" - <<'EOF'
import os
import torch
import rnnkernels
for backend, path in (("cuda", "persistent"), ("cuda", "step"), ("triton", None)):
    if path:
        os.environ["RNNKERNELS_CUDA_PATH"] = path
    for layer in (rnnkernels.LSTM(8, 16, backend=backend), rnnkernels.GRU(8, 16, backend=backend)):
        out, _ = layer.cuda()(torch.randn(9, 3, 8, device="cuda", requires_grad=True))
        out.sum().backward()
    torch.cuda.synchronize()
    print(backend, path, "ran")
EOF
        done
    else
        skip sanitizer "compute-sanitizer is not on PATH"
    fi

    run_step barrier-floor 30 "$PYTHON" - <<EOF
import json
import torch
from rnnkernels.cuda_backend import measure_barrier_floor
floors = {}
for steps in (1000, 4000):
    try:
        floors[steps] = measure_barrier_floor(steps)
    except RuntimeError as error:
        floors[steps] = f"failed: {error}"
    print(f"barrier floor, {steps} steps: {floors[steps]} us per barrier")
with open("$LOGS/barrier_floor.json", "w") as out:
    json.dump({"device": torch.cuda.get_device_name(), "us_per_barrier_by_steps": floors}, out, indent=1,
              default=repr)
EOF
    grep -h "barrier floor" "$LOGS/barrier-floor.log" 2>/dev/null | tee -a "$SUMMARY"

    # The anchors: T=1024 B=16 H=768 (DESIGN.md's), h1024 (B=64, H=1024), fastrnns (B=64);
    # fp32 at torch.nn's default RNN precision (TF32), recorded in the JSON on both sides.
    local budget=$(($(seconds_left) - 25))
    if ((budget >= 30)); then
        # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
        run_step headline $((budget + 15)) "$PYTHON" -m rnnkernels bench --device cuda --tf32 \
            --shape long,h1024,fastrnns --cell lstm,gru --dtype bf16,fp32 --mode fwd+bwd --compile off \
            --time-budget "$budget" --out "$OUT_DIR" --note "gpu_run.sh call1 headline" ${BENCH_ARGS:-}
    else
        skip headline "${budget}s left of the call's budget"
    fi
}

call2() {
    local budget=$(($(seconds_left) - 40))
    if ((budget >= 30)); then
        # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
        run_step bench $((budget + 10)) "$PYTHON" -m rnnkernels bench --device cuda \
            --time-budget "$budget" --out "$OUT_DIR" --note "gpu_run.sh call2 suite" ${BENCH_ARGS:-}
        local status=$? latest_json
        latest_json=$(ls -t "$OUT_DIR"/*.json 2>/dev/null | head -n 1)
        if ((status == 124 || status == 137)) && [[ -n $latest_json ]]; then
            run_step render 30 "$PYTHON" -m rnnkernels bench --from-json "$latest_json"
        fi
    else
        skip bench "${budget}s left of the call's budget"
    fi
}

"$CALL"

tar czf "$OUT_DIR/logs-$CALL.tar.gz" -C "$OUT_DIR" "logs-$CALL" && rm -rf "$LOGS"
note "$CALL finished in $(($(date +%s) - START))s; files in $OUT_DIR:"
ls -la "$OUT_DIR" | tee -a "$SUMMARY"
for table in "$OUT_DIR"/*.txt; do
    [[ $table == "$SUMMARY" ]] || { echo; echo "=== $table"; tail -n 40 "$table"; }
done
