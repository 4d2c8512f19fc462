#!/usr/bin/env bash
# Gateway benchmark: a private PostgreSQL (with auto_explain loaded) and
# Redis, `mamori ingest` + `mamori writer`, and `mamori gateway` pinned to
# one core. Signs a company up, loads its operation log with the load
# generator (default 10 million events from 1000 simulated PCs, dated over
# the last 30 days) and its alarms (default one per 200 events, written as
# the alerting service writes them, spread over the same 30 days), then
# measures login, refresh, GET /api/v1/devices, the violation calendar and
# log searches, and prints the PostgreSQL plans of the searches.
# Usage: loadtest/gateway.sh [--events N] [--alarms N] [--concurrency N] [--duration S]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

events=10000000
alarms=
concurrency=16
duration=10
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events=$2; shift 2 ;;
        --alarms) alarms=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
ensure_servers_installed
log "building (release)"
cargo build --release --locked -p mamori -p mamori-loadtest
bin=$CARGO_TARGET_DIR/release

MAMORI_PG_EXTRA_OPTS="-c shared_preload_libraries=auto_explain" \
    start_private_servers gwbench
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; stop_private_servers' EXIT
ingest_port=$(free_port)
gateway_port=$(free_port)
export MAMORI_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_REDIS_URL="redis://127.0.0.1:$redis_port"
export MAMORI_INGEST_ADDR="127.0.0.1:$ingest_port"
export MAMORI_GATEWAY_ADDR="127.0.0.1:$gateway_port"
export MAMORI_PUBLIC_URL="http://127.0.0.1:$gateway_port"
export MAMORI_INGEST_OPS_ADDR="127.0.0.1:0" MAMORI_WRITER_OPS_ADDR="127.0.0.1:0" MAMORI_GATEWAY_OPS_ADDR="127.0.0.1:0"
export MAMORI_KEY_ENCRYPTION_KEY_FILE="$work/kek"
# The benchmark is the only client: lift the per-address limits.
export MAMORI_API_IP_RATE=1000000 MAMORI_API_IP_BURST=1000000
export MAMORI_API_AUTH_RATE=1000000 MAMORI_API_AUTH_BURST=1000000
export MAMORI_API_TENANT_RATE=1000000 MAMORI_API_TENANT_BURST=1000000
export RUST_LOG=${RUST_LOG:-warn}
"$bin/mamori" migrate
"$bin/mamori" writer >"$work/writer.log" 2>&1 & pids+=($!)
"$bin/mamori" ingest >"$work/ingest.log" 2>&1 & pids+=($!)
if command -v taskset >/dev/null; then
    taskset -c 0 "$bin/mamori" gateway >"$work/gateway.log" 2>&1 & pids+=($!)
else
    log "taskset not found: the gateway is not pinned to one core"
    "$bin/mamori" gateway >"$work/gateway.log" 2>&1 & pids+=($!)
fi
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$gateway_port/api/v1/openapi.json', timeout=1)" 2>/dev/null && break
    sleep 0.2
done

"$bin/mamori-gateway-bench" --gateway "http://127.0.0.1:$gateway_port" setup >"$work/account.json"
tenant=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tenant_id'])" "$work/account.json")
token=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['enrollment_token'])" "$work/account.json")
"$bin/mamori" tenant set-limit "$tenant" 100000 >/dev/null

log "loading $events events from 1000 simulated PCs, dated over 30 days"
"$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" --enroll-token "$token" \
    --agents 1000 --events "$events" --spread-days 30 --rate 25000 --duration 600 --no-raw
alarms=${alarms:-$((events / 200))}
log "writing $alarms alarms over the same 30 days"
psql "$MAMORI_DATABASE_URL" -qc "
    WITH d AS (SELECT array_agg(id) AS ids FROM devices WHERE tenant_id = '$tenant'),
         c AS (SELECT ARRAY['environment_change', 'new_app', 'banned_app', 'after_hours',
                            'confidential_folder', 'mass_print', 'banned_web', 'device_control',
                            'unauthorized_pc'] AS names)
    INSERT INTO alarms (tenant_id, id, category, device_id, os_user, summary, first_at, last_at, status)
    SELECT '$tenant', gen_random_uuid(), c.names[1 + i % 9], d.ids[1 + i % array_length(d.ids, 1)],
           'sato', 'bench alarm ' || i, t, t, CASE WHEN i % 10 = 0 THEN 'open' ELSE 'acknowledged' END
    FROM d, c, generate_series(1, $alarms) AS i,
         LATERAL (SELECT now() - random() * interval '30 days' + i * interval '0 s' AS t) AS x"
log "building the search indexes of the finished days (what the writer does hourly)"
time psql "$MAMORI_DATABASE_URL" -qAtc "SELECT mamori_index_event_partitions(current_date) AS partitions_indexed"
log "VACUUM ANALYZE events"
psql "$MAMORI_DATABASE_URL" -qc "VACUUM ANALYZE events" >/dev/null

log "gateway figures (gateway on core 0)"
"$bin/mamori-gateway-bench" --gateway "http://127.0.0.1:$gateway_port" run --account "$work/account.json" \
    --concurrency "$concurrency" --duration "$duration" --explain-database-url "$MAMORI_DATABASE_URL"

log "plans of the searches (auto_explain, one pass)"
python3 - "$work/pg.log" <<'PY'
import re, sys
# Each auto_explain entry starts on a line with "LOG:  duration:" and runs
# until the next line that starts a new log entry (a timestamp).
entry, entries = None, []
for line in open(sys.argv[1], errors="replace"):
    if "LOG:  duration:" in line:
        entry = [line]
        entries.append(entry)
    elif re.match(r"^\d{4}-\d\d-\d\d ", line):
        entry = None
    elif entry is not None:
        entry.append(line)
shown = 0
for e in entries:
    text = "".join(e)
    if "FROM events e WHERE" in text:
        print(text.rstrip()[:6000])
        print("-" * 80)
        shown += 1
if not shown:
    print("no plans found in the PostgreSQL log (is auto_explain loaded?)")
PY
