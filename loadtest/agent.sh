#!/usr/bin/env bash
# Agent footprint benchmark: a private PostgreSQL and Redis, `mamori all`
# (release build), and a release `mamori-agent run` with every collector,
# enrolled in a new tenant. Measures the agent's CPU (from /proc, as a share
# of one core) and resident memory while this machine is idle, then while a
# program starts 5 and 50 times a second (a start and a stop event each:
# 10 and 100 events/s), then while 10 processes write 100 and 1,000 files a
# second in the watched directory (a tmpfs; each write an event), then
# 1,000 a second outside the watched directories but on a file system the
# agent watches (it drops them), and prints the events the server stored
# in each window (other programs on the machine add theirs). The servers'
# data is on a tmpfs of its own, as the server is not on the PC. Needs
# root (fanotify, the tmpfs).
# MAMORI_BENCH_WINDOW_S sets the length of each window (default 60).
# Extra arguments go to `mamori-agent run` (e.g. --sysfs-root DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh
window=${MAMORI_BENCH_WINDOW_S:-60}
positive_int MAMORI_BENCH_WINDOW_S "$window"
# The servers' data on a file system of its own (a tmpfs): on a PC the
# server is elsewhere, and PostgreSQL's writes on the file system the agent
# watches would be file operations it has to look at and drop.
servers_fs=$(mktemp -d /tmp/mamori-bench-servers.XXXXXX)
mount -t tmpfs -o size=4g tmpfs "$servers_fs"
export MAMORI_WORK_PARENT=$servers_fs
bench_final='umount -l "$servers_fs" 2>/dev/null; rmdir "$servers_fs" 2>/dev/null || true'
# Until stack.sh sets its own trap (which runs bench_final last).
trap 'eval "$bench_final"' EXIT
. loadtest/stack.sh agent
cargo build --release --locked -p mamori-agent
psql="$(pg_bindir)/psql"

tenant=$("$bin/mamori" tenant create agent-bench --json | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
token=$("$bin/mamori" token create --tenant "$tenant" --json | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
MAMORI_ENROLLMENT_TOKEN=$token "$bin/mamori-agent" enroll \
    --server "http://127.0.0.1:$ingest_port" --state-dir "$work/agent" >/dev/null
mkdir -p "$work/home"
mount -t tmpfs -o size=64m tmpfs "$work/home"
# A watched directory on the root file system too (as /home is on most
# PCs): the agent marks that whole file system and drops what happens
# outside the directory (everything else this machine writes meanwhile).
rootdir=$(mktemp -d /var/tmp/mamori-bench-root.XXXXXX)
bench_cleanup='umount -l "$work/home" 2>/dev/null || true; rm -rf "$rootdir"'
mkdir -p "$rootdir/rootwatch" "$rootdir/elsewhere"
RUST_LOG=${RUST_LOG:-warn} "$bin/mamori-agent" run --state-dir "$work/agent" \
    --watch-dir "$work/home" --watch-dir "$rootdir/rootwatch" "$@" >"$work/agent.log" 2>&1 &
agent=$!
bench_pids="$agent"
stored() {
    "$psql" "$MAMORI_DATABASE_URL" -qAt \
        -c "SELECT set_config('mamori.tenant_id', '$tenant', false)" \
        -c "SELECT count(*) FROM events" | tail -n 1
}
# CPU ticks (user + system) of the agent so far.
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$agent/status"; }

# measure LABEL: one window; prints CPU, RSS, peak RSS and events stored.
measure() {
    local t0 t1 s0 s1 e0 e1
    e0=$(stored)
    t0=$(ticks)
    s0=$(date +%s.%N)
    sleep "$window"
    t1=$(ticks)
    s1=$(date +%s.%N)
    sleep 2 # the window's last batch reaches PostgreSQL
    e1=$(stored)
    kill -0 "$agent" || { cat "$work/agent.log"; exit 1; }
    awk -v l="$1" -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v s0="$s0" -v s1="$s1" \
        -v rss="$(kib VmRSS)" -v hwm="$(kib VmHWM)" -v ev="$((e1 - e0))" 'BEGIN {
        d = s1 - s0
        printf "%-22s cpu %.3f %% of one core, RSS %.1f MiB (peak %.1f MiB), %.1f events/s stored\n",
            l, 100 * t / hz / d, rss / 1024, hwm / 1024, ev / d
    }'
}

# execs PER_SECOND: starts /bin/true at that rate until killed.
execs() {
    exec /usr/bin/python3 -c '
import subprocess, sys, time
period = 1 / float(sys.argv[1])
t = time.monotonic()
while True:
    subprocess.run(["/bin/true"])
    t += period
    time.sleep(max(0, t - time.monotonic()))
' "$1"
}

log "agent started; warming up"
sleep 10
echo "== $("$bin/mamori-agent" --version), every collector, $window s per window =="
measure "idle"
for rate in 5 50; do
    execs "$rate" &
    gen=$!
    bench_pids="$agent $gen"
    sleep 2
    measure "$((rate * 2)) events/s offered"
    kill "$gen"
    wait "$gen" 2>/dev/null || true
    bench_pids="$agent"
done

# files PER_SECOND [DIR]: 10 processes write that many files a second in
# all (500 names each, rewritten in turn) in DIR (default the watched
# tmpfs) until killed.
files() {
    exec /usr/bin/python3 -c '
import os, sys, time
rate, home = float(sys.argv[1]) / 10, sys.argv[2]
for k in range(10):
    if os.fork() == 0:
        d = os.path.join(home, f"p{k}")
        os.makedirs(d, exist_ok=True)
        period, t, i = 1 / rate, time.monotonic(), 0
        while True:
            with open(os.path.join(d, f"f{i % 500}.txt"), "w") as f:
                f.write("x" * 100)
            i += 1
            t += period
            time.sleep(max(0, t - time.monotonic()))
os.wait()
' "$1" "${2:-$work/home}"
}

for phase in "100 $work/home" "1000 $work/home" "1000 $rootdir/elsewhere"; do
    set -- $phase
    files "$1" "$2" &
    gen=$!
    bench_pids="$agent $gen"
    sleep 2
    if [ "$2" = "$work/home" ]; then
        measure "$1 file events/s offered"
    else
        measure "$1 unwatched writes/s"
    fi
    pkill -P "$gen" 2>/dev/null || true
    kill "$gen" 2>/dev/null || true
    wait "$gen" 2>/dev/null || true
    bench_pids="$agent"
done
sleep 2
echo "events about the unwatched directory: $("$psql" "$MAMORI_DATABASE_URL" -qAt \
    -c "SELECT set_config('mamori.tenant_id', '$tenant', false)" \
    -c "SELECT count(*) FROM events WHERE subject LIKE '$rootdir/elsewhere/%'" | tail -n 1)"
