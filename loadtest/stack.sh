# Sourced by the benchmark scripts: builds the release binaries, starts a
# private PostgreSQL and Redis and `mamori all` on free loopback ports, and
# stops everything on exit (and the pids a script adds to $bench_pids).
# Sets $bin, $work, $ingest_port and $alerting_ops (the alerting service's
# metrics address).
# MAMORI_BENCH_SPINE_ONLY=1 starts `mamori writer` and `mamori ingest` as
# two processes instead, without alerting (the event spine alone).
# MAMORI_BENCH_REDIS_CLUSTER=1 points every role at a Redis Cluster of 3
# masters and 3 replicas instead of the single Redis (with
# MAMORI_REDIS_WAIT_REPLICAS=1, acks wait for a replica).
. scripts/servers.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
ensure_servers_installed
log "building (release)"
cargo build --release --locked -p mamori -p mamori-loadtest
bin=$CARGO_TARGET_DIR/release

start_private_servers "$1"
mamori_pid=
trap '[ -n "$mamori_pid" ] && kill "$mamori_pid" 2>/dev/null; stop_private_servers; eval "${bench_final:-}"' EXIT
ingest_port=$(free_port)
export MAMORI_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_REDIS_URL="redis://127.0.0.1:$redis_port"
export MAMORI_INGEST_ADDR="127.0.0.1:$ingest_port"
export MAMORI_INGEST_OPS_ADDR="127.0.0.1:0"
export MAMORI_WRITER_OPS_ADDR="127.0.0.1:0"
export MAMORI_GATEWAY_ADDR="127.0.0.1:0"
export MAMORI_GATEWAY_OPS_ADDR="127.0.0.1:0"
export MAMORI_ALERTING_OPS_ADDR="127.0.0.1:0"
export MAMORI_POLICY_ADDR="127.0.0.1:0"
export MAMORI_POLICY_OPS_ADDR="127.0.0.1:0"
export MAMORI_KEY_ENCRYPTION_KEY_FILE="$work/kek"
export MAMORI_DB_MAX_CONNECTIONS=${MAMORI_DB_MAX_CONNECTIONS:-12}
# A benchmark's tenants mail far more alarms than a day's quota allows.
export MAMORI_MAIL_DAILY_QUOTA=${MAMORI_MAIL_DAILY_QUOTA:-100000000}
# Alarm e-mails go to a real SMTP server that keeps nothing, where Python's
# aiosmtpd is installed (scripts/test.sh installs it); otherwise they are
# only logged and the benchmark says no e-mail was sent.
smtp_pid=
writer_pid=
if /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    smtp_port=$(free_port)
    /usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Sink >"$work/smtp.log" 2>&1 &
    smtp_pid=$!
    export MAMORI_SMTP_URL="smtp://127.0.0.1:$smtp_port"
fi
# A script that starts processes of its own adds their pids to bench_pids,
# and a command that undoes what else it set up to bench_cleanup (run
# first) or bench_final (run after the servers stopped).
bench_pids=
bench_cleanup=
trap 'eval "$bench_cleanup"; for p in $bench_pids; do kill "$p" 2>/dev/null; done; [ -n "$mamori_pid" ] && kill "$mamori_pid" 2>/dev/null; [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null; [ -n "$smtp_pid" ] && kill "$smtp_pid" 2>/dev/null; stop_private_servers; eval "${bench_final:-}"' EXIT
ulimit -n 65536 2>/dev/null || true
if [ -n "${MAMORI_BENCH_REDIS_CLUSTER:-}" ]; then
    # A Redis Cluster instead of the single Redis: 3 masters with a replica
    # each, on loopback, with the single Redis's persistence settings.
    log "starting a Redis Cluster (3 masters, 3 replicas)"
    nodes=
    for _ in 1 2 3 4 5 6; do
        port=$(free_port)
        while [ "$port" -ge 55000 ]; do port=$(free_port); done
        mkdir -p "$work/cluster/$port"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --appendonly yes --appendfsync everysec --save "" \
            --maxmemory "${MAMORI_REDIS_MAXMEMORY:-4gb}" --maxmemory-policy noeviction \
            --dir "$work/cluster/$port" >"$work/cluster/$port.log" 2>&1 &
        bench_pids="$bench_pids $!"
        nodes="$nodes 127.0.0.1:$port"
    done
    for n in $nodes; do
        for _ in $(seq 1 100); do
            redis-cli -h 127.0.0.1 -p "${n#*:}" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    # shellcheck disable=SC2086
    redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$work/cluster/create.log"
    for n in $nodes; do
        for _ in $(seq 1 200); do
            info=$(redis-cli -h 127.0.0.1 -p "${n#*:}" info replication)
            if redis-cli -h 127.0.0.1 -p "${n#*:}" cluster info | grep -q cluster_state:ok &&
                { echo "$info" | grep -q role:master || echo "$info" | grep -q master_link_status:up; }; then
                break
            fi
            sleep 0.1
        done
    done
    MAMORI_REDIS_URL=$(echo $nodes | sed 's/\([^ ]*\)/redis:\/\/\1/g; s/ /,/g')
    export MAMORI_REDIS_URL
    log "Redis Cluster: $MAMORI_REDIS_URL"
fi
"$bin/mamori" migrate
if [ -n "${MAMORI_BENCH_SPINE_ONLY:-}" ]; then
    # The spine alone: ingest and writer, each a process of its own, and no
    # alerting, gateway or policy service.
    log "starting mamori writer and mamori ingest (spine only)"
    RUST_LOG=${RUST_LOG:-warn} "$bin/mamori" writer >"$work/writer.log" 2>&1 &
    writer_pid=$!
    RUST_LOG=${RUST_LOG:-warn} "$bin/mamori" ingest >"$work/mamori.log" 2>&1 &
    mamori_pid=$!
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$ingest_port") 2>/dev/null && break
        kill -0 "$mamori_pid" 2>/dev/null || { cat "$work/mamori.log"; exit 1; }
        kill -0 "$writer_pid" 2>/dev/null || { cat "$work/writer.log"; exit 1; }
        sleep 0.2
    done
else
    RUST_LOG=${RUST_LOG:-warn} "$bin/mamori" all >"$work/mamori.log" 2>&1 &
    mamori_pid=$!
    for _ in $(seq 1 100); do
        grep -q "mamori is running" "$work/mamori.log" && break
        kill -0 "$mamori_pid" 2>/dev/null || { cat "$work/mamori.log"; exit 1; }
        sleep 0.2
    done
fi
alerting_ops=$(sed -n 's/.*alerting ops on \([0-9.:]*\).*/\1/p' "$work/mamori.log" | head -1)
