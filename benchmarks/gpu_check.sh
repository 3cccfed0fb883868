#!/usr/bin/env bash
# One prepared check of otlabel on a CUDA machine (issue 13), from the repository root, in under
# 8 minutes (each stage has a time limit; a stage's failure does not stop the later ones):
#
#   0. the environment (GPU, driver, torch/triton/numpy/POT versions) -> $OUT/env.txt
#   1. the CASE parity check's data sets; then, in the background, its CPU reference runs
#      (niced, on the upper half of the cores) and its CUDA runs (50 smoke steps, 300
#      THUMOS-shaped steps, then DDP as two processes on the one GPU: NCCL, else gloo)
#   2. the CUDA tests: test_triton_backend.py (compiled kernels, no interpreter), test_cuda.py
#      (CUDA graphs, sync-freedom, differentiable labels, sinkhorn_features), test_graphs.py,
#      test_features_triton.py (the fused features pass, compiled), test_triton_distributed.py (2 gloo ranks on
#      the GPU) -> $OUT/tests.txt, $OUT/tests.xml
#   3. benchmarks/gpu_sinkhorn.py (issue 13's sizes and targets) -> $OUT/gpu_sinkhorn.md, .json
#      (the JSON is rewritten after every cell: a stage cut short keeps what it measured)
#   4. benchmarks/gpu_features.py: the fused feature pass (features x prototypes, the scores never
#      stored) against chunked torch matmuls of the same shapes -> $OUT/gpu_features.md, .json
#   5. the CASE parity comparison (losses of the CUDA runs against the CPU runs at every step
#      both logged, 1e-3 relative; DDP against one process) -> $OUT/case/parity.md, .json
#   6. only with TUNE=1: the Triton backend over a grid of its launch constants -> gpu_tune.md
#
# Needs torch with CUDA, triton, numpy, pytest, hypothesis, pyyaml, tqdm and matplotlib; POT (with
# scipy) and pytest-xdist are optional (POT's tests skip and its benchmark column reads n/a;
# without xdist the tests run in one process). Wheels for missing packages are installed offline
# from $WHEELS (default .whl/) when that folder exists.
# Exit status: non-zero if any stage failed; $OUT/summary.txt lists every stage's.
#
#   bash benchmarks/gpu_check.sh                 # OUT=benchmarks/results/gpu-<date>
#   DRY_RUN=1 bash benchmarks/gpu_check.sh       # without a GPU: the stages' plumbing on tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
WHEELS="${WHEELS:-.whl}"
DRY_RUN="${DRY_RUN:-0}"
# stage limits: 30 + 150 + 60 + 150 + 40 + 50 = 480 s at most (8 minutes), far less when all goes well
DATA_SECONDS="${DATA_SECONDS:-30}"
TEST_SECONDS="${TEST_SECONDS:-150}"
BENCH_SECONDS="${BENCH_SECONDS:-150}"
FEATURES_SECONDS="${FEATURES_SECONDS:-40}"
PARITY_SECONDS="${PARITY_SECONDS:-50}"
CASE_SECONDS="${CASE_SECONDS:-420}"  # the background CASE runs, from their start
DEVICE_WAIT="${DEVICE_WAIT:-60}"     # after the tests, for the CASE CUDA runs to finish
TUNE_SECONDS="${TUNE_SECONDS:-90}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

if [ "$DRY_RUN" = 1 ]; then
  export TRITON_INTERPRET=1  # no GPU: the kernels in Triton's interpreter
  case_args=(--device cpu --smoke-steps 3 --thumos-steps 0 --threads 1)
  bench_args=(--dry-run)
  features_args=(--dry-run)
  tests=(tests/otlabel/test_graphs.py)
else
  unset TRITON_INTERPRET  # compiled kernels on the GPU
  case_args=(--device cuda --smoke-steps 50 --thumos-steps 300)
  bench_args=(--repeats 50 --cell-seconds 2)
  features_args=(--repeats 10 --cell-seconds 3)
  tests=(tests/otlabel/test_triton_backend.py tests/otlabel/test_cuda.py tests/otlabel/test_graphs.py
    tests/otlabel/test_triton_distributed.py tests/otlabel/test_features_triton.py)
fi

if [ -d "$WHEELS" ]; then
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl >"$OUT/pip.txt" 2>&1 \
    || echo "pip install from $WHEELS failed (see pip.txt); going on with what is installed" | tee -a "$OUT/summary.txt"
fi

{
  nvidia-smi || true
  "$PYTHON" - <<'EOF'
import importlib
import torch
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE"
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", device)
for name in ("triton", "numpy", "pytest", "hypothesis", "ot", "scipy", "xdist", "yaml", "tqdm", "matplotlib"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError as exc:
        print(name, "MISSING", exc)
EOF
  nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stage() {  # stage NAME SECONDS LOG COMMAND...: run with a time limit, log, record the exit status
  local name=$1 seconds=$2 log=$3
  shift 3
  local start=$SECONDS
  timeout "$seconds" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $seconds s)" | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || status=1
}

wait_for() {  # wait_for NAME PID SECONDS: wait for a background job, at most SECONDS, then stop it
  local name=$1 pid=$2 deadline=$((SECONDS + $3))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
  kill "$pid" 2>/dev/null && echo "$name: stopped after waiting $3 s" | tee -a "$OUT/summary.txt"
  wait "$pid"
  local rc=$?
  echo "$name: exit $rc" | tee -a "$OUT/summary.txt"
  return $rc
}

cores=$(nproc 2>/dev/null || echo 2)
half=$((cores / 2))
pin_low=() pin_high=()
if command -v taskset >/dev/null 2>&1 && [ "$cores" -ge 4 ]; then
  pin_low=(taskset -c "0-$((half - 1))")       # tests and benchmark
  pin_high=(taskset -c "$half-$((cores - 1))")  # the CPU reference runs
fi

# 1. CASE: data, then the CPU references and the CUDA runs in the background
parity=("$PYTHON" examples/wtal_case/tools/cuda_parity.py)
stage case-data "$DATA_SECONDS" "$OUT/case-data.txt" "${parity[@]}" data --out "$OUT/case" "${case_args[@]}"
timeout "$CASE_SECONDS" nice -n 19 "${pin_high[@]}" "${parity[@]}" reference --out "$OUT/case" "${case_args[@]}" \
  >"$OUT/case-reference.txt" 2>&1 &
reference_pid=$!
timeout "$CASE_SECONDS" "${parity[@]}" device --out "$OUT/case" "${case_args[@]}" --nccl-timeout 45 \
  >"$OUT/case-device.txt" 2>&1 &
device_pid=$!

# 2. tests
parallel=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then
  parallel=(-n 6)  # Triton compiles on the host CPUs: spread the kernel variants over workers
fi
stage tests "$TEST_SECONDS" "$OUT/tests.txt" "${pin_low[@]}" "$PYTHON" -m pytest "${tests[@]}" \
  -p no:cacheprovider -q -rs "${parallel[@]}" --durations=15 --junitxml="$OUT/tests.xml"

# 3. benchmark, once the CUDA runs of the CASE check are done (the GPU to itself)
wait_for case-device "$device_pid" "$DEVICE_WAIT" || status=1
stage benchmark "$BENCH_SECONDS" "$OUT/gpu_sinkhorn.md" "${pin_low[@]}" "$PYTHON" benchmarks/gpu_sinkhorn.py \
  "${bench_args[@]}" --out "$OUT/gpu_sinkhorn.json"

# 4. the fused feature pass (its four cells: ~3 s of compilation each, seconds of timing)
stage features "$FEATURES_SECONDS" "$OUT/gpu_features.md" "${pin_low[@]}" "$PYTHON" benchmarks/gpu_features.py \
  "${features_args[@]}" --out "$OUT/gpu_features.json"

# 5. CASE parity: the references had until now (and PARITY_SECONDS more) to run
stage case-parity "$PARITY_SECONDS" "$OUT/case-parity.txt" "${parity[@]}" compare --out "$OUT/case" \
  "${case_args[@]}" --wait $((PARITY_SECONDS - 10))
wait_for case-reference "$reference_pid" 0  # a reference cut short is compared over its logged steps

# 6. optional tuning
if [ "${TUNE:-0}" = 1 ]; then
  stage tune "$TUNE_SECONDS" "$OUT/gpu_tune.md" "$PYTHON" benchmarks/gpu_sinkhorn.py --tune "${bench_args[@]}" \
    --out "$OUT/gpu_tune.json"
fi

echo "outputs in $OUT"
exit $status
