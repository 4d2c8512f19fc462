#!/usr/bin/env bash
# The console's figures: the first route's JavaScript (gzipped), first
# paint and time to a drawn dashboard on loopback in a cold Chromium, and
# scrolling the operation log through 10,000 events. Builds Mamori
# (release) and the console, starts a private PostgreSQL and Redis and a
# real `mamori all`, loads a company's log with simulated PCs, and runs
# loadtest/console-bench.mjs in Debian's Chromium.
# Usage: loadtest/console.sh [--events N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

export MAMORI_BENCH_EVENTS=10000 MAMORI_BENCH_RUNS=10
while [ $# -gt 0 ]; do
    case "$1" in
        --events) positive_int --events "$2"; MAMORI_BENCH_EVENTS=$2; shift 2 ;;
        --runs) positive_int --runs "$2"; MAMORI_BENCH_RUNS=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
ensure_servers_installed
[ -x "${MAMORI_CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium
log "building (release) and the console"
cargo build --release --locked -p mamori -p mamori-loadtest
build_console
start_private_servers consolebench
export MAMORI_TEST_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export MAMORI_BIN="$CARGO_TARGET_DIR/release/mamori"
export MAMORI_LOADTEST_BIN="$CARGO_TARGET_DIR/release/mamori-loadtest"
scripts/with-mamori.sh sh -c 'MAMORI_CONSOLE_URL="$MAMORI_URL" node loadtest/console-bench.mjs'
