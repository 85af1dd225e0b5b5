#!/usr/bin/env bash
# A GPU session in two calls, sized for 15 minutes of device time in all (the
# machine's start, 1-2 minutes, included; at most 10 minutes a command):
#
#   on the CPU machine first (fills the Triton cache for sm_90 under triton 3.6,
#   the GPU machines' version; minutes, cached):
#     python scripts/warm_triton_cache.py --cache .triton-cache --anchors-only
#   call 1 (must-haves, about 7 minutes):
#     run(command="TRITON_CACHE_DIR=$PWD/.triton-cache bash scripts/gpu_run.sh $OUT call1",
#         carry=[".triton-cache"], timeout_s=480)
#   call 2 (while the machine is warm: the hand-off table, auto, the rest):
#     run(command="bash scripts/gpu_run.sh $OUT call2", timeout_s=360)
#
#   bash scripts/gpu_run.sh OUT_DIR call1|call2 [TOTAL_SECONDS]   (default 420 / 330)
#
# call1 stages, each capped, each writing its log (and JSON) before the next:
#   versions, triton-cache (counts cache hits, compiles what misses), build
#   (TORCH_CUDA_ARCH_LIST=9.0), gpu-tests (the files with GPU tests; CI ran
#   the rest), sanitizer (compute-sanitizer racecheck and synccheck at tiny
#   shapes), barrier-floor (the CUDA and the Triton grid barrier), headline
#   (bench against cuDNN: LSTM and GRU, B 16/64, H 768/1024, bf16 and fp32,
#   fwd+bwd, each backend's kernel paths forced one by one: triton:persistent,
#   triton:step-graph, cuda:persistent, cuda:step).
# call2: handoff-table (the table `auto` reads, from call1's headline JSON,
#   written to OUT_DIR/handoff/), auto (the headline shapes again, torch.nn
#   against `auto` reading that table: where it is below 1.0x, the table or
#   the hand-over is wrong), then the rest of the benchmark suite within what
#   is left. Commit the table under rnnkernels/handoff_tables/ with the run.
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
    call1) TOTAL_S=${3:-420} ;;
    call2) TOTAL_S=${3:-330} ;;
    *) echo "gpu_run.sh: the second argument is call1 or call2, got $CALL" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
DRY=${GPU_RUN_DRY:-0}
GPU_TESTS=${GPU_TESTS:-tests/test_cuda_backend.py tests/test_triton_persistent.py tests/test_triton_barrier_floor.py \
tests/test_triton_graphs.py tests/test_triton_kernels.py tests/test_cell_math_device.py}
HEADLINE=(--shape long,h1024 --cell lstm,gru --dtype bf16,fp32 --mode fwd+bwd --compile off)
HEADLINE_PATHS=torch,triton:persistent,triton:step-graph,cuda:persistent,cuda:step
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
for backend, path in (("cuda", "persistent"), ("cuda", "step"), ("triton", "persistent"), ("triton", "step-graph")):
    os.environ[f"RNNKERNELS_{backend.upper()}_PATH"] = path
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
from rnnkernels.triton_backend import measure_triton_barrier_floor
floors = {"cuda": {}, "triton": {}}
for kind, measure in (("cuda", measure_barrier_floor), ("triton", measure_triton_barrier_floor)):
    for steps in (1000, 4000):
        try:
            floors[kind][steps] = measure(steps)
        except Exception as error:  # noqa: BLE001 - a failed floor is a result to report, not the end
            floors[kind][steps] = f"failed: {type(error).__name__}: {error}"
        print(f"barrier floor {kind}, {steps} steps: {floors[kind][steps]} us per barrier")
with open("$LOGS/barrier_floor.json", "w") as out:
    json.dump({"device": torch.cuda.get_device_name(), "us_per_barrier_by_steps": floors}, out, indent=1,
              default=repr)
EOF
    grep -h "barrier floor" "$LOGS/barrier-floor.log" 2>/dev/null | tee -a "$SUMMARY"

    # The anchors: T=1024 B=16 H=768 (DESIGN.md's) and h1024 (B=64, H=1024, T=100), each
    # kernel path forced in turn; fp32 at torch.nn's default RNN precision (TF32), recorded
    # in the JSON on both sides.
    local budget=$(($(seconds_left) - 25))
    if ((budget >= 30)); then
        # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
        run_step headline $((budget + 15)) "$PYTHON" -m rnnkernels bench --device cuda --tf32 "${HEADLINE[@]}" \
            --impl "$HEADLINE_PATHS" --time-budget "$budget" --out "$OUT_DIR/headline" \
            --note "gpu_run.sh call1 headline" ${BENCH_ARGS:-}
    else
        skip headline "${budget}s left of the call's budget"
    fi
}

call2() {
    local headline_json
    headline_json=$(ls -t "$OUT_DIR"/headline/*.json 2>/dev/null | head -n 1)
    if [[ -n $headline_json || $DRY == 1 ]]; then
        mkdir -p "$OUT_DIR/handoff"
        run_step handoff-table 30 "$PYTHON" -m rnnkernels handoff-table "${headline_json:-HEADLINE.json}" \
            --out "$OUT_DIR/handoff/gpu.json"
        local budget=$(($(seconds_left) / 3))
        if ((budget >= 30)); then
            run_step auto $((budget + 15)) env RNNKERNELS_HANDOFF_TABLES="$OUT_DIR/handoff" \
                "$PYTHON" -m rnnkernels bench --device cuda --tf32 "${HEADLINE[@]}" --impl torch,auto \
                --time-budget "$budget" --out "$OUT_DIR/auto" --note "gpu_run.sh call2: auto with the new table"
        else
            skip auto "${budget}s left of the call's budget"
        fi
    else
        skip handoff-table "no headline JSON in $OUT_DIR/headline (call1's headline stage did not finish)"
    fi
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
for table in "$OUT_DIR"/*.txt "$OUT_DIR"/headline/*.txt "$OUT_DIR"/auto/*.txt; do
    [[ $table == "$SUMMARY" || ! -f $table ]] || { echo; echo "=== $table"; tail -n 40 "$table"; }
done
