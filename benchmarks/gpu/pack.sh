#!/usr/bin/env bash
# Build what benchmarks/gpu_run.py needs on a GPU machine that has Python 3.12, torch and no network:
#   .gpu/site.tar.xz     the Python packages that machine lacks (ComfyUI 0.33's and the worker's), installed
#                        here for CPython 3.12 manylinux x86_64 from pinned wheels
#   .gpu/comfyui.tar.xz  the ComfyUI checkout (never committed; .gpu/ is ignored through .git/info/exclude)
# Usage (repository root): benchmarks/gpu/pack.sh [REHEARSAL_DIR]   (default /opt/image-rehearsal)
# REHEARSAL_DIR is what scripts/rehearse-image.sh built: the image's Python layers with the image's pins
# (docker/pins.env). Its ComfyUI checkout travels, and every package that travels has the version that venv
# holds, so the benchmark runs the image's own stack; torch 2.11.0+cu130 is the device image's own.
#
# To fit the 64 MiB a device call may carry, four things are left out, none of which the benchmark touches:
#   comfyui-frontend-package (the browser UI; ComfyUI is started with --front-end-root on an empty folder),
#   comfy_kitchen's compiled CUDA/HIP kernels (int8 attention, fp8/fp4 quantisation; SD 1.5 in fp16 runs
#   PyTorch attention, and comfy_kitchen falls back to its Python backends),
#   botocore's service models other than S3/STS, and google-api-python-client's discovery documents other
#   than Drive v3 (the worker reads only those).
set -euo pipefail
REHEARSAL=${1:-/opt/image-rehearsal}
COMFYUI_DIR=$REHEARSAL/comfyui
PY=${PYTHON:-python3}
[ -d "$COMFYUI_DIR" ] && [ -x "$REHEARSAL/venv/bin/python" ] || {
  echo "no rehearsal in $REHEARSAL: run scripts/rehearse-image.sh first" >&2; exit 1; }
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
mkdir -p .gpu/wheels
rm -rf .gpu/site .gpu/site.tar.xz .gpu/comfyui.tar.xz

# The packages the device image lacks (ComfyUI 0.33's and the worker's), at the rehearsal's versions.
COMFY_NAMES="torchsde trampoline av comfy-kitchen comfy-aimdo alembic Mako SQLAlchemy kornia kornia_rs spandrel
  blake3 simpleeval pydantic pydantic_core annotated-types typing-inspection typing_extensions pydantic-settings
  python-dotenv"
WORKER_NAMES="websocket-client boto3 botocore s3transfer jmespath google-api-python-client google-auth
  google-auth-httplib2 httplib2 uritemplate google-api-core googleapis-common-protos proto-plus protobuf pyasn1
  pyasn1_modules cryptography cffi pycparser runpod aiohttp-retry backoff bcrypt paramiko PyNaCl tomli tomlkit
  tqdm-loggable"
freeze=$("$REHEARSAL/venv/bin/python" -m pip freeze --all 2>/dev/null)
pinned() {  # NAME==VERSION as the rehearsal's venv holds it (names compared as pip normalises them)
  local want; want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
  echo "$freeze" | awk -F'==' -v w="$want" '{n=tolower($1); gsub(/[_.]/,"-",n); if (n==w) print $1"=="$2}'
}
COMFY_WHEELS=""; WORKER_WHEELS=""
for name in $COMFY_NAMES; do COMFY_WHEELS="$COMFY_WHEELS $(pinned "$name")"; done
for name in $WORKER_NAMES; do WORKER_WHEELS="$WORKER_WHEELS $(pinned "$name")"; done
echo "carrying:$COMFY_WHEELS$WORKER_WHEELS"
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
rm -rf "$site" .gpu/wheels  # only the two archives travel
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
packed=$(du -cb .gpu/site.tar.xz .gpu/comfyui.tar.xz | tail -1 | cut -f1)
echo "site.tar.xz $(du -h .gpu/site.tar.xz | cut -f1), comfyui.tar.xz $(du -h .gpu/comfyui.tar.xz | cut -f1);" \
  "with the tracked tree $(( (tree + packed) / 1048576 )) MiB of the 64 MiB a call may carry"
