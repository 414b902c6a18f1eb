# shellcheck shell=bash
# Shared by docker/build.sh and docker/test.sh (sourced, not run): find a Docker daemon or start one, pick a client
# that can do BuildKit builds, build the base image when it is missing. See docs/toolchain.md §6 for why each step is so.

VW_IMAGE=${VW_IMAGE:-visual-words:dev}
VW_BASE_IMAGE=${VW_BASE_IMAGE:-visual-words/debian:bookworm-slim}
# Where a daemon started here keeps its state. Outside the repo (images are GBs) and on short paths (socket limits).
VW_DOCKER_DATA=${VW_DOCKER_DATA:-/var/lib/vw-docker}
VW_DOCKER_RUN=${VW_DOCKER_RUN:-/run/vw-docker}
VW_STARTED_DOCKERD=""  # the PID of the daemon we started (stopped by vw_stop_dockerd), empty if we use one that ran

vw_log() { printf '[docker] %s\n' "$*" >&2; }

# The client: BuildKit with `RUN --mount=type=secret` needs either buildx or a 20.10 client (which has BuildKit
# built in). A 23+ client without the buildx plugin silently falls back to the legacy builder, which cannot.
vw_pick_client() {
  local c major
  for c in ${DOCKER:-} /usr/bin/docker docker; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" buildx version >/dev/null 2>&1; then DOCKER=$c; return 0; fi
    major=$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then DOCKER=$c; return 0; fi
  done
  return 1
}

# Install what is missing with apt (root only): the daemon (docker.io) and debootstrap for the base image.
vw_apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  vw_log "installing $* (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
    && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

# Use a running daemon (DOCKER_HOST or the default socket); else, as root, start dockerd without touching the
# host's network: no bridge, no iptables rules, no ip_forward (containers run with --network none or host).
# Returns 1 with a reason on stderr when no daemon can be had.
vw_ensure_docker() {
  if ! vw_pick_client; then
    vw_apt_install docker.io || { vw_log "no docker client with BuildKit, and cannot install docker.io (needs root + apt)"; return 1; }
    vw_pick_client || { vw_log "no docker client with BuildKit after installing docker.io"; return 1; }
  fi
  if "$DOCKER" info >/dev/null 2>&1; then vw_log "using the running daemon ($("$DOCKER" context show 2>/dev/null || echo default))"; return 0; fi
  local sock="unix://$VW_DOCKER_RUN.sock"
  if DOCKER_HOST=$sock "$DOCKER" info >/dev/null 2>&1; then export DOCKER_HOST=$sock; vw_log "using the daemon at $sock"; return 0; fi
  if [ "$(id -u)" != 0 ]; then vw_log "no Docker daemon reachable, and starting one needs root"; return 1; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    vw_apt_install docker.io || { vw_log "dockerd is not installed and apt cannot install docker.io"; return 1; }
  fi
  mkdir -p "$VW_DOCKER_DATA" "$VW_DOCKER_RUN"
  local log="$VW_DOCKER_RUN.log"
  vw_log "starting dockerd (data $VW_DOCKER_DATA, socket $sock, log $log)"
  dockerd --data-root "$VW_DOCKER_DATA" --exec-root "$VW_DOCKER_RUN" --pidfile "$VW_DOCKER_RUN.pid" -H "$sock" \
    --bridge=none --iptables=false --ip-forward=false >"$log" 2>&1 &
  VW_STARTED_DOCKERD=$!
  export DOCKER_HOST=$sock
  local i
  for i in $(seq 1 60); do
    if "$DOCKER" info >/dev/null 2>&1; then vw_log "dockerd ready (pid $VW_STARTED_DOCKERD, ${i}s)"; return 0; fi
    if ! kill -0 "$VW_STARTED_DOCKERD" 2>/dev/null; then break; fi
    sleep 1
  done
  vw_log "dockerd did not come up; last lines of $log:"; tail -n 15 "$log" >&2
  vw_stop_dockerd
  return 1
}

# Stop the daemon we started (by its PID; its containerd child exits with it). A daemon we found is left alone.
vw_stop_dockerd() {
  [ -n "$VW_STARTED_DOCKERD" ] || return 0
  if [ "${VW_KEEP_DOCKERD:-0}" = 1 ]; then
    vw_log "leaving dockerd (pid $VW_STARTED_DOCKERD) running: export DOCKER_HOST=$DOCKER_HOST; stop it with kill $VW_STARTED_DOCKERD"
    return 0
  fi
  kill "$VW_STARTED_DOCKERD" 2>/dev/null || true
  local i
  for i in $(seq 1 30); do kill -0 "$VW_STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
  kill -0 "$VW_STARTED_DOCKERD" 2>/dev/null && { vw_log "dockerd $VW_STARTED_DOCKERD still running; sending KILL"; kill -9 "$VW_STARTED_DOCKERD" 2>/dev/null || true; }
  vw_log "stopped dockerd (pid $VW_STARTED_DOCKERD)"
  VW_STARTED_DOCKERD=""
}

# The base image: a registry's debian:bookworm-slim when BASE names one that is present or pullable, else one
# made here with debootstrap (no Docker Hub access needed).
vw_ensure_base() {
  if "$DOCKER" image inspect "$VW_BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  command -v debootstrap >/dev/null 2>&1 || vw_apt_install debootstrap || { vw_log "debootstrap is missing"; return 1; }
  bash "$(dirname "${BASH_SOURCE[0]}")/base-image.sh" "$VW_BASE_IMAGE"
}

# Build the image. Extra arguments go to `docker build` (e.g. --build-arg BAKE_MODELS=1).
vw_build() {
  local root ca ref
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  ref=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then ref="$ref-dirty"; fi
  # The host's CA bundle, for networks that intercept TLS: a BuildKit secret, mounted only while pip/bake run.
  ca=${VW_EXTRA_CA-/etc/ssl/certs/ca-certificates.crt}
  local extra=()  # secrets and build args
  if [ -n "$ca" ] && [ -s "$ca" ]; then extra=(--secret "id=extra_ca,src=$ca"); fi
  # The bake's hub: a mirror (a build arg: an address, not a secret) and a token file (a secret, never a layer).
  if [ -n "${HF_TOKEN_FILE:-}" ]; then
    [ -s "$HF_TOKEN_FILE" ] || { vw_log "HF_TOKEN_FILE=$HF_TOKEN_FILE does not exist or is empty"; return 1; }
    extra+=(--secret "id=hf_token,src=$HF_TOKEN_FILE")
  fi
  if [ -n "${HF_ENDPOINT:-}" ]; then extra+=(--build-arg "HF_ENDPOINT=$HF_ENDPOINT"); fi
  vw_log "building $VW_IMAGE from $root (base $VW_BASE_IMAGE, source $ref)"
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain "${extra[@]}" \
    --build-arg "BASE=$VW_BASE_IMAGE" --build-arg "VCS_REF=$ref" -t "$VW_IMAGE" "$@" "$root"
}
