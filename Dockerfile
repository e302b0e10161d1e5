# syntax=docker/dockerfile:1
# The model server image: CUDA runtime + torch + service/, with the model baked in at build time so a
# pod starts from the image alone (HF_HUB_OFFLINE=1; no Hub dependency, no download on scale-out).
#
#   docker build --build-arg MODEL_ID=thenlper/gte-large-zh --build-arg MODEL_REVISION=<40-hex commit> .
#
# Base: nvidia/cuda 12.8.1 runtime on Ubuntu 24.04, pinned by digest (the index digest that public
# Dockerfiles pin for this tag; it could not be re-resolved from the build machine, which has no
# registry access: check with `docker buildx imagetools inspect nvidia/cuda:12.8.1-runtime-ubuntu24.04`
# when upgrading). torch's cu128 wheels match CUDA 12.8.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867

# ---- base: the Python every stage shares (the venv is copied between stages, so paths must match)
FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Not version-pinned on purpose: the base is pinned by digest, and python3 from noble-updates
# carries security fixes that a rebuild should pick up.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- build: a virtualenv with torch (CUDA 12.8 wheels) and the serving extra
FROM base AS build
# Same reason as above (a build-only package, not in the final image).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install ".[serve]"

# ---- model: fetched once at build time into a Hugging Face cache laid out for offline use
# MODEL_REVISION: the gte-large-zh commit that MTEB's model registry pins (embeddings-benchmark/mteb,
# gte_models.py) and the stacks' gpu-inference:modelRevision; the build fails if it does not exist.
FROM build AS model
ARG MODEL_ID=thenlper/gte-large-zh
ARG MODEL_REVISION=64c364e579de308104a9b2c170ca009502f4f545
ENV HF_HOME=/opt/hf
RUN /opt/venv/bin/python -c "import sys; from huggingface_hub import snapshot_download; \
print(snapshot_download(sys.argv[1], revision=sys.argv[2], \
allow_patterns=['*.json', '*.txt', '*.safetensors', '1_Pooling/*', 'tokenizer*', 'vocab*']))" \
    "${MODEL_ID}" "${MODEL_REVISION}"

# ---- runtime: no compilers, no pip cache, non-root
FROM base AS runtime
ARG MODEL_ID=thenlper/gte-large-zh
ARG MODEL_REVISION=64c364e579de308104a9b2c170ca009502f4f545
RUN useradd --system --uid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=model --chown=10001:10001 /opt/hf /opt/hf
ENV PATH=/opt/venv/bin:${PATH} \
    HF_HOME=/opt/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    EMBED_MODEL=${MODEL_ID} \
    EMBED_MODEL_REVISION=${MODEL_REVISION} \
    EMBED_HOST=0.0.0.0 \
    EMBED_PORT=8000
WORKDIR /home/app
USER 10001
# 8000: the API (contract.SERVICE_PORT); 9464: /metrics for Prometheus (contract.METRICS_PORT,
# served when EMBED_METRICS_PORT is set, as the Kubernetes Deployment does).
EXPOSE 8000 9464
# Liveness, not readiness: /ready is 503 while draining, which must not mark the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "service"]
