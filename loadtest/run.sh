#!/usr/bin/env bash
# Runs the event-spine benchmark on this machine: a private PostgreSQL and
# Redis, `mamori all` (release build), then mamori-loadtest twice — at the
# peak rate, and at half of the peak for latency — and stops everything.
# Extra arguments go to both loadtest runs (e.g. --agents 2000 --duration 30).
# MAMORI_BENCH_SPINE_ONLY=1 measures ingest and writer alone (see stack.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# With --alarm-every, a banned start more than 20 s after the last one on
# the same device opens a new alarm (and sends an e-mail) instead of
# counting into the open one: most of them do, the worst case for alerting.
export MAMORI_ALARM_WINDOW_S=${MAMORI_ALARM_WINDOW_S:-20}
. loadtest/stack.sh load

log "peak run"
"$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" "$@" | tee "$work/peak.txt"
peak=$(awk "/^committed rate/ {print int(\$3)}" "$work/peak.txt")
if [ -n "$peak" ] && [ "$peak" -gt 0 ]; then
    half=$((peak / 2))
    log "latency run at 50% of peak ($half events/s)"
    "$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" --rate "$half" --no-raw "$@"
fi
