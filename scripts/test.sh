#!/usr/bin/env bash
# Runs Mamori's checks and tests against a private PostgreSQL and Redis that
# this script installs (if missing), starts on free loopback ports, and stops
# again on exit. Usage: scripts/test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

ensure_servers_installed
# The alarm tests deliver e-mail to a real SMTP server: Python's aiosmtpd,
# from Debian's packages, under Debian's python3.
if ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    log "installing python3-aiosmtpd (the tests' SMTP server)"
    apt_install python3-aiosmtpd
fi
export MAMORI_TEST_PYTHON=/usr/bin/python3
if ! command -v cargo-nextest >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

start_private_servers test
export MAMORI_TEST_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "building binaries"
cargo build --workspace --bins --locked
log "running tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
