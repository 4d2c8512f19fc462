#!/usr/bin/env bash
# From an act on this PC to the admin's alarm and e-mail, with the real
# agent: a private PostgreSQL and Redis, `mamori all` (release build) and a
# local SMTP server (aiosmtpd, which keeps nothing), then
# mamori-alarm-bench (banned programs started one after another). With
# --load RATE, simulated agents of other tenants send RATE events/s through
# the same services meanwhile (mamori-loadtest), to measure under load.
# Needs root (the agent's process collector).
# Usage: loadtest/alarm.sh [--load RATE] [mamori-alarm-bench arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
load=0
if [ "${1:-}" = --load ]; then
    load=$2
    shift 2
fi
. scripts/servers.sh
positive_int --load "$((load + 1))"
. loadtest/stack.sh alarm
[ -n "${MAMORI_SMTP_URL:-}" ] || log "no aiosmtpd (apt-get install python3-aiosmtpd): no e-mail figure"
if [ "$load" -gt 0 ]; then
    log "background load: $load events/s from 500 simulated PCs of 10 other tenants"
    "$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" --agents 500 --tenants 10 \
        --rate "$load" --duration 120 --no-raw >"$work/load.log" 2>&1 &
    bench_pids="$bench_pids $!"
    sleep 8
fi
stored() { "$(pg_bindir)/psql" "$MAMORI_DATABASE_URL" -qAtc "SELECT count(*) FROM events"; }
n0=$(stored); t0=$(date +%s.%N)
"$bin/mamori-alarm-bench" --ingest "http://127.0.0.1:$ingest_port" "$@"
n1=$(stored); t1=$(date +%s.%N)
python3 -c "import sys; n0,n1,t0,t1=map(float,sys.argv[1:]); print(f'meanwhile the services stored {(n1-n0)/(t1-t0):.0f} events/s (all tenants)')" "$n0" "$n1" "$t0" "$t1"
