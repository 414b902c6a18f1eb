#!/usr/bin/env bash
# Build the artifact image here: finds or starts a Docker daemon, makes the base image if missing, builds.
#   bash docker/build.sh                               the image without weights (smoke profile)
#   bash docker/build.sh --build-arg BAKE_MODELS=1     with the paper's checkpoints baked in and locked (needs the hub)
# env: VW_IMAGE (tag, default visual-words:dev), VW_BASE_IMAGE, VW_EXTRA_CA (CA bundle secret; "" for none),
#      HF_TOKEN_FILE (a file holding a hub token, passed as a build secret: never stored in the image),
#      HF_ENDPOINT (a mirror of the hub for the bake, passed as a build arg), DOCKER (the client).
#   HF_ENDPOINT=https://mirror.example HF_TOKEN_FILE=~/.cache/huggingface/token bash docker/build.sh --build-arg BAKE_MODELS=1
# A daemon started here is stopped again when the build ends (images stay in its data root, /var/lib/vw-docker);
# VW_KEEP_DOCKERD=1 leaves it running and prints the DOCKER_HOST to use.
set -euo pipefail
# shellcheck source=docker/lib.sh
source "$(dirname "$0")/lib.sh"
vw_ensure_docker
trap vw_stop_dockerd EXIT
vw_ensure_base
vw_build "$@"
"$DOCKER" image ls "$VW_IMAGE"
