#!/usr/bin/env bash
# Profiles one peak run of the spine benchmark: the stack of run.sh (or the
# spine alone with MAMORI_BENCH_SPINE_ONLY=1), mamori-loadtest at full rate
# for 30 s, and in the middle `perf record` of the whole machine (10 s,
# frame pointers: the split between PostgreSQL, Redis, mamori and the load
# generator) and then of the mamori process alone (5 s, DWARF call graphs:
# where mamori's time goes). Prints the split; the recordings stay in
# $PROFILE_DIR (default /tmp/mamori-profile) for `perf report -i`.
# Needs perf (Debian's linux-perf) and root or kernel.perf_event_paranoid <= 1.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
out=${PROFILE_DIR:-/tmp/mamori-profile}
mkdir -p "$out"
. loadtest/stack.sh load
(
    sleep 10
    perf record -a -g -F 199 -o "$out/machine.data" -- sleep 10 >"$out/record.log" 2>&1
    perf record --call-graph dwarf,16384 -F 199 -p "$mamori_pid" -o "$out/mamori.data" -- sleep 5 >>"$out/record.log" 2>&1
) &
profiler=$!
"$bin/mamori-loadtest" --ingest "http://127.0.0.1:$ingest_port" --duration 30 --no-raw "$@"
wait "$profiler"
perf report -i "$out/machine.data" --sort comm,dso --stdio --no-children -g none >"$out/machine.txt" 2>"$out/report.log" || true
perf report -i "$out/mamori.data" --children --sort sym --stdio -g none >"$out/mamori.txt" 2>>"$out/report.log" || true
log "CPU by process and object, whole machine ($out/machine.txt)"
grep -v -e '^#' -e '^$' "$out/machine.txt" | head -15 || true
log "mamori's own time, inclusive ($out/mamori.txt)"
grep -E 'add_entry$|insert_rows|DeviceStream::run|ProstDecoder|Alerting> \(inlined\)|encode_to_vec<|validate_batch$|sink::.*append' "$out/mamori.txt" \
    | cut -c1-140 | head -20 || true
