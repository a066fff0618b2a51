# syntax=docker/dockerfile:1.7
# ComfyUI serverless worker. Build (tokens as BuildKit secrets, never stored in a layer):
#   docker build --secret id=HF_TOKEN,env=HF_TOKEN -t comfy-worker .
# Older GPUs / drivers: --build-arg CUDA_VERSION=12.4.1 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
# See docs/image.md.

ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu${UBUNTU_VERSION}

# CUDA 12.8 wheels carry kernels for Blackwell (sm_100/sm_120) as well as Ampere, Ada and Hopper.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.7.1
ARG TORCHVISION_VERSION=0.22.1
ARG TORCHAUDIO_VERSION=2.7.1
ARG COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
ARG COMFYUI_REF=783545f689a0af730065994b46b382ae24844c99

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Why DL3008 is ignored: package versions differ per CUDA base image (a build argument); the base
# image tag pins the distribution release, and pinning exact apt versions would break every variant.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev git ca-certificates \
        libtcmalloc-minimal4t64 libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# One interpreter for ComfyUI, its custom nodes and the worker.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        "torchaudio==${TORCHAUDIO_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY docker/install-comfyui.sh /worker/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    /worker/docker/install-comfyui.sh "${COMFYUI_REPO}" "${COMFYUI_REF}" /comfyui

COPY requirements.txt /worker/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /worker/requirements.txt

# Build tooling first (changes rarely), so node and model layers survive edits to the worker itself.
ENV PYTHONPATH=/worker/src
COPY src/comfy_worker/__init__.py src/comfy_worker/settings.py src/comfy_worker/errors.py /worker/src/comfy_worker/
COPY src/comfy_worker/image/ /worker/src/comfy_worker/image/
COPY src/comfy_worker/models/ /worker/src/comfy_worker/models/

COPY snapshot/ /worker/snapshot/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m comfy_worker.image.snapshot restore --snapshot /worker/snapshot --comfyui-dir /comfyui \
        --python /opt/venv/bin/python --pinned-comfyui "${COMFYUI_REF}" \
    && python -m comfy_worker.image.volume folders --comfyui-dir /comfyui --out /comfyui/model_folders.json

COPY models.yaml docker/fetch-models.sh /worker/
RUN --mount=type=secret,id=HF_TOKEN --mount=type=secret,id=CIVITAI_TOKEN \
    /worker/fetch-models.sh /worker/models.yaml /comfyui/models

# test_input.json: `docker run IMAGE` without RunPod's environment runs it once (the runpod SDK's
# single-job mode) and exits 0 when the job succeeds; the smoke test runs exactly that.
COPY src/ /worker/src/
COPY handler.py test_input.json /worker/
COPY docker/smoke.sh /worker/docker/
RUN /worker/docker/smoke.sh

# tcmalloc: faster, less fragmenting host allocations for large model loads. PYTORCH_CUDA_ALLOC_CONF
# stays unset on purpose: ComfyUI then picks cudaMallocAsync itself on GPUs that support it.
ENV LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    COMFYUI_DIR=/comfyui \
    COMFYUI_PYTHON=/opt/venv/bin/python \
    COMFYUI_MODEL_FOLDERS=/comfyui/model_folders.json \
    MODELS_MANIFEST=/worker/models.yaml \
    NETWORK_VOLUME_PATH=/runpod-volume \
    LOG_LEVEL=INFO

WORKDIR /worker
CMD ["python", "-u", "handler.py"]
