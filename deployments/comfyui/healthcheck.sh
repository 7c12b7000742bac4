#!/bin/sh
# Readiness of a GPU worker (Docker HEALTHCHECK, Kubernetes readinessProbe exec): healthy only when
# entrypoint.sh verified the models, they are all still present (a stat per file: a volume that went
# away fails it), and ComfyUI answers /system_stats on loopback.
set -eu

COMFYUI_DIR="${COMFYUI_DIR:-/opt/ComfyUI}"
MODELS_DIR="${REELFORGE_MODELS_DIR:-$COMFYUI_DIR/models}"
LOCK="${REELFORGE_LOCK:-/opt/reelforge/lock.yaml}"
FETCH_SCRIPT="${REELFORGE_FETCH_SCRIPT:-/opt/reelforge/fetch_models.py}"
PYTHON="${PYTHON:-python}"
READY_FILE="${REELFORGE_READY_FILE:-/tmp/reelforge-ready}"
PORT="${COMFYUI_PORT:-8188}"

if [ ! -f "$READY_FILE" ]; then
    echo "not ready: the entrypoint has not verified the models" >&2
    exit 1
fi
only=""
if [ -n "${REELFORGE_TEMPLATES:-}" ]; then
    only="--only ${REELFORGE_TEMPLATES}"
fi
set -f
# shellcheck disable=SC2086  # $only is a list of words on purpose
if ! "$PYTHON" "$FETCH_SCRIPT" --lock "$LOCK" --models-dir "$MODELS_DIR" --verify $only > /dev/null; then
    echo "not ready: models missing" >&2
    exit 1
fi
set +f
exec "$PYTHON" -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/system_stats", timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:
    print(f"not ready: ComfyUI does not answer: {exc}", file=sys.stderr)
    sys.exit(1)
' "$PORT"
