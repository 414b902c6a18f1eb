#!/usr/bin/env bash
# The GPU speed measurements of docs/performance.md in one go, on a bare CUDA machine (torch, transformers,
# accelerate, numpy, numba, pytest, pytest-benchmark installed; nothing downloadable there).
#
#   bash benchmarks/gpu_speed.sh fetch      # HERE (network): the wheels the GPU machine lacks + the reference script
#                                           # and the DreamBooth photos, into .gpu-carry/ (ignored by git; ~14 MB)
#   bash benchmarks/gpu_speed.sh [BENCH…]   # THERE (carry .gpu-carry): sd-step generate batched-trials eps-stats
#                                           # (default: all four, ≈ 9-10 min on an H200; each prints its ratio line)
#
# Environment: VW_BENCH_VARIANTS=max-autotune,reduce-overhead,flash,channels_last,fp8 adds sd-step variants (1-5 min
# each); VW_BENCH_REFERENCE=0 skips diffusers' example in sd-step (saves ≈ 2 min); VW_BENCH_GEN_BATCH (16).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

if [ "${1:-}" = fetch ]; then
    mkdir -p "$CARRY/wheels" "$CARRY/shared/reference" "$CARRY/shared/assets/dreambooth"
    # pure-python wheels, pinned as in requirements.lock; the machine's own transformers/hub/timm are used
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/wheels" diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 2>&1 \
        | grep -v "is ignored" || true
    cp -r ../shared/reference/diffusers-textual-inversion "$CARRY/shared/reference/"
    cp -r ../shared/assets/dreambooth/cat2 "$CARRY/shared/assets/dreambooth/"
    du -sh "$CARRY"
    exit 0
fi

export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0 DVC_NO_ANALYTICS=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import diffusers, open_clip" 2>/dev/null; then
    ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 || { echo "diffusers/open_clip missing and no $CARRY/wheels: run 'bash $0 fetch' where the network is, and carry $CARRY" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/vw-site "$CARRY"/wheels/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/vw-site"
fi
export VW_BENCH_SHARED="$PWD/$CARRY/shared"
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU')"

declare -A ENVS=([sd-step]="VW_BENCH_FULL=1" [generate]="VW_BENCH_FULL=1" [batched-trials]="VW_BENCH_DEVICE=cuda"
                 [eps-stats]="VW_BENCH_DEVICE=cuda")
declare -A LIMIT=([sd-step]=420 [generate]=300 [batched-trials]=180 [eps-stats]=180)
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(sd-step generate batched-trials eps-stats)
summary=()
for b in "${benches[@]}"; do
    echo "=== $b (${ENVS[$b]}) ==="
    t0=$(date +%s)
    log=$(mktemp)
    env ${ENVS[$b]} timeout "${LIMIT[$b]}" "$PY" -m visual_words bench "$b" 2>&1 | tee "$log" \
        | grep -E "^(SD-2.1|variant|diffusers|tiny|DFN|OWL|rates|$b ratio)|FAILED|Error|error:" || true
    summary+=("$(grep -E "^$b ratio=" "$log" | tail -1 || echo "$b: no ratio line (see above)") [$(( $(date +%s) - t0 )) s]")
done
echo "=== summary ==="
printf '%s\n' "${summary[@]}"
# sd-step and generate file the rates they measured for this card (benchmarks/card_rates.py): `vw plan` reads them
# with VW_RATES=that file; on the lent machine they come back through $OUT.
RATES=${VW_RATES:-artifacts/bench/rates.yaml}
if [ -f "$RATES" ]; then
    echo "rates for vw plan: $RATES"
    if [ -n "${OUT:-}" ]; then cp "$RATES" "$OUT/rates.yaml"; fi
fi
