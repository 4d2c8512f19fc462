# Shared shell functions: install and run a private PostgreSQL and Redis.
# Sourced by scripts/dev.sh and scripts/test.sh; not meant to be run alone.
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the
# `postgres` system user; otherwise as the calling user. Both servers listen
# on 127.0.0.1 only, with data under a directory the caller chooses.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# positive_int NAME VALUE: stops the script unless VALUE is a whole number
# above 0, naming the setting.
positive_int() {
    case $2 in
    '' | *[!0-9]*) ;;
    *[1-9]*) return 0 ;;
    esac
    echo "$1 must be a positive whole number, not '$2'" >&2
    exit 1
}

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
            return
        fi
        echo "missing packages: $* (run as root or install them: apt-get install $*)" >&2
        return 1
    fi
    if [ -z "${MAMORI_APT_UPDATED:-}" ]; then
        apt-get update -qq
        MAMORI_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# build_console: installs the console's npm packages from the lockfile
# (when missing or older than it) and builds it into console/dist, checking
# its TypeScript on the way (Node.js 20 and npm are on the machine).
build_console() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "npm is missing: the console needs Node.js 20 and npm" >&2
        return 1
    fi
    if [ ! -d console/node_modules ] || [ console/package-lock.json -nt console/node_modules ]; then
        log "installing the console's npm packages (npm ci)"
        (cd console && npm ci --no-audit --no-fund --loglevel=error)
    fi
    log "building the console (console/dist)"
    (cd console && npm run --silent build >/dev/null)
}

ensure_servers_installed() {
    if [ -z "$(pg_bindir)" ]; then
        log "installing PostgreSQL (Debian packages)"
        apt_install postgresql
    fi
    if ! command -v openssl >/dev/null 2>&1; then
        log "installing openssl (the test servers' TLS certificates)"
        apt_install openssl
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing redis-server (Debian packages)"
        apt_install redis-server
    fi
}

# as_pg CMD...: runs CMD as the user that owns the cluster.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# start_pg DIR PORT: creates (once) and starts a cluster in DIR/pg with a
# superuser `mamori` and a database `mamori`. With MAMORI_PG_TLS=1 it also
# accepts TLS, with a certificate for 127.0.0.1 signed by a CA made here
# ($dir/tls: ca.crt, server.crt, server.key; the tests' TLS Redis uses them
# too); clients that do not ask for TLS still connect without.
start_pg() {
    local dir=$1 port=$2 bin tls_opts=
    bin=$(pg_bindir)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    if [ ! -f "$dir/pg/PG_VERSION" ]; then
        as_pg "$bin/initdb" -D "$dir/pg" -U mamori --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if [ -n "${MAMORI_PG_TLS:-}" ]; then
        make_test_tls "$dir/tls"
        # PostgreSQL wants its key owned by itself and private.
        mkdir -p "$dir/pg-tls"
        cp "$dir/tls/server.crt" "$dir/tls/server.key" "$dir/pg-tls/"
        chmod 600 "$dir/pg-tls/server.key"
        [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir/pg-tls"
        tls_opts="-c ssl=on -c ssl_cert_file=$dir/pg-tls/server.crt -c ssl_key_file=$dir/pg-tls/server.key"
    fi
    if ! as_pg "$bin/pg_ctl" -D "$dir/pg" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -t 60 start -o \
            "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300 -c shared_buffers=512MB -c synchronous_commit=on -c fsync=on -c max_wal_size=4GB -c checkpoint_timeout=15min -c track_commit_timestamp=on $tls_opts ${MAMORI_PG_EXTRA_OPTS:-}" >/dev/null \
            || { cat "$dir/pg.log" >&2; return 1; }
    fi
    if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U mamori -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='mamori'" | grep -q 1; then
        "$bin/createdb" -h 127.0.0.1 -p "$port" -U mamori mamori
    fi
}

# make_test_tls DIR: a throw-away CA and a server certificate for
# 127.0.0.1 and localhost signed by it (P-256, 30 days).
make_test_tls() {
    local d=$1
    [ -f "$d/server.crt" ] && return 0
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=mamori-test-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=127.0.0.1 -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/ext.cnf" -out "$d/server.crt" 2>/dev/null
}

stop_pg() {
    local dir=$1 bin
    bin=$(pg_bindir)
    [ -f "$dir/pg/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
}

# start_redis DIR PORT: Redis with an append-only file (fsync every second),
# no eviction (a full Redis refuses writes instead of dropping events). The
# streams hold little at any time (entries are trimmed once consumed) while
# the file grows with every append, so it is rewritten only from 1 GB: at
# the default 64 MB a busy spine forked Redis for a rewrite every few
# seconds (measured: a tenth of the machine's CPU under load).
# MAMORI_REDIS_EXTRA_OPTS adds or overrides redis-server options.
start_redis() {
    local dir=$1 port=$2
    mkdir -p "$dir/redis"
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        return 0
    fi
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --pidfile "$dir/redis.pid" --dir "$dir/redis" --logfile "$dir/redis.log" \
        --appendonly yes --appendfsync everysec --save "" \
        --maxmemory "${MAMORI_REDIS_MAXMEMORY:-4gb}" --maxmemory-policy noeviction \
        --auto-aof-rewrite-min-size 1gb \
        --databases 256 ${MAMORI_REDIS_EXTRA_OPTS:-}
    local i
    for i in $(seq 1 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$dir/redis.log" >&2
    return 1
}

stop_redis() {
    local dir=$1
    if [ -f "$dir/redis.pid" ]; then
        kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
        rm -f "$dir/redis.pid"
    fi
}

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_private_servers NAME: PostgreSQL and Redis on free loopback ports,
# data in a new mamori-NAME.* directory of $MAMORI_WORK_PARENT (default
# /tmp); both are stopped and the directory removed when the calling script
# exits. Sets work, pg_port, redis_port.
start_private_servers() {
    work=$(mktemp -d "${MAMORI_WORK_PARENT:-/tmp}/mamori-$1.XXXXXX")
    chmod 755 "$work"
    trap stop_private_servers EXIT
    pg_port=$(free_port)
    redis_port=$(free_port)
    log "starting PostgreSQL on 127.0.0.1:$pg_port and Redis on 127.0.0.1:$redis_port"
    start_pg "$work" "$pg_port"
    start_redis "$work" "$redis_port"
}

stop_private_servers() {
    stop_pg "$work"
    stop_redis "$work"
    # A Wine prefix the tests made there (scripts/wine-prefix.sh): its
    # wineserver and programs go first.
    if [ -d "$work/wine" ]; then
        WINEPREFIX="$work/wine" wineserver -k >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
