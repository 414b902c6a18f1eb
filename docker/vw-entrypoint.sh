#!/bin/sh
# The image's `vw` (installed as /usr/local/bin/vw, ahead of the venv's on PATH, so ENTRYPOINT ["vw"] runs it).
# On first use of an empty workspace it copies the project in (params.yaml, dvc.yaml, registries, sources), so
# `vw` finds its params.yaml there and every output lands in the workspace volume. Files already in the workspace
# are never overwritten: a workspace you mounted with your own params.yaml is used as it is.
set -eu
ws=${VW_WORKSPACE:-/workspace}
seed=${VW_SEED:-/opt/visual-words/project}

if [ -z "${VW_PARAMS:-}" ] && [ -d "$ws" ] && [ "$(pwd -P)" = "$(cd "$ws" && pwd -P)" ] && [ ! -e "$ws/params.yaml" ]; then
  if [ ! -w "$ws" ]; then
    echo "vw: the workspace $ws is not writable by uid $(id -u). Create the host folder before mounting it and" \
      "run with --user \"\$(id -u):\$(id -g)\" (or make it writable for uid $(id -u))." >&2
    exit 2
  fi
  cp -R -n "$seed/." "$ws/"
  echo "vw: seeded $ws with the visual-words project (source ${VW_SOURCE_COMMIT:-unknown})" >&2
fi
exec "${VW_EXEC:-/opt/venv/bin/vw}" "$@"
