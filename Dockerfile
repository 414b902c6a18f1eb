# The visual-words artifact: the pinned environment (CUDA 13 torch from PyPI, which also runs on CPU), the project,
# and with --build-arg BAKE_MODELS=1 the paper's four checkpoints baked in at their pinned commits, checked against
# the original publishers' sha256 (src/visual_words/registry/pins.yaml) and locked (models.lock.json).
#
#   bash docker/build.sh [--build-arg BAKE_MODELS=1]     builds it here (see README "Container" for plain docker)
#   docker run --rm --network none visual-words:dev reproduce --profile smoke
#   docker run --gpus all --shm-size=2g -v "$PWD/out":/workspace visual-words:dev reproduce --profile paper
#
# No registry but the package indexes is needed: BASE is a local debootstrap'd bookworm (docker/base-image.sh)
# where Docker Hub is unreachable. For networks that intercept TLS, pass a CA bundle as a build secret
# (--secret id=extra_ca,src=…); it is mounted only while pip and the bake run, never stored in a layer.
# No `# syntax=` line on purpose: it makes BuildKit pull its frontend from Docker Hub.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Bookworm's python3 is 3.11, the version requirements.lock was resolved for. Not pinned to Debian versions: the
# base is a dated snapshot and bookworm point releases drop superseded versions from the mirror; what the study
# depends on is pinned by requirements.lock.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The pinned environment (≈7 GB, most of it torch's CUDA runtime wheels). Its own layer, first: it changes rarely.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/usr/local/bin:/opt/venv/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY requirements.lock /opt/visual-words/requirements.lock
RUN --mount=type=secret,id=extra_ca,required=false \
    if [ -s /run/secrets/extra_ca ]; then export PIP_CERT=/run/secrets/extra_ca; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /opt/visual-words/requirements.lock

# The paper's checkpoints, baked before the project is copied in so a code change does not download them again.
# Only the lock module and the registry are mounted (their change alone re-bakes). Without BAKE_MODELS the cache
# stays empty: the smoke profile needs no hub model, and a paper run stops at the lock check with instructions.
# A mirror of the hub: --build-arg HF_ENDPOINT=URL (an address, not a secret: build args show in the image history).
# A token for gated repos or the mirror: --secret id=hf_token,src=FILE, mounted for this step only and read by
# huggingface_hub through HF_TOKEN_PATH, so it is never in a layer, an ENV or the history (docker/build.sh passes
# $HF_TOKEN_FILE and $HF_ENDPOINT). Whoever serves the files, the bake accepts only the publisher's bytes.
ENV HF_HUB_CACHE=/opt/models/hub \
    VW_MODELS_LOCK=/opt/models/models.lock.json
ARG BAKE_MODELS=0
ARG HF_ENDPOINT=https://huggingface.co
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=secret,id=hf_token,required=false \
    --mount=type=bind,source=src/visual_words/__init__.py,target=/tmp/bake/visual_words/__init__.py \
    --mount=type=bind,source=src/visual_words/io.py,target=/tmp/bake/visual_words/io.py \
    --mount=type=bind,source=src/visual_words/registry,target=/tmp/bake/visual_words/registry \
    --mount=type=bind,source=src/visual_words/models/__init__.py,target=/tmp/bake/visual_words/models/__init__.py \
    --mount=type=bind,source=src/visual_words/models/lock.py,target=/tmp/bake/visual_words/models/lock.py \
    --mount=type=bind,source=src/visual_words/models/hub_cache.py,target=/tmp/bake/visual_words/models/hub_cache.py \
    --mount=type=bind,source=src/visual_words/models/pins.py,target=/tmp/bake/visual_words/models/pins.py \
    --mount=type=bind,source=src/visual_words/models/families,target=/tmp/bake/visual_words/models/families \
    --mount=type=bind,source=src/visual_words/errors.py,target=/tmp/bake/visual_words/errors.py \
    mkdir -p /opt/models/hub \
 && if [ "$BAKE_MODELS" = 1 ]; then \
      if [ -s /run/secrets/extra_ca ]; then \
        export SSL_CERT_FILE=/run/secrets/extra_ca REQUESTS_CA_BUNDLE=/run/secrets/extra_ca HF_HUB_DISABLE_XET=1; \
      fi; \
      if [ -s /run/secrets/hf_token ]; then export HF_TOKEN_PATH=/run/secrets/hf_token; fi; \
      HF_HUB_OFFLINE=0 HF_HUB_DISABLE_TELEMETRY=1 PYTHONPATH=/tmp/bake PYTHONDONTWRITEBYTECODE=1 \
        python -m visual_words.models.lock bake \
        --endpoint "$HF_ENDPOINT" --cache /opt/models/hub --lock /opt/models/models.lock.json \
      && rm -rf /opt/models/hub/.locks; \
    fi

# The project: installed into the venv, and kept whole as the seed of the workspace (docker/vw-entrypoint.sh).
COPY . /opt/visual-words/project
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation /opt/visual-words/project \
 && rm -rf /opt/visual-words/project/build /opt/visual-words/project/src/*.egg-info \
 && install -m 0755 /opt/visual-words/project/docker/vw-entrypoint.sh /usr/local/bin/vw \
 && useradd --uid 1000 --user-group --create-home --home-dir /home/vw --shell /bin/bash vw \
 && chmod 1777 /home/vw \
 && mkdir -p /workspace \
 && chown vw:vw /workspace

# Offline and quiet by default; every cache on a path any uid can write (`docker run --user …` included), and
# Ray's temp dir short (its socket paths must stay under 107 bytes).
ENV HOME=/home/vw \
    USER=vw \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 \
    DVC_NO_ANALYTICS=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    RAY_TMPDIR=/tmp/ray \
    VW_WORKSPACE=/workspace

# Numeric, so orchestrators can verify non-root (runAsNonRoot) without reading /etc/passwd.
USER 1000:1000
WORKDIR /workspace
VOLUME ["/workspace"]
# `vw ui --host 0.0.0.0` inside, with -p 5000:5000, serves the MLflow UI to the host.
EXPOSE 5000

ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="visual-words" \
      org.opencontainers.image.description="Visual concept tokens across models (arXiv 2406.07506): the artifact" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}"
ENV VW_SOURCE_COMMIT=${VCS_REF}

ENTRYPOINT ["vw"]
CMD ["--help"]
