#!/usr/bin/env bash
# The Windows agent's footprint under Wine (Wine is not Windows: its loader
# and DLLs are in the figures): a private PostgreSQL and Redis and `mamori
# all` (loadtest/stack.sh), and the release `mamori-agent.exe`, stripped as
# the MSI ships it, enrolled in a new tenant in a fresh Wine prefix and run
# with the process and file collectors. Measures its CPU (from /proc, as a
# share of one core) and resident memory while idle, then while a loop
# writes 10 files a second in its watched folder (10 events/s), and prints
# the events the server stored.
# MAMORI_BENCH_WINDOW_S sets the length of each window (default 60);
# MAMORI_AGENT_EXE=PATH measures that .exe instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh
window=${MAMORI_BENCH_WINDOW_S:-60}
positive_int MAMORI_BENCH_WINDOW_S "$window"
. loadtest/stack.sh windows-agent
. scripts/wine-prefix.sh
exe=${MAMORI_AGENT_EXE:-}
if [ -z "$exe" ]; then
    log "building mamori-agent.exe (release, x86_64-pc-windows-gnu)"
    cargo build --release --locked -p mamori-agent --target x86_64-pc-windows-gnu
    exe=$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/release/mamori-agent.exe
fi
cp "$exe" "$work/mamori-agent.exe"
x86_64-w64-mingw32-strip --strip-debug "$work/mamori-agent.exe"
wine_prefix "$work/wine"
psql="$(pg_bindir)/psql"

tenant=$("$bin/mamori" tenant create windows-bench --json | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
token=$("$bin/mamori" token create --tenant "$tenant" --json | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
MAMORI_ENROLLMENT_TOKEN=$token wine "$work/mamori-agent.exe" enroll \
    --server "http://127.0.0.1:$ingest_port" --state-dir 'C:\mamori-state' >/dev/null
mkdir -p "$work/wine/drive_c/watched"
wine "$work/mamori-agent.exe" run --state-dir 'C:\mamori-state' --collectors process,files \
    --watch-dir 'C:\watched' >"$work/agent.log" 2>&1 &
agent=$!
bench_pids="$bench_pids $agent"
sleep 15
kill -0 "$agent" || { cat "$work/agent.log"; exit 1; }

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$agent/status"; }
stored() { "$psql" "$MAMORI_DATABASE_URL" -Atc "SELECT count(*) FROM events WHERE kind = 20"; }
report() { # NAME TICKS_BEFORE SECONDS
    local used=$(($(ticks) - $2))
    printf '%-24s cpu %5.2f %% of a core   rss %s MiB\n' "$1" \
        "$(echo "$used * 100 / $hz / $3" | bc -l)" "$(rss_mib)"
}

log "idle for ${window}s"
t0=$(ticks)
sleep "$window"
report "idle" "$t0" "$window"

log "10 files a second for ${window}s"
t0=$(ticks)
start=$(date +%s.%N)
n=$((window * 10))
for i in $(seq 1 "$n"); do
    echo "file $i" >"$work/wine/drive_c/watched/f-$i.txt"
    sleep 0.1
done
took=$(echo "$(date +%s.%N) - $start" | bc -l)
report "10 file events/s" "$t0" "$took"
sleep 5
echo "file_create events stored: $(stored) of $n written"
