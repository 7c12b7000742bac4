#!/bin/sh
# Starts the authenticating proxy (Caddyfile beside this script) only with a usable REELFORGE_COMFY_TOKEN:
# unset or empty would make the "Bearer <token>" match trivial; Caddy's header matcher treats a leading or
# trailing "*" as a wildcard and "{...}" as a placeholder, so only token68 characters without those are accepted.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
token="${REELFORGE_COMFY_TOKEN:-}"
if [ "${#token}" -lt 16 ]; then
    echo "reelforge-proxy: REELFORGE_COMFY_TOKEN must be set (16 characters or more); refusing to start" >&2
    exit 1
fi
case "$token" in
    *[!A-Za-z0-9._~+/=-]*)
        echo "reelforge-proxy: REELFORGE_COMFY_TOKEN may only use A-Z a-z 0-9 . _ ~ + / = -; refusing to start" >&2
        exit 1
        ;;
esac
# Without a TLS snippet and without an explicit address, Caddy would serve plain HTTP on :8443 and the token
# would cross the network in clear: say which it is (a DNS name: automatic HTTPS; http://...: TLS ends in front).
tls_dir="${REELFORGE_PROXY_TLS_DIR:-/etc/reelforge-proxy/tls.d}"
if [ -z "${REELFORGE_PROXY_ADDRESS:-}" ] && ! ls "$tls_dir"/*.caddy > /dev/null 2>&1; then
    echo "reelforge-proxy: put a tls snippet in $tls_dir or set REELFORGE_PROXY_ADDRESS; refusing plain HTTP" >&2
    exit 1
fi
exec "${CADDY:-caddy}" run --config "${REELFORGE_PROXY_CADDYFILE:-$here/Caddyfile}" --adapter caddyfile
