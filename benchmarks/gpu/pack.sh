#!/usr/bin/env bash
# Build what benchmarks/gpu_run.py needs on a GPU machine that has Python 3.12, torch and no network:
#   .gpu/site.tar.xz     the Python packages that machine lacks (ComfyUI 0.33's and the worker's), installed
#                        here for CPython 3.12 manylinux x86_64 from pinned wheels
#   .gpu/comfyui.tar.xz  the ComfyUI checkout (never committed; .gpu/ is ignored through .git/info/exclude)
# Usage (repository root): benchmarks/gpu/pack.sh [COMFYUI_DIR]   (default /opt/comfyui)
#
# To fit the 64 MiB a device call may carry, four things are left out, none of which the benchmark touches:
#   comfyui-frontend-package (the browser UI; ComfyUI is started with --front-end-root on an empty folder),
#   comfy_kitchen's compiled CUDA/HIP kernels (int8 attention, fp8/fp4 quantisation; SD 1.5 in fp16 runs
#   PyTorch attention, and comfy_kitchen falls back to its Python backends),
#   botocore's service models other than S3/STS, and google-api-python-client's discovery documents other
#   than Drive v3 (the worker reads only those).
set -euo pipefail
COMFYUI_DIR=${1:-/opt/comfyui}
PY=${PYTHON:-python3}
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
mkdir -p .gpu/wheels
rm -rf .gpu/site .gpu/site.tar.xz .gpu/comfyui.tar.xz

# Versions: those ComfyUI 0.33.0 was installed with, and requirements.txt's for the worker.
COMFY_WHEELS="torchsde==0.2.6 trampoline==0.1.2 av==18.1.0 comfy-kitchen==0.2.31 comfy-aimdo==0.4.13
  alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 kornia==0.9.0 kornia_rs==0.2.0 spandrel==0.4.2 blake3==1.0.11
  simpleeval==1.0.8 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing_extensions==4.16.0 pydantic-settings==2.16.3 python-dotenv==1.2.4"
WORKER_WHEELS="websocket-client==1.9.2 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0
  google-api-python-client==2.202.0 google-auth==2.63.0 google-auth-httplib2==0.4.4 httplib2==0.32.1
  uritemplate==4.2.0 google-api-core==2.44.0 googleapis-common-protos==1.76.0 proto-plus==1.29.0
  protobuf==7.36.2 pyasn1==0.6.5 pyasn1_modules==0.4.2 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12"
PLATFORM="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux_2_12_x86_64 --platform manylinux2014_x86_64 --platform manylinux2010_x86_64
  --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64"
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps $PLATFORM -d .gpu/wheels $COMFY_WHEELS $WORKER_WHEELS
# shellcheck disable=SC2086
$PY -m pip install -q --no-deps --no-compile $PLATFORM --target .gpu/site .gpu/wheels/*.whl

site=.gpu/site
rm -rf "$site/bin" "$site"/comfy_kitchen/backends/cuda/_C.abi3.so "$site"/comfy_kitchen/backends/hip/_C.abi3.so
find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts -exec rm -rf {} +
find "$site/googleapiclient/discovery_cache/documents" -type f ! -name drive.v3.json -delete
tar -C "$site" -cf - . | xz -9 -T0 >.gpu/site.tar.xz
tar -C "$COMFYUI_DIR" --exclude=.git --exclude=__pycache__ --exclude=./input \
  --exclude=./output --exclude=./user -cf - . | xz -9 -T0 >.gpu/comfyui.tar.xz
rm -rf "$site"
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
packed=$(du -cb .gpu/site.tar.xz .gpu/comfyui.tar.xz | tail -1 | cut -f1)
echo "site.tar.xz $(du -h .gpu/site.tar.xz | cut -f1), comfyui.tar.xz $(du -h .gpu/comfyui.tar.xz | cut -f1);" \
  "with the tracked tree $(( (tree + packed) / 1048576 )) MiB of the 64 MiB a call may carry"
