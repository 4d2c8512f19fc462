#!/usr/bin/env bash
# Longer fault runs: the chaos test (two of every role as separate
# processes on a Redis Cluster of 3 masters and 3 replicas, one replica of
# each role killed with -9 and restarted in turn) repeated ROUNDS times
# (default 10) in one run, against a private PostgreSQL and Redis.
# Usage: loadtest/chaos.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh
rounds=${1:-10}
positive_int ROUNDS "$rounds"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
ensure_servers_installed
start_private_servers chaos
export MAMORI_TEST_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export MAMORI_CHAOS_ROUNDS=$rounds
log "chaos: $rounds round(s) of kill -9 of each role"
cargo nextest run -p mamori --test e2e --no-capture \
    -E 'test(two_of_every_role_survive_kill_9_of_each_in_turn)'
