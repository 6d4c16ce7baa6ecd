#!/usr/bin/env bash
# The GPU path, measured: one prepared script for a lent GPU machine (no internet), under 8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh            on the GPU machine: everything below, results in $OUT (else runs/gpu-check)
#   bash benchmarks/gpu_check.sh --cpu      here, small and on the CPU: tests the script itself (GPU tests skip)
#   bash benchmarks/gpu_check.sh --stage    only keep the carried wheels (.whl/set*) in /tmp/lv-wheels for the next call
#   bash benchmarks/gpu_check.sh --scale    on the GPU machine: steps 1, 2 and 6 only (its own call, limit 7 minutes)
#
# Steps, each timed, with its exit status in summary.txt:
#   1. the machine: nvidia-smi, python, torch, CUDA;
#   2. the project's missing packages from wheels (benchmarks/gpu_wheels.sh made them here; see its header for the
#      device calls), installed into /tmp/site;
#   3. the gpu-marked tests (pytest -m gpu);
#   4. benchmarks/gpu_sweep.py: a CUDA sweep of a ViT-S/16 from random weights on 224 px crops of the shipped photos
#      (AMP, 4 trials at once on quarters of the GPU, fractional-GPU streaming evaluation) with GPU use sampled,
#      P5 (data loader vs training step images/s), and the cost of deterministic: true;
#   5. P1 on all the machine's cores: benchmarks/compress_vs_pool.py (lossyvision compress vs a plain Pool);
#   6. issue 22: benchmarks/scale_check.py: one trial with cache: exact, one with resources.trial.workers: 2.
# What comes back from $OUT: gpu-check.log, summary.txt, gpu-sweep.json, p1-pool.json, scale-check.json (at most 8).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=cuda
case "${1:-}" in
  --cpu) MODE=cpu ;;
  --scale) MODE=scale ;;
  --stage) mkdir -p "${GPU_CHECK_WHEELS:-/tmp/lv-wheels}" && cp -v .whl/set*/* "${GPU_CHECK_WHEELS:-/tmp/lv-wheels}/" && exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--cpu | --stage | --scale]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
if [[ $MODE == cpu && -z ${PYTHON:-} && -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
export PY
RESULTS=${OUT:-runs/gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/lossyvision-gpu-check}
mkdir -p "$RESULTS" "$WORK"
LOG=$RESULTS/gpu-check.log
SUMMARY=$RESULTS/summary.txt
: > "$SUMMARY"
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1 MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
export SITE=${GPU_CHECK_SITE:-/tmp/site} WHEELS=${GPU_CHECK_WHEELS:-/tmp/lv-wheels}
export PYTHONPATH="$PWD/platform:$SITE${PYTHONPATH:+:$PYTHONPATH}"
unset RAY_ADDRESS
started=$(date +%s)

# step NAME LIMIT_SECONDS COMMAND...: run it (a program or a function above) with a time limit, log its output,
# record its exit status and seconds.
step() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  if declare -F "$1" >/dev/null; then set -- bash -c "$(declare -f "$1"); $*"; fi
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "$name: exit $rc, $(( $(date +%s) - t0 ))s" | tee -a "$SUMMARY" "$LOG"
  return "$rc"
}

install_wheels() {
  if "$PY" -c "import ray, mlflow, imagecodecs, pydantic" 2>/dev/null; then
    echo "ray, mlflow, imagecodecs and pydantic are installed"; return 0
  fi
  mkdir -p "$WHEELS"
  [[ -d .whl ]] && cp .whl/set*/* "$WHEELS/" 2>/dev/null
  ( cd "$WHEELS" && for first in *.part-00; do
      [[ -e $first ]] || continue
      whl=${first%.part-00}; cat "$whl".part-* > "$whl" && rm -f "$whl".part-*
    done )
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels: run benchmarks/gpu_wheels.sh here, then carry .whl/set*"; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || return 1
  "$PY" -c "import ray, mlflow, imagecodecs, pydantic; print('installed: ray', ray.__version__, 'mlflow', mlflow.__version__)"
}

machine() {
  nvidia-smi || echo "(no nvidia-smi)"
  "$PY" -c "import os, platform, torch; print('python', platform.python_version(), 'torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', \
'cores', os.cpu_count())"
}

step machine 60 machine
if [[ $MODE == scale ]]; then
  step wheels 240 install_wheels || { echo "stopping: the project cannot import its packages" | tee -a "$SUMMARY"; exit 1; }
  step scale-cache-workers 420 "$PY" benchmarks/scale_check.py --device cuda --work "$WORK/scale" \
    --json "$RESULTS/scale-check.json"
elif [[ $MODE == cuda ]]; then
  step wheels 240 install_wheels || { echo "stopping: the project cannot import its packages" | tee -a "$SUMMARY"; exit 1; }
  step gpu-tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider $(grep -l 'pytest.mark.gpu' tests/test_*.py)
  step sweep-p5-determinism 330 "$PY" benchmarks/gpu_sweep.py --device cuda --work "$WORK/sweep" \
    --json "$RESULTS/gpu-sweep.json"
  step p1-all-cores 150 "$PY" benchmarks/compress_vs_pool.py --images 400 --levels 1,5 --effort 7 --repeats 2 \
    --skip-no-png --cores "$(nproc)" --json "$RESULTS/p1-pool.json"
  step scale-cache-workers 300 "$PY" benchmarks/scale_check.py --device cuda --work "$WORK/scale" \
    --json "$RESULTS/scale-check.json"
else
  step gpu-tests 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider $(grep -l 'pytest.mark.gpu' tests/test_*.py)
  step sweep-p5-determinism 900 "$PY" benchmarks/gpu_sweep.py --device cpu --small --work "$WORK/sweep" \
    --json "$RESULTS/gpu-sweep.json"
  step p1-all-cores 600 "$PY" benchmarks/compress_vs_pool.py --images 16 --levels 1,5 --effort 3 --repeats 1 \
    --skip-no-png --png-sample 4 --cores "$(nproc)" --json "$RESULTS/p1-pool.json"
  step scale-cache-workers 900 "$PY" benchmarks/scale_check.py --device cpu --small --work "$WORK/scale" \
    --json "$RESULTS/scale-check.json"
fi
echo "total: $(( $(date +%s) - started ))s" | tee -a "$SUMMARY" "$LOG"
cat "$SUMMARY"
! grep -qv ': exit 0,\|^total' "$SUMMARY"
