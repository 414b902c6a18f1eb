#!/usr/bin/env bash
# The rehearsal on one CUDA GPU: every stage of the study on the paper's models at full size (random-weight
# stand-ins, `vw rehearsal-models`), in fp16, with the paper's batch of 8 and 50 sampling steps, on a few trials;
# one line per stage with its time, then the full-size benchmarks and the paper profile's projected cost.
#
#   bash benchmarks/gpu_rehearsal.sh --download   # here, online: fetch the wheels a bare CUDA machine lacks → .whl/
#   bash benchmarks/gpu_rehearsal.sh              # there: install them from .whl/ (no network), run, check
#
# .whl/ is git-ignored: hand it to the GPU machine with the checkout (the lent device's `carry: [".whl"]`).
#
# A bare CUDA machine is assumed to have python3 with torch, transformers, huggingface_hub, accelerate, numpy,
# scipy, pandas, numba, scikit-image, matplotlib, jinja2, pytest and safetensors, and nothing downloadable. What it
# lacks travels as wheels (≈ 9 MB): WHEELS below. Ray's wheel is too large to travel and MLflow/DVC pull dozens of
# packages, so the script runs the in-process paths (`vw train` instead of the Ray sweep, evaluation without
# MLflow, the stages in order instead of `dvc repro`): the same trainer, evaluator and files.
#
# Environment: VW_DEVICE (cuda), VW_PRECISION (fp16), VW_STEPS (50), VW_INFERENCE_STEPS (50), VW_BATCH (8), VW_SITE
# (where the wheels are installed, /tmp/vw-site), VW_PROFILE (rehearsal). A dry run of the script itself on a CPU,
# on tiny models (≈ 2 min):
#   VW_PYTHON=.venv/bin/python VW_PROFILE=smoke VW_DEVICE=cpu VW_PRECISION=fp32 VW_STEPS=2 \
#     VW_INFERENCE_STEPS=2 VW_BATCH=2 bash benchmarks/gpu_rehearsal.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pycocotools==2.0.11)
WHEEL_DIR=.whl

if [[ "${1:-}" == "--download" ]]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEEL_DIR" "${WHEELS[@]}"
  du -sh "$WHEEL_DIR"
  exit 0
fi

PY=${VW_PYTHON:-python3}  # the dry run here: VW_PYTHON=.venv/bin/python
SITE=${VW_SITE:-/tmp/vw-site}
if ! "$PY" -c "import diffusers, open_clip, pycocotools, ftfy" 2>/dev/null; then
  ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1 || { echo "gpu_rehearsal: no wheels in $WHEEL_DIR (run with --download first)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEEL_DIR"/*.whl
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true
vw() { "$PY" -m visual_words "$@"; }

DEVICE=${VW_DEVICE:-cuda}
PRECISION=${VW_PRECISION:-fp16}
OVERRIDES=("study.device=$DEVICE" "train.precision=$PRECISION" "evaluate.precision=$PRECISION"
           "train.batch_size=${VW_BATCH:-8}" "train.steps=${VW_STEPS:-50}" "train.log_every=10"
           "train.checkpoint_every=0" "train.trials_per_batch_by_task={generation: 1}"
           "evaluate.inference_steps=${VW_INFERENCE_STEPS:-50}" "evaluate.engine=local"
           # compiling costs ≈ 100 s per shape: more than this short run saves (the paper's long runs compile)
           "train.compile=false" "evaluate.compile=false")
PROFILE=${VW_PROFILE:-rehearsal}
ARGS=(--profile "$PROFILE")
for o in "${OVERRIDES[@]}"; do ARGS+=(--set "$o"); done
export VW_REHEARSAL_SET="$(IFS=';'; echo "${OVERRIDES[*]}")"  # the output checks read the run's settings

"$PY" - <<'PY'
import torch
print(f"[gpu-rehearsal] torch {torch.__version__}, "
      + (f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
         if torch.cuda.is_available() else "no CUDA device"), flush=True)
PY

declare -A SECONDS_OF
stage() {
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  SECONDS_OF[$name]=$("$PY" -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
  echo "[gpu-rehearsal] stage $name: ${SECONDS_OF[$name]} s" >&2
}
if [[ "$PROFILE" == rehearsal ]]; then stage models vw rehearsal-models; else SECONDS_OF[models]=0; fi
stage prepare vw data prepare "${ARGS[@]}"
stage maps vw maps --quiet "${ARGS[@]}"
stage train vw train "${ARGS[@]}"
stage evaluate vw evaluate run --no-tracking "${ARGS[@]}"
stage analyze vw analyze "${ARGS[@]}"
stage report vw report "${ARGS[@]}"
if [[ "$PROFILE" == rehearsal ]]; then
  "$PY" -m pytest -q -p no:cacheprovider --rehearsal tests/test_rehearsal_outputs.py
fi

# One line per stage: its time here and the paper profile's projected GPU-hours for it; the SD step rate this
# rehearsal measured is filed for this card in artifacts/rehearsal/rates.yaml (VW_RATES=that file for `vw plan`).
TIMES=()
for s in models prepare maps train evaluate analyze report; do TIMES+=("$s=${SECONDS_OF[$s]}"); done
"$PY" -m visual_words.commands.rehearsal "${ARGS[@]}" --times "${TIMES[@]}"
