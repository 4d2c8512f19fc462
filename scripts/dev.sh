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
gateway_addr=${MAMORI_GATEWAY_ADDR:-127.0.0.1:8080}
export MAMORI_GATEWAY_ADDR=$gateway_addr
export MAMORI_PUBLIC_URL=${MAMORI_PUBLIC_URL:-http://$gateway_addr}
# The key that wraps the JWT signing keys; created on first start.
export MAMORI_KEY_ENCRYPTION_KEY_FILE=${MAMORI_KEY_ENCRYPTION_KEY_FILE:-$dev/kek}
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
build_console
export MAMORI_CONSOLE_DIR=${MAMORI_CONSOLE_DIR:-$root/console/dist}

log "migrating"
"$bin/mamori" migrate

trap 'log "stopping"; stop_all' EXIT
trap 'exit 0' INT TERM

log "starting mamori all (log: $dev/mamori.log)"
"$bin/mamori" all >"$dev/mamori.log" 2>&1 &
echo $! >"$dev/mamori.pid"
for _ in $(seq 1 100); do
    if python3 -c 'import urllib.request,sys; urllib.request.urlopen("http://127.0.0.1:9103/readyz", timeout=1)' 2>/dev/null; then
        break
    fi
    kill -0 "$(cat "$dev/mamori.pid")" 2>/dev/null || { cat "$dev/mamori.log"; exit 1; }
    sleep 0.2
done

if [ ! -f "$dev/demo.env" ]; then
    log "signing up the demo company through the gateway"
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
    python3 - "$MAMORI_PUBLIC_URL" "$password" "$dev/mamori.log" >"$dev/demo.env" <<'PY'
import json, re, sys, time, urllib.request
base, password, log = sys.argv[1], sys.argv[2], sys.argv[3]
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=30))
r = post("/api/v1/signup", {"email": "admin@demo.mamori.local", "password": password, "company": "Demo Company"})
# Without SMTP the verification mail goes to the log: confirm the address.
for _ in range(50):
    m = re.findall(r"mmv_[A-Za-z0-9_-]{43}", open(log).read())
    if m:
        post("/api/v1/auth/verify", {"token": m[-1]})
        break
    time.sleep(0.1)
# A demo policy: winny is banned (killed on start), alarms are mailed to
# the admin (to the log, without SMTP).
req = urllib.request.Request(base + "/api/v1/policies/tenant", json.dumps({
    "banned_apps": [{"name": "winny", "action": "kill"}],
    "notifications": {"routes": [{"categories": ["*"], "email": ["admin@demo.mamori.local"]}]},
}).encode(), {"Content-Type": "application/json", "Authorization": "Bearer " + r["access_token"]}, method="PUT")
urllib.request.urlopen(req, timeout=30)
print(f"DEMO_EMAIL=admin@demo.mamori.local\nDEMO_PASSWORD={password}\nDEMO_TENANT={r['tenant_id']}\nDEMO_TOKEN={r['enrollment_token']}")
PY
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
  console (browser):       $MAMORI_PUBLIC_URL/
  login:                   $DEMO_EMAIL / $DEMO_PASSWORD
  gateway (REST API):      $MAMORI_PUBLIC_URL/api/v1   (OpenAPI: $MAMORI_PUBLIC_URL/api/v1/openapi.json)
  try it:                  curl -s -X POST $MAMORI_PUBLIC_URL/api/v1/auth/login -H 'content-type: application/json' \\
                             -d '{"email":"$DEMO_EMAIL","password":"$DEMO_PASSWORD"}'
                           then: curl -s -H "Authorization: Bearer \$ACCESS_TOKEN" $MAMORI_PUBLIC_URL/api/v1/events
  ingest (gRPC, agents):   http://127.0.0.1:50051
  metrics / health:        http://127.0.0.1:9101/metrics (ingest)  :9102 (writer)  :9103 (gateway)  :9104 (alerting)  :9105 (policy)
  demo tenant:             $DEMO_TENANT
  enrollment token:        $DEMO_TOKEN
  devices:                 $bin/mamori device list --tenant $DEMO_TENANT
  enroll another agent:    $bin/mamori-agent enroll --server http://127.0.0.1:50051 --token $DEMO_TOKEN --state-dir DIR
  latest events (psql):    psql $MAMORI_DATABASE_URL -c "SET ROLE mamori_app; SELECT set_config('mamori.tenant_id', '$DEMO_TENANT', false); SELECT ts, kind, os_user, subject FROM events ORDER BY ts DESC LIMIT 20"

Start any program on this machine and it shows up in the events within a second or two.
The demo policy bans "winny": cp /bin/sleep /tmp/winny && /tmp/winny 60 is killed at once (if
the agent runs as root), and GET /api/v1/alarms shows the alarm; its e-mail is in $dev/mamori.log.
Press Ctrl-C to stop everything.
INFO
wait "$(cat "$dev/mamori.pid")"
