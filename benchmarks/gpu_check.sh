#!/usr/bin/env bash
# One prepared check of the Triton backend on a CUDA machine, from the repository root:
#
#   1. the environment (GPU, driver, torch/triton/numpy/POT versions) -> $OUT/env.txt
#   2. tests/otlabel/test_triton_backend.py on CUDA (compiled kernels, no interpreter) and
#      tests/otlabel/test_cuda.py (torch backend, deferred checks, auto dispatch, ragged on CUDA)
#      -> $OUT/tests.txt, $OUT/tests.xml
#   3. benchmarks/gpu_sinkhorn.py (Markdown table + JSON) -> $OUT/gpu_sinkhorn.md, .json
#   4. the Triton backend over a grid of its launch constants (--tune) -> $OUT/gpu_tune.md, .json
#
# Needs torch with CUDA, triton, numpy and pytest; POT (with scipy) is optional (its tests
# skip, its benchmark column reads n/a). Wheels for missing packages are installed offline
# from $WHEELS (default .whl/) when that folder exists, e.g. pytest, pluggy, iniconfig,
# packaging, pot, scipy (and pytest-xdist, execnet to compile in parallel).
# Each stage has its own time limit (seconds, overridable) so that a slow stage cannot eat
# the others'; a stage's failure does not stop the later ones. Exit status: non-zero if any
# stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
WHEELS="${WHEELS:-.whl}"
TEST_SECONDS="${TEST_SECONDS:-150}"
BENCH_SECONDS="${BENCH_SECONDS:-200}"
TUNE_SECONDS="${TUNE_SECONDS:-90}"
mkdir -p "$OUT"
unset TRITON_INTERPRET  # compiled kernels on the GPU
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

if [ -d "$WHEELS" ]; then
  python -m pip install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl >"$OUT/pip.txt" 2>&1 \
    || echo "pip install from $WHEELS failed (see pip.txt); going on with what is installed" | tee -a "$OUT/summary.txt"
fi

{
  nvidia-smi || true
  python - <<'EOF'
import importlib
import torch
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE"
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", device)
for name in ("triton", "numpy", "pytest", "ot", "scipy", "xdist"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError as exc:
        print(name, "MISSING", exc)
EOF
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

parallel=()
if python -c "import xdist" 2>/dev/null; then
  parallel=(-n 8)  # Triton compiles on the host CPUs: spread the kernel variants over workers
fi
stage tests "$TEST_SECONDS" "$OUT/tests.txt" python -m pytest tests/otlabel/test_triton_backend.py tests/otlabel/test_cuda.py \
  -p no:cacheprovider -q -rs "${parallel[@]}" --durations=10 --junitxml="$OUT/tests.xml"
stage benchmark "$BENCH_SECONDS" "$OUT/gpu_sinkhorn.md" python benchmarks/gpu_sinkhorn.py --out "$OUT/gpu_sinkhorn.json"
stage tune "$TUNE_SECONDS" "$OUT/gpu_tune.md" python benchmarks/gpu_sinkhorn.py --tune --out "$OUT/gpu_tune.json"

echo "outputs in $OUT"
exit $status
