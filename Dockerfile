# syntax=docker/dockerfile:1.7
# ComfyUI serverless worker. Build (tokens as BuildKit secrets, never stored in a layer):
#   docker build --secret id=HF_TOKEN,env=HF_TOKEN -t comfy-worker .
# Every pin (base image, Python, torch, ComfyUI) is in docker/pins.env; a --build-arg of the same name
# overrides it. scripts/rehearse-image.sh runs the same steps with the same scripts outside Docker.
# See docs/image.md.

# An ARG before FROM cannot read a file: this default repeats pins.env's BASE_IMAGE (a test keeps the two
# equal).
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${BASE_IMAGE}

# No defaults here: docker/pins.sh fills in every pin not given with --build-arg from docker/pins.env.
ARG PYTHON_VERSION
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ARG TORCHAUDIO_VERSION
ARG TORCH_INDEX_URL
ARG COMFYUI_REPO
ARG COMFYUI_REF
ARG COMFYUI_VERSION

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

COPY docker/pins.env docker/pins.sh /worker/docker/

# Why DL3008 is ignored: the base image tag pins the distribution release, and its security updates
# should reach a rebuild; the Python version itself is pinned (PYTHON_VERSION).
# hadolint ignore=DL3008
RUN . /worker/docker/pins.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" "python${PYTHON_VERSION}-dev" \
        git ca-certificates libtcmalloc-minimal4t64 libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv /opt/venv

# One interpreter for ComfyUI, its custom nodes and the worker.
COPY docker/install-torch.sh /worker/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    /worker/docker/install-torch.sh

COPY docker/install-comfyui.sh /worker/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    /worker/docker/install-comfyui.sh /comfyui

COPY requirements.txt /worker/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /worker/requirements.txt

# Build tooling first (changes rarely), so node and model layers survive edits to the worker itself.
ENV PYTHONPATH=/worker/src
# The modules the model step and the build tooling import, and only those (a test keeps the list complete).
COPY src/comfy_worker/__init__.py src/comfy_worker/settings.py src/comfy_worker/errors.py \
     src/comfy_worker/redaction.py src/comfy_worker/problems.py /worker/src/comfy_worker/
COPY src/comfy_worker/storage/__init__.py src/comfy_worker/storage/urlsafety.py /worker/src/comfy_worker/storage/
COPY src/comfy_worker/models/ /worker/src/comfy_worker/models/
COPY src/comfy_worker_build/ /worker/src/comfy_worker_build/

COPY snapshot/ /worker/snapshot/
RUN --mount=type=cache,target=/root/.cache/pip \
    . /worker/docker/pins.sh \
    && python -m comfy_worker_build.snapshot restore --snapshot /worker/snapshot --comfyui-dir /comfyui \
        --python /opt/venv/bin/python --pinned-comfyui "${COMFYUI_REF}" \
    && python -m comfy_worker_build.volume folders --comfyui-dir /comfyui --out /comfyui/model_folders.json

# The models manifest baked in: the repository's models.yaml by default, or a release variant's
# (--build-arg MODELS_MANIFEST_FILE=variants/<name>/models.yaml). Whatever its name it becomes
# /worker/models.yaml, where this step fetches its `build` entries and the worker reads its `start` and
# `on_demand` entries (MODELS_MANIFEST). Declared here, not at the top, so that every layer above is the same
# for every variant and shared between their images.
ARG MODELS_MANIFEST_FILE=models.yaml
COPY ${MODELS_MANIFEST_FILE} /worker/models.yaml
COPY docker/fetch-models.sh /worker/
RUN --mount=type=secret,id=HF_TOKEN --mount=type=secret,id=CIVITAI_TOKEN \
    /worker/fetch-models.sh /worker/models.yaml /comfyui/models

# ComfyUI and its custom nodes run as an unprivileged user that can write only ComfyUI's input, output, temp
# and user folders; the worker (root) keeps the secrets, the models and the network volume (docs/security.md).
RUN useradd --system --create-home --home-dir /home/comfyui --shell /usr/sbin/nologin comfyui \
    && mkdir -p /comfyui/input /comfyui/output /comfyui/temp /comfyui/user \
    && chown comfyui:comfyui /comfyui/input /comfyui/output /comfyui/temp /comfyui/user

# tcmalloc: faster, less fragmenting host allocations for large model loads. PYTORCH_CUDA_ALLOC_CONF
# stays unset on purpose: ComfyUI then picks cudaMallocAsync itself on GPUs that support it. Set before
# the smoke test so that it runs the worker as `docker run` will.
ENV LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    COMFYUI_DIR=/comfyui \
    COMFYUI_PYTHON=/opt/venv/bin/python \
    COMFYUI_MODEL_FOLDERS=/comfyui/model_folders.json \
    MODELS_MANIFEST=/worker/models.yaml \
    NETWORK_VOLUME_PATH=/runpod-volume \
    COMFYUI_USER=comfyui \
    LOG_LEVEL=INFO

# test_input.json: `docker run IMAGE` without RunPod's environment runs it once (the runpod SDK's
# single-job mode) and exits 0 when the job succeeds. workflows/: the deployed workflows, run by name
# (DEPLOYED_WORKFLOWS_DIR, relative to the worker's folder), checked at every start.
COPY src/comfy_worker/ /worker/src/comfy_worker/
COPY handler.py test_input.json /worker/
COPY workflows/ /worker/workflows/
COPY docker/smoke.sh /worker/docker/
RUN /worker/docker/smoke.sh

WORKDIR /worker
CMD ["python", "-u", "handler.py"]
