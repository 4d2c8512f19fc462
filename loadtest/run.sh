#!/usr/bin/env bash
# Runs the event-spine benchmark on this machine: a private PostgreSQL and
# Redis, `mamori all` (release build), then mamori-loadtest twice — at the
# peak rate, and at half of the peak for latency — and stops everything.
# Extra arguments go to both loadtest runs (e.g. --agents 2000 --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
ensure_servers_installed
log "building (release)"
cargo build --release --locked -p mamori -p mamori-loadtest
bin=$CARGO_TARGET_DIR/release

start_private_servers load
mamori_pid=
trap '[ -n "$mamori_pid" ] && kill "$mamori_pid" 2>/dev/null; stop_private_servers' EXIT
ingest_port=$(free_port)
export MAMORI_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_REDIS_URL="redis://127.0.0.1:$redis_port"
export MAMORI_INGEST_ADDR="127.0.0.1:$ingest_port"
export MAMORI_INGEST_OPS_ADDR="127.0.0.1:0"
export MAMORI_WRITER_OPS_ADDR="127.0.0.1:0"
export MAMORI_GATEWAY_ADDR="127.0.0.1:0"
export MAMORI_GATEWAY_OPS_ADDR="127.0.0.1:0"
export MAMORI_ALERTING_OPS_ADDR="127.0.0.1:0"
export MAMORI_KEY_ENCRYPTION_KEY_FILE="$work/kek"
export MAMORI_DB_MAX_CONNECTIONS=${MAMORI_DB_MAX_CONNECTIONS:-12}
"$bin/mamori" migrate
RUST_LOG=${RUST_LOG:-warn} "$bin/mamori" all >"$work/mamori.log" 2>&1 &
mamori_pid=$!
for _ in $(seq 1 100); do
    grep -q "mamori is running" "$work/mamori.log" && break
    kill -0 "$mamori_pid" 2>/dev/null || { cat "$work/mamori.log"; exit 1; }
    sleep 0.2
done

log "peak run"
"$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" "$@" | tee "$work/peak.txt"
peak=$(awk "/^committed rate/ {print int(\$3)}" "$work/peak.txt")
if [ -n "$peak" ] && [ "$peak" -gt 0 ]; then
    half=$((peak / 2))
    log "latency run at 50% of peak ($half events/s)"
    "$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" --rate "$half" --no-raw "$@"
fi
