#!/usr/bin/env bash
# Rehearse the image's Python layers on this machine, without Docker: the same steps as the Dockerfile, in
# the same order, with the same scripts (copied into DIR/worker as the Dockerfile copies them into /worker)
# and the same pins (docker/pins.env; a variable already set wins, as a --build-arg does). Then run the
# build's smoke test (docker/smoke.sh) and the README's main command against the ComfyUI it built, check
# the job's output image, and write DIR/figures.json.
#
# Usage: scripts/rehearse-image.sh [--fresh | --reuse] [DIR]      (DIR: /opt/image-rehearsal)
#   DIR must not exist (or be empty) unless one of:
#   --fresh   remove DIR (only a folder this script made) and start over: the figures are a first build's
#   --reuse   keep DIR/venv and DIR/pip-cache, redo every step (pip finds most already installed; the
#             download figure then counts only what is new)
#
#   python$PYTHON_VERSION must be on PATH (or REHEARSAL_PYTHON names the interpreter).
#   COMFYUI_SOURCE: git repository to clone ComfyUI from instead of COMFYUI_REPO (e.g. a local mirror).
#   MODELS_MANIFEST_FILE: the models manifest to bake in, as the build argument of that name (default
#             models.yaml; a release variant's is variants/<name>/models.yaml, whose `build` entries are then
#             downloaded). Every variant's manifest is validated either way, without downloading anything.
#
# Stands in for the image:  /opt/venv -> DIR/venv   /comfyui -> DIR/comfyui   /worker -> DIR/worker
# Not rehearsed (docs/image.md says how each is checked instead): the CUDA base image and its apt layer
# (Ubuntu's python$PYTHON_VERSION; here the one on PATH), the clone from GitHub, the GPU.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
mode=new
while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) mode=fresh; shift ;;
        --reuse) mode=reuse; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "rehearse-image.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
dir="${1:-/opt/image-rehearsal}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
marker="$dir/.image-rehearsal"

if [ -n "$(ls -A "$dir")" ]; then
    if [ "$mode" = new ]; then
        echo "rehearse-image.sh: $dir already exists; pass --fresh to start over or --reuse to keep its" \
            "venv and pip cache" >&2
        exit 2
    fi
    if [ ! -f "$marker" ]; then
        echo "rehearse-image.sh: $dir is not a folder this script made (no $marker); not touching it" >&2
        exit 2
    fi
    if [ "$mode" = fresh ]; then
        find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    else
        find "$dir" -mindepth 1 -maxdepth 1 ! -name venv ! -name pip-cache ! -name .image-rehearsal \
            -exec rm -rf {} +
    fi
fi
touch "$marker"
mkdir -p "$dir/logs"
: > "$dir/steps.tsv"

# The pins, exactly as the image's steps read them.
. "$repo/docker/pins.sh"
# The manifest the image bakes in: the Dockerfile's build argument of the same name, with its default.
MODELS_MANIFEST_FILE="${MODELS_MANIFEST_FILE:-models.yaml}"
python_bin="${REHEARSAL_PYTHON:-python$PYTHON_VERSION}"
if ! "$python_bin" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$PYTHON_VERSION'" 2>/dev/null; then
    echo "rehearse-image.sh: $python_bin is not a Python $PYTHON_VERSION interpreter; put one on PATH" \
        "or set REHEARSAL_PYTHON" >&2
    exit 2
fi
comfyui_source="${COMFYUI_SOURCE:-$COMFYUI_REPO}"

step() {  # step NAME COMMAND...: run, log to DIR/logs/NAME.log, record its seconds
    local name="$1" started status
    shift
    started="$(date +%s.%N)"
    echo "== $name"
    status=0
    "$@" > "$dir/logs/$name.log" 2>&1 || status=$?
    printf '%s\t%s\n' "$name" "$(awk "BEGIN {print $(date +%s.%N) - $started}")" >> "$dir/steps.tsv"
    if [ "$status" != 0 ]; then
        tail -n 60 "$dir/logs/$name.log" >&2
        echo "rehearse-image.sh: step $name failed ($status); log: $dir/logs/$name.log" >&2
        exit "$status"
    fi
    tail -n 2 "$dir/logs/$name.log" | sed 's/^/   /'
}

copy_in() {  # copy_in SOURCE... DEST: the Dockerfile's COPY, /worker standing for DIR/worker
    local dest="${*: -1}" source target
    target="$dir${dest}"
    for source in "${@:1:$#-1}"; do
        if [ -d "$repo/$source" ]; then
            mkdir -p "$target"
            # What .dockerignore keeps out of the build context.
            tar -C "$repo/$source" --exclude=__pycache__ --exclude='*.pyc' -cf - . | tar -C "$target" -xf -
        elif [[ "$dest" == */ ]]; then
            mkdir -p "$target"
            cp "$repo/$source" "$target"
        else  # a file destination, as COPY takes one: the file gets that name
            mkdir -p "$(dirname "$target")"
            cp "$repo/$source" "$target"
        fi
    done
}

validate_manifests() {  # every release variant's models.yaml, read by the worker's own loader
    local manifest
    for manifest in "$repo"/variants/*/models.yaml; do
        echo "${manifest#"$repo/"}:"
        python -m comfy_worker.models list --manifest "$manifest"
    done
}

# A local source that lacks some blobs of the pinned commit (a snapshot whose largest files are absent)
# cannot be checked out. Then a stand-in commit on top of the pinned one, without those files, is cloned
# instead; DIR/comfyui-files-left-out.txt and the figures name the files.
source_repo="" source_ref=""
prepare_source() {
    local source="$1" objects standin tree commit sha
    source_repo="$source" source_ref="$COMFYUI_REF"
    : > "$dir/comfyui-files-left-out.txt"
    [ -d "$source" ] || return 0
    git -C "$source" ls-tree -r "$COMFYUI_REF" > "$dir/comfyui-tree.txt"
    for sha in $(awk '$2 == "blob" {print $3}' "$dir/comfyui-tree.txt" \
            | git -C "$source" cat-file --batch-check | awk '$2 == "missing" {print $1}'); do
        awk -F'\t' -v sha="$sha" '$1 ~ sha {print $2}' "$dir/comfyui-tree.txt" >> "$dir/comfyui-files-left-out.txt"
    done
    [ -s "$dir/comfyui-files-left-out.txt" ] || return 0
    objects="$(cd "$source" && cd "$(git rev-parse --git-path objects)" && pwd)"
    standin="$dir/comfyui-source.git"
    git init --quiet --bare "$standin"
    echo "$objects" > "$standin/objects/info/alternates"
    # update-index wants a work tree even for removals from the index alone; give it an empty one.
    mkdir -p "$standin/empty-work-tree"
    GIT_INDEX_FILE="$standin/rehearsal-index" git --git-dir="$standin" read-tree "$COMFYUI_REF"
    tr '\n' '\0' < "$dir/comfyui-files-left-out.txt" \
        | GIT_INDEX_FILE="$standin/rehearsal-index" xargs -0 git --git-dir="$standin" --work-tree="$standin/empty-work-tree" \
            update-index --force-remove
    tree="$(GIT_INDEX_FILE="$standin/rehearsal-index" git --git-dir="$standin" write-tree)"
    commit="$(git --git-dir="$standin" -c user.name=rehearsal -c user.email=rehearsal@localhost \
        commit-tree "$tree" -p "$COMFYUI_REF" -m "$COMFYUI_REF without files the source lacks")"
    git --git-dir="$standin" update-ref refs/heads/rehearsal "$commit"
    echo "   $comfyui_source lacks $(wc -l < "$dir/comfyui-files-left-out.txt") file(s) of $COMFYUI_REF;" \
        "cloning the stand-in commit $commit without them"
    source_repo="$standin" source_ref="$commit"
}

image_layers() {
    # The image's pip has no configuration: this machine's (extra indexes, local wheels, constraints) must
    # not decide what gets installed, and every download goes through a fresh cache that is measured.
    local var
    for var in $(compgen -e); do
        case "$var" in
            PIP_CERT | PIP_DEFAULT_TIMEOUT) ;;
            PIP_* | PYTHONPATH | VIRTUAL_ENV) unset "$var" ;;
        esac
    done
    export PIP_CONFIG_FILE=/dev/null PIP_CACHE_DIR="$dir/pip-cache" PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PYTHONUNBUFFERED=1

    # FROM + apt: the interpreter and the venv (Ubuntu's python$PYTHON_VERSION in the image).
    copy_in docker/pins.env docker/pins.sh /worker/docker/
    step venv "$python_bin" -m venv "$dir/venv"
    export VIRTUAL_ENV="$dir/venv" PATH="$dir/venv/bin:$PATH"

    copy_in docker/install-torch.sh /worker/docker/
    step torch "$dir/worker/docker/install-torch.sh"

    copy_in docker/install-comfyui.sh /worker/docker/
    prepare_source "$comfyui_source"
    step comfyui env COMFYUI_REPO="$source_repo" COMFYUI_REF="$source_ref" \
        "$dir/worker/docker/install-comfyui.sh" "$dir/comfyui"

    copy_in requirements.txt /worker/
    step requirements pip install -r "$dir/worker/requirements.txt"

    export PYTHONPATH="$dir/worker/src"
    copy_in src/comfy_worker/__init__.py src/comfy_worker/settings.py src/comfy_worker/errors.py \
        src/comfy_worker/redaction.py src/comfy_worker/problems.py /worker/src/comfy_worker/
    copy_in src/comfy_worker/storage/__init__.py src/comfy_worker/storage/urlsafety.py \
        /worker/src/comfy_worker/storage/
    copy_in src/comfy_worker/models/ /worker/src/comfy_worker/models/
    copy_in src/comfy_worker_build/ /worker/src/comfy_worker_build/

    copy_in snapshot/ /worker/snapshot/
    step snapshot python -m comfy_worker_build.snapshot restore --snapshot "$dir/worker/snapshot" \
        --comfyui-dir "$dir/comfyui" --python "$dir/venv/bin/python" --pinned-comfyui "$COMFYUI_REF"
    step volume python -m comfy_worker_build.volume folders --comfyui-dir "$dir/comfyui" \
        --out "$dir/comfyui/model_folders.json"

    copy_in "${MODELS_MANIFEST_FILE}" /worker/models.yaml
    copy_in docker/fetch-models.sh /worker/
    step models "$dir/worker/fetch-models.sh" "$dir/worker/models.yaml" "$dir/comfyui/models"
    # Not a step of the Dockerfile: the other variants' manifests are only read here, never downloaded.
    step manifests validate_manifests

    # The image's runtime ENV, set before its smoke test (LD_PRELOAD only where tcmalloc is installed).
    local tcmalloc=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
    [ -f "$tcmalloc" ] && export LD_PRELOAD="$tcmalloc"
    export COMFYUI_DIR="$dir/comfyui" COMFYUI_PYTHON="$dir/venv/bin/python" \
        COMFYUI_MODEL_FOLDERS="$dir/comfyui/model_folders.json" MODELS_MANIFEST="$dir/worker/models.yaml" \
        NETWORK_VOLUME_PATH=/runpod-volume LOG_LEVEL=INFO

    copy_in src/comfy_worker/ /worker/src/comfy_worker/
    copy_in handler.py test_input.json /worker/
    copy_in workflows/ /worker/workflows/
    copy_in docker/smoke.sh /worker/docker/
    step smoke env WORKER_DIR="$dir/worker" PYTHON="$dir/venv/bin/python" "$dir/worker/docker/smoke.sh"

    step pip-check pip check
}

echo "Rehearsing the image's Python layers in $dir (torch $TORCH_VERSION, ComfyUI $COMFYUI_VERSION," \
    "Python $PYTHON_VERSION; ComfyUI from $comfyui_source; models from $MODELS_MANIFEST_FILE)"
rx_bytes() {  # bytes received on every interface but loopback so far
    awk -F'[: ]+' 'NR > 2 && $2 != "lo" {sum += $3} END {printf "%.0f", sum}' /proc/net/dev
}
rx_before="$(rx_bytes)"
( image_layers )
rx_layers="$(awk "BEGIN {printf \"%.0f\", $(rx_bytes) - $rx_before}")"

# The README's main command, run as a user runs it (their environment, the repository's .venv), against
# the ComfyUI just built.
cd "$repo"
step run-job env COMFYUI_DIR="$dir/comfyui" COMFYUI_PYTHON="$dir/venv/bin/python" \
    ./scripts/run-job.sh --out "$dir/outputs"
step check-image "$dir/venv/bin/python" scripts/rehearsal.py check-image "$dir/outputs"

echo "== figures ($dir/figures.json)"
"$dir/venv/bin/python" scripts/rehearsal.py figures --dir "$dir" \
    --extra "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
    --extra "machine=$(nproc)-core $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME")" \
    --extra "gpu=$(command -v nvidia-smi > /dev/null && nvidia-smi -L | head -n 1 || echo none)" \
    --extra "python=$("$dir/venv/bin/python" -c 'import platform; print(platform.python_version())')" \
    --extra "mode=$mode" \
    --extra "network_received_bytes=$rx_layers" \
    --extra "comfyui_source=$comfyui_source" \
    --extra "comfyui_version=$COMFYUI_VERSION" \
    --extra "comfyui_ref=$COMFYUI_REF" \
    --extra "models_manifest_file=$MODELS_MANIFEST_FILE" \
    --extra "comfyui_files_left_out=$(paste -sd, "$dir/comfyui-files-left-out.txt")"
echo "rehearse-image.sh: the image's Python layers, smoke test and README command all passed"
