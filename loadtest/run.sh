#!/usr/bin/env bash
# Runs the event-spine benchmark on this machine: a private PostgreSQL and
# Redis, `mamori all` (release build), mamori-loadtest at the peak rate (with
# the raw insert baseline right after it, on the same database), then again
# at half of the peak for latency, and stops everything.
# Extra arguments go to every loadtest run (e.g. --agents 2000 --duration 30).
# MAMORI_BENCH_SPINE_ONLY=1 measures ingest and writer alone (see stack.sh).
# MAMORI_BENCH_ROUNDS=N repeats the peak run N times and reports medians:
# single runs on a shared 2-core host swing by 15 % for unchanged code.
# Every run gets fresh servers, so none inherits the last one's tables,
# autovacuum or checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
# With --alarm-every, a banned start more than 20 s after the last one on
# the same device opens a new alarm (and sends an e-mail) instead of
# counting into the open one: most of them do, the worst case for alerting.
export MAMORI_ALARM_WINDOW_S=${MAMORI_ALARM_WINDOW_S:-20}
. scripts/servers.sh
rounds=${MAMORI_BENCH_ROUNDS:-1}
positive_int MAMORI_BENCH_ROUNDS "$rounds"
results=$(mktemp -d /tmp/mamori-bench.XXXXXX)
trap 'rm -rf "$results"' EXIT

# on_fresh_stack ARGS...: one loadtest run against servers of its own.
on_fresh_stack() (
    . loadtest/stack.sh load
    "$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" "$@"
)

for r in $(seq 1 "$rounds"); do
    printf '\033[1m==> peak run %s of %s\033[0m\n' "$r" "$rounds" >&2
    on_fresh_stack "$@" | tee "$results/peak-$r.txt"
    awk -v r="$r" '/^committed rate/ {c = $3} /^raw batched insert/ {w = $4} /^end-to-end \/ raw/ {q = $4}
        END {printf "%d %d %d %s\n", r, c, w, (q == "" ? "-" : q)}' "$results/peak-$r.txt" >>"$results/rounds.txt"
done
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
if [ "$rounds" -gt 1 ]; then
    echo "== $rounds peak runs: committed events/s, raw rows/s, end-to-end / raw =="
    awk '{printf "run %d: %d, %d, %s\n", $1, $2, $3, $4}' "$results/rounds.txt"
    printf 'median: %s, %s, %s\n' \
        "$(awk '{print $2}' "$results/rounds.txt" | median)" \
        "$(awk '{print $3}' "$results/rounds.txt" | median)" \
        "$(awk '$4 != "-" {print $4}' "$results/rounds.txt" | median)"
fi
peak=$(awk '{print $2}' "$results/rounds.txt" | median)
peak=${peak%.*}
if [ -n "$peak" ] && [ "$peak" -gt 0 ]; then
    half=$((peak / 2))
    printf '\033[1m==> latency run at 50%% of peak (%s events/s)\033[0m\n' "$half" >&2
    on_fresh_stack --rate "$half" --no-raw "$@"
fi
