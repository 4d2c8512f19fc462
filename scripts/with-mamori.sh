#!/usr/bin/env bash
# Runs a command against a real `mamori all` (every service, the console if
# built) on a fresh database of its own, then stops it and drops the
# database. Used by the console's browser tests and the API's
# property-based run. Needs the PostgreSQL and Redis scripts/test.sh
# started (MAMORI_TEST_DATABASE_URL, MAMORI_TEST_REDIS_URL) and the built
# `mamori` (MAMORI_BIN).
#
# Usage: scripts/with-mamori.sh COMMAND [ARGS...]
# The command sees MAMORI_URL (the gateway), MAMORI_MAIL_DIR (where mail is
# dropped) and MAMORI_INGEST_ADDR. With MAMORI_KEEP_LOG=FILE the services'
# log is kept there.
set -euo pipefail
: "${MAMORI_TEST_DATABASE_URL:?set by scripts/test.sh}"
: "${MAMORI_TEST_REDIS_URL:?set by scripts/test.sh}"
bin=${MAMORI_BIN:?the mamori binary}
root=$(cd "$(dirname "$0")/.." && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/mamori-run.XXXXXX)
db="mamori_run_$(date +%s)_$$"
server=${MAMORI_TEST_DATABASE_URL%/*}
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    if [ -n "${MAMORI_KEEP_LOG:-}" ]; then cp "$work/mamori.log" "$MAMORI_KEEP_LOG"; fi
    rm -rf "$work"
}
trap cleanup EXIT
psql -q "$server/postgres" -c "CREATE DATABASE $db" >/dev/null

port=$(free_port)
export MAMORI_DATABASE_URL="$server/$db"
export MAMORI_REDIS_URL="${MAMORI_TEST_REDIS_URL%/}/${MAMORI_REDIS_DB:-255}"
redis-cli -u "$MAMORI_REDIS_URL" FLUSHDB >/dev/null
export MAMORI_GATEWAY_ADDR="127.0.0.1:$port"
export MAMORI_PUBLIC_URL="http://127.0.0.1:$port"
export MAMORI_INGEST_ADDR="127.0.0.1:$(free_port)"
for v in INGEST_OPS WRITER_OPS GATEWAY_OPS ALERTING_OPS POLICY POLICY_OPS; do
    export "MAMORI_${v}_ADDR=127.0.0.1:0"
done
export MAMORI_KEY_ENCRYPTION_KEY_FILE="$work/kek"
export MAMORI_MAIL_DIR="$work/mail"
if [ -f "$root/console/dist/index.html" ]; then
    export MAMORI_CONSOLE_DIR="$root/console/dist"
fi
# Every caller comes from 127.0.0.1.
export MAMORI_API_AUTH_RATE=1000 MAMORI_API_AUTH_BURST=1000 MAMORI_API_IP_RATE=10000 MAMORI_API_IP_BURST=10000
export MAMORI_DB_MAX_CONNECTIONS=${MAMORI_DB_MAX_CONNECTIONS:-8}
"$bin" migrate >/dev/null
RUST_LOG=${RUST_LOG:-warn} "$bin" all >"$work/mamori.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/api/v1/openapi.json', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$work/mamori.log" >&2; exit 1; }
    sleep 0.2
done
export MAMORI_URL="http://127.0.0.1:$port"
if ! "$@"; then
    echo "--- mamori all's log (last 50 lines):" >&2
    tail -50 "$work/mamori.log" >&2
    exit 1
fi
