#!/usr/bin/env bash
# Sets up and runs Mamori on this machine: installs PostgreSQL and Redis if
# missing and runs them privately (data in .dev/), builds Mamori, migrates,
# starts every service (`mamori all`), creates a demo tenant and enrollment
# token, enrolls and starts a local agent, and prints what to look at.
# Ctrl-C stops everything. `scripts/dev.sh stop` stops leftovers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

root=$(pwd)
dev=${MAMORI_DEV_DIR:-$root/.dev}
pg_port=${MAMORI_PG_PORT:-5432}
redis_port=${MAMORI_REDIS_PORT:-6379}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
export MAMORI_DATABASE_URL=${MAMORI_DATABASE_URL:-postgres://mamori@127.0.0.1:$pg_port/mamori}
export MAMORI_REDIS_URL=${MAMORI_REDIS_URL:-redis://127.0.0.1:$redis_port}
bin=$CARGO_TARGET_DIR/release

stop_all() {
    [ -f "$dev/agent.pid" ] && kill "$(cat "$dev/agent.pid")" 2>/dev/null || true
    [ -f "$dev/mamori.pid" ] && kill "$(cat "$dev/mamori.pid")" 2>/dev/null || true
    rm -f "$dev/agent.pid" "$dev/mamori.pid"
    sleep 1
    stop_redis "$dev"
    stop_pg "$dev"
}

if [ "${1:-}" = stop ]; then
    stop_all
    log "stopped"
    exit 0
fi

ensure_servers_installed
mkdir -p "$dev"
chmod 755 "$dev"
log "starting PostgreSQL (127.0.0.1:$pg_port) and Redis (127.0.0.1:$redis_port), data in $dev"
start_pg "$dev" "$pg_port"
start_redis "$dev" "$redis_port"

log "building mamori and mamori-agent (release)"
cargo build --release --locked -p mamori -p mamori-agent

log "migrating"
"$bin/mamori" migrate

trap 'log "stopping"; stop_all' EXIT
trap 'exit 0' INT TERM

log "starting mamori all (log: $dev/mamori.log)"
"$bin/mamori" all >"$dev/mamori.log" 2>&1 &
echo $! >"$dev/mamori.pid"
for _ in $(seq 1 100); do
    if python3 -c 'import urllib.request,sys; urllib.request.urlopen("http://127.0.0.1:9101/readyz", timeout=1)' 2>/dev/null; then
        break
    fi
    kill -0 "$(cat "$dev/mamori.pid")" 2>/dev/null || { cat "$dev/mamori.log"; exit 1; }
    sleep 0.2
done

if [ ! -f "$dev/demo.env" ]; then
    log "creating the demo tenant and an enrollment token"
    tenant=$("$bin/mamori" tenant create "Demo Company")
    token=$("$bin/mamori" token create --tenant "$tenant" --expires 30d --max-uses 100 2>/dev/null)
    printf 'DEMO_TENANT=%s\nDEMO_TOKEN=%s\n' "$tenant" "$token" >"$dev/demo.env"
    chmod 600 "$dev/demo.env"
fi
. "$dev/demo.env"

if [ ! -f "$dev/agent/credential" ]; then
    log "enrolling the local agent"
    "$bin/mamori-agent" enroll --server http://127.0.0.1:50051 --token "$DEMO_TOKEN" --state-dir "$dev/agent"
fi
log "starting the local agent (log: $dev/agent.log)"
"$bin/mamori-agent" run --state-dir "$dev/agent" >"$dev/agent.log" 2>&1 &
echo $! >"$dev/agent.pid"

cat <<INFO

Mamori is running.
  ingest (gRPC, agents):   http://127.0.0.1:50051
  metrics / health:        http://127.0.0.1:9101/metrics (ingest)  http://127.0.0.1:9102/metrics (writer)
  demo tenant:             $DEMO_TENANT
  enrollment token:        $DEMO_TOKEN
  devices:                 $bin/mamori device list --tenant $DEMO_TENANT
  enroll another agent:    $bin/mamori-agent enroll --server http://127.0.0.1:50051 --token $DEMO_TOKEN --state-dir DIR
  latest events (psql):    psql $MAMORI_DATABASE_URL -c "SET ROLE mamori_app; SELECT set_config('mamori.tenant_id', '$DEMO_TENANT', false); SELECT ts, kind, os_user, subject FROM events ORDER BY ts DESC LIMIT 20"
  (the web console comes with the gateway; this build has the event spine)

Start any program on this machine and it shows up in the events within a second or two.
Press Ctrl-C to stop everything.
INFO
wait "$(cat "$dev/mamori.pid")"
