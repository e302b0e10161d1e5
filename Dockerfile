# syntax=docker/dockerfile:1
# The model server image: Python + torch (CUDA 13.0 wheels) + service/, with the model baked in at build time
# so a pod starts from the image alone (HF_HUB_OFFLINE=1; no Hub dependency, no download on scale-out).
#
#   docker build --build-arg MODEL_ID=thenlper/gte-large-zh --build-arg MODEL_REVISION=<40-hex commit> .
#
# Base: python:3.11-slim-trixie, pinned by the index digest that docker-library/repo-info records for the tag
# (repos/python/remote/3.11-slim-trixie.md: Python 3.11.15 on Debian 13; linux/amd64 45.5 MB compressed).
# Python 3.11 is the one CI tests the server on (infra/versions.py PYTHON_VERSION; `make check` compares them).
# Re-resolve it with `docker buildx imagetools inspect python:3.11-slim-trixie` when upgrading.
#
# torch: 2.13.0 from PyTorch's cu130 index. PyTorch builds 2.13 for CUDA 12.6 and 13.0 (13.2 experimental; no
# 12.8 since 2.12: pytorch/pytorch RELEASE.md, Release Compatibility Matrix). CUDA 13.0 needs an NVIDIA driver
# >= 580.65.06, and the EKS AL2023 NVIDIA AMI of Kubernetes 1.35 ships 580.159.03 (infra/versions.py; `make check`
# compares the two).
#
# No CUDA base image: the torch cu130 wheels install every CUDA user-space library torch loads (cuBLAS, cuDNN,
# NCCL, ... as nvidia-*-cu13 wheels), so an nvidia/cuda runtime base would ship a second copy (~2 GB compressed)
# that every new GPU node pulls before the pod can start. What the wheels cannot bring is the driver (libcuda):
# the NVIDIA container toolkit of the EKS NVIDIA AMI mounts it into a container that has a GPU, for the driver
# capabilities NVIDIA_DRIVER_CAPABILITIES asks for (unset means `utility` only, no CUDA; NVIDIA Container
# Toolkit docs, "Specialized Configurations with Docker", Driver Capabilities).
ARG PYTHON_IMAGE=python:3.11-slim-trixie@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

# ---- base: the Python every stage shares (the venv is copied between stages, so paths must match)
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- deps: torch and the serving dependencies, without our code. The largest layer (~4 GB) changes only with
# the torch pin or pyproject.toml, so a code change neither rebuilds it nor makes nodes pull it again.
FROM base AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt

# ---- app: the service package alone, outside the venv (its own small layer)
FROM deps AS app
COPY README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-deps --target /opt/app .

# ---- model: fetched once at build time into a Hugging Face cache laid out for offline use; depends on the
# dependencies only, so a code change does not download the model again.
# MODEL_REVISION: the gte-large-zh commit that MTEB's model registry pins (embeddings-benchmark/mteb,
# gte_models.py) and the stacks' gpu-inference:modelRevision; the build fails if it does not exist.
FROM deps AS model
ARG MODEL_ID=thenlper/gte-large-zh
ARG MODEL_REVISION=64c364e579de308104a9b2c170ca009502f4f545
ENV HF_HOME=/opt/hf
RUN /opt/venv/bin/python -c "import sys; from huggingface_hub import snapshot_download; \
print(snapshot_download(sys.argv[1], revision=sys.argv[2], \
allow_patterns=['*.json', '*.txt', '*.safetensors', '1_Pooling/*', 'tokenizer*', 'vocab*']))" \
    "${MODEL_ID}" "${MODEL_REVISION}"

# ---- runtime: no compilers, no pip cache, non-root. Layers from the least to the most often changed:
# dependencies, model, code.
FROM base AS runtime
ARG MODEL_ID=thenlper/gte-large-zh
ARG MODEL_REVISION=64c364e579de308104a9b2c170ca009502f4f545
RUN useradd --system --uid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app
# jemalloc instead of glibc's malloc, preloaded into the server (and whatever else runs here): under steady
# load glibc's arenas keep growing (the soak of `make bench-hostile`: RSS +32.6 MB/min over 10 minutes with
# glibc, +0.2 with jemalloc, same throughput) and keep what one huge request took (1.6 GB vs 0.97 GB after).
# Debian's libjemalloc2 (trixie: 5.3.0-3) installs /usr/lib/<multiarch triplet>/libjemalloc.so.2 (`dpkg -L
# libjemalloc2`); the link gives LD_PRELOAD one path on amd64 and arm64 (`uname -m` names the triplet's CPU).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2=5.3.0-3 \
    && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so \
    && rm -rf /var/lib/apt/lists/*
COPY --from=deps /opt/venv /opt/venv
COPY --from=model --chown=10001:10001 /opt/hf /opt/hf
COPY --from=app /opt/app /opt/app
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/opt/app \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
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
