#!/usr/bin/env bash
# `make docker-test`: build the image, then run the whole smoke study inside it with no network and check its report.
#   1. a Docker daemon: the running one, else (root) dockerd started here without touching the host network
#   2. the base image (debootstrap'd bookworm) if missing, then the image (docker/build.sh does the same)
#   3. quick facts: non-root user, `vw --help`, pip freeze == requirements.lock, the paper run's model-lock check
#      (fails with instructions when the image has no baked weights, passes when it has)
#   4. `docker run --rm --network none -v OUT:/workspace IMAGE reproduce --profile smoke`, then
#      OUT/reports/smoke/index.html must exist
#   5. stop the daemon if we started it; print the times and the image size
# env: BAKE_MODELS=1 bakes the paper's checkpoints into the image (needs the hub);
#      VW_DOCKER_OPTIONAL=1 turns "no Docker daemon can be had" into a clearly printed skip with exit 0 (CI);
#      VW_DOCKER_OUT (the smoke workspace, default build/docker-smoke); and those of docker/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
source docker/lib.sh
t0=$SECONDS

if ! vw_ensure_docker; then
  if [ "${VW_DOCKER_OPTIONAL:-0}" = 1 ]; then
    echo "===== docker-test SKIPPED: no Docker daemon could be found or started here (reason above) ====="
    exit 0
  fi
  echo "docker-test: FAILED: no Docker daemon (see above)" >&2
  exit 1
fi
trap vw_stop_dockerd EXIT

fail() { echo "docker-test: FAILED: $*" >&2; exit 1; }

tb=$SECONDS
vw_ensure_base
base_s=$((SECONDS - tb)); tb=$SECONDS
vw_build --build-arg "BAKE_MODELS=${BAKE_MODELS:-0}"
build_s=$((SECONDS - tb))
size=$("$DOCKER" image inspect -f '{{.Size}}' "$VW_IMAGE")

# 3. quick facts
uid=$("$DOCKER" run --rm --network none --entrypoint id "$VW_IMAGE" -u)
[ "$uid" != 0 ] || fail "the image runs as root"
"$DOCKER" run --rm --network none "$VW_IMAGE" --help | grep -q "reproduce" || fail "vw --help does not list reproduce"
"$DOCKER" run --rm --network none --entrypoint /opt/venv/bin/pip "$VW_IMAGE" freeze --exclude visual-words \
  | diff <(grep -v '^#' requirements.lock | sed '/^$/d') - >&2 || fail "pip freeze in the image differs from requirements.lock"
echo "[docker-test] the image's pip freeze equals requirements.lock"
if "$DOCKER" run --rm --network none --entrypoint test "$VW_IMAGE" -s /opt/models/models.lock.json; then
  "$DOCKER" run --rm --network none "$VW_IMAGE" check-models || fail "the baked models do not match their lock"
  echo "[docker-test] baked models match the lock"
else
  set +e
  msg=$("$DOCKER" run --rm --network none "$VW_IMAGE" check-models 2>&1); rc=$?
  set -e
  { [ "$rc" = 2 ] && grep -q "BAKE_MODELS=1" <<<"$msg"; } || fail "check-models without baked weights: exit $rc, $msg"
  echo "[docker-test] no baked weights; the paper check stops with: $(grep -m1 'error:' <<<"$msg" | cut -c1-160)…"
fi

# 4. the smoke study, offline, as the image's non-root user (or as the caller's uid when not root)
ws=${VW_DOCKER_OUT:-$PWD/build/docker-smoke}
rm -rf "$ws" && mkdir -p "$ws"
user=()
if [ "$(id -u)" = 0 ]; then chown 1000:1000 "$ws"; else user=(--user "$(id -u):$(id -g)"); fi
tb=$SECONDS
echo "[docker-test] docker run --rm --network none -v $ws:/workspace $VW_IMAGE reproduce --profile smoke"
"$DOCKER" run --rm --network none "${user[@]}" -v "$ws":/workspace "$VW_IMAGE" reproduce --profile smoke \
  || fail "the smoke study failed inside the container"
smoke_s=$((SECONDS - tb))
report="$ws/reports/smoke/index.html"
[ -s "$report" ] || fail "the smoke study ran but wrote no report at $report"

printf '===== docker-test passed: base %ss, build %ss, smoke study %ss, total %ss; image %s %.2f GB; report %s =====\n' \
  "$base_s" "$build_s" "$smoke_s" "$((SECONDS - t0))" "$VW_IMAGE" "$(awk -v s="$size" 'BEGIN { print s / 1e9 }')" "$report"
