#!/bin/sh
# GPU worker entrypoint: ComfyUI starts only when the models the lock names are present.
#
#   1. REELFORGE_FETCH_ON_START=1: fetch what is missing first (fetch_models.py; sizes and sha256 checked).
#   2. fetch_models.py --verify (--deep with REELFORGE_VERIFY_DEEP=1): any model missing or of the wrong
#      size -> exit 1 without starting ComfyUI (the orchestrator never sees a worker that lacks its models).
#   3. REELFORGE_LORA_SHARED_DIR (the shared LoRA folder as this worker mounts it, docs/lora.md): must be a
#      directory; it is added to ComfyUI's loras through --extra-model-paths-config. REELFORGE_MODELS_DIR (a
#      volume elsewhere than $COMFYUI_DIR/models): verified there, and given to ComfyUI the same way as its
#      default models folder (every folder the lock names, and loras).
#   4. Writes the ready marker healthcheck.sh looks for, then execs ComfyUI (extra arguments are passed on).
#
# REELFORGE_TEMPLATES="image_to_video music" limits fetching and verifying to those templates' models.
set -eu

COMFYUI_DIR="${COMFYUI_DIR:-/opt/ComfyUI}"
MODELS_DIR="${REELFORGE_MODELS_DIR:-$COMFYUI_DIR/models}"
LOCK="${REELFORGE_LOCK:-/opt/reelforge/lock.yaml}"
FETCH_SCRIPT="${REELFORGE_FETCH_SCRIPT:-/opt/reelforge/fetch_models.py}"
PYTHON="${PYTHON:-python}"
READY_FILE="${REELFORGE_READY_FILE:-/tmp/reelforge-ready}"
STATE_DIR="${REELFORGE_STATE_DIR:-/tmp}"
LISTEN="${COMFYUI_LISTEN:-0.0.0.0}"
PORT="${COMFYUI_PORT:-8188}"

log() { printf 'reelforge-entrypoint: %s\n' "$*" >&2; }

rm -f "$READY_FILE"

only=""
if [ -n "${REELFORGE_TEMPLATES:-}" ]; then
    only="--only ${REELFORGE_TEMPLATES}"
fi
deep=""
if [ "${REELFORGE_VERIFY_DEEP:-0}" = "1" ]; then
    deep="--deep"
fi

set -f  # template names are split on spaces below, never globbed
if [ "${REELFORGE_FETCH_ON_START:-0}" = "1" ]; then
    log "fetching missing models into $MODELS_DIR"
    # shellcheck disable=SC2086  # $only is a list of words on purpose
    if ! "$PYTHON" "$FETCH_SCRIPT" --lock "$LOCK" --models-dir "$MODELS_DIR" $only; then
        log "model download failed: not starting ComfyUI"
        exit 1
    fi
fi

# shellcheck disable=SC2086  # $only and $deep are lists of words on purpose
if ! "$PYTHON" "$FETCH_SCRIPT" --lock "$LOCK" --models-dir "$MODELS_DIR" --verify $deep $only; then
    log "not ready: models are missing or do not match $LOCK (see NOTREADY lines above);"
    log "fill $MODELS_DIR with fetch_models.py or set REELFORGE_FETCH_ON_START=1"
    exit 1
fi
set +f

set -- --listen "$LISTEN" --port "$PORT" "$@"
paths="$STATE_DIR/reelforge-extra-model-paths.yaml"
: > "$paths"
if [ "$MODELS_DIR" != "$COMFYUI_DIR/models" ]; then
    # The models were verified there, so ComfyUI must load them from there too (first, as its default).
    escaped=$(printf '%s' "$MODELS_DIR" | sed "s/'/''/g")
    printf "reelforge_models:\n  base_path: '%s'\n  is_default: true\n" "$escaped" >> "$paths"
    for folder in $(sed -n 's/^ *- folder: *//p' "$LOCK" | sort -u) loras; do
        printf "  %s: %s\n" "$folder" "$folder" >> "$paths"
    done
    log "models folder: $MODELS_DIR"
fi
if [ -n "${REELFORGE_LORA_SHARED_DIR:-}" ]; then
    case "$REELFORGE_LORA_SHARED_DIR" in
        /*) ;;
        *) log "REELFORGE_LORA_SHARED_DIR must be an absolute path: $REELFORGE_LORA_SHARED_DIR"; exit 1 ;;
    esac
    if [ ! -d "$REELFORGE_LORA_SHARED_DIR" ] || [ ! -r "$REELFORGE_LORA_SHARED_DIR" ]; then
        log "REELFORGE_LORA_SHARED_DIR=$REELFORGE_LORA_SHARED_DIR is not a readable directory (mount the shared LoRA folder)"
        exit 1
    fi
    escaped=$(printf '%s' "$REELFORGE_LORA_SHARED_DIR" | sed "s/'/''/g")
    printf "reelforge:\n  loras: '%s'\n" "$escaped" >> "$paths"
    log "shared LoRA folder: $REELFORGE_LORA_SHARED_DIR"
fi
if [ -s "$paths" ]; then
    set -- "$@" --extra-model-paths-config "$paths"
fi

: > "$READY_FILE"
cd "$COMFYUI_DIR"
log "models verified; starting ComfyUI on $LISTEN:$PORT"
exec "$PYTHON" main.py "$@"
