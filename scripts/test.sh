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
# The console's browser tests run Debian's Chromium (no browser download).
if [ ! -x /usr/bin/chromium ]; then
    log "installing chromium (the console's browser tests and the web test)"
    apt_install chromium
fi
# The print test runs a private cupsd with a virtual printer (CUPS-PDF's
# driver). Debian may start the system's cupsd on installation: this
# script installed it, so it stops it again (the test needs only its own).
if [ ! -x /usr/sbin/cupsd ] || [ ! -x /usr/bin/lp ] || [ ! -f /usr/share/ppd/cups-pdf/CUPS-PDF_opt.ppd ]; then
    log "installing cups-daemon, cups-client and printer-driver-cups-pdf (the print test)"
    apt_install cups-daemon cups-client printer-driver-cups-pdf
    [ -x /etc/init.d/cups ] && /etc/init.d/cups stop >/dev/null 2>&1 || true
fi
# The agent package's test runs its unit under a systemd of its own (PID 1
# of a PID and mount namespace made with util-linux's unshare).
if [ ! -x /lib/systemd/systemd ] || ! command -v unshare >/dev/null 2>&1 \
    || ! command -v nsenter >/dev/null 2>&1; then
    log "installing systemd and util-linux (the agent package's test)"
    apt_install systemd util-linux
fi
# The Windows agent is cross-built with MinGW-w64 and tested under Wine.
# Its MSI is built with wixl and msitools, and signed with osslsigncode.
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || ! command -v wine >/dev/null 2>&1 \
    || ! command -v wixl >/dev/null 2>&1 || ! command -v msibuild >/dev/null 2>&1 \
    || ! command -v osslsigncode >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    log "installing gcc-mingw-w64-x86-64, wine, wixl, msitools, osslsigncode and openssl (the Windows agent's build, MSI, signing and tests)"
    apt_install gcc-mingw-w64-x86-64 wine wixl msitools osslsigncode openssl
fi
if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
    log "adding the Rust target x86_64-pc-windows-gnu"
    rustup target add x86_64-pc-windows-gnu
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

# PostgreSQL also accepts TLS, for the test of the roles' TLS connections.
export MAMORI_PG_TLS=1
start_private_servers test
export MAMORI_TEST_TLS_DIR="$work/tls"
export MAMORI_TEST_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo clippy for Windows (the agent)"
cargo clippy -p mamori-agent --target x86_64-pc-windows-gnu --all-targets --locked -- -D warnings
log "building binaries"
cargo build --workspace --bins --locked
log "building the Windows agent and its MSI"
cargo build -p mamori-agent --target x86_64-pc-windows-gnu --bins --locked
MAMORI_AGENT_EXE="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/mamori-agent.exe" \
    scripts/agent-msi.sh "$work/msi" >/dev/null
export MAMORI_TEST_WINDOWS_MSI="$work/msi/mamori-agent-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1).msi"
# A fresh Wine prefix for the Windows tests (removed with $work).
. scripts/wine-prefix.sh
wine_prefix "$work/wine"
export MAMORI_TEST_WINE_PREFIX="$work/wine"
export MAMORI_TEST_WINDOWS_AGENT="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/mamori-agent.exe"
build_console
log "checking the console's API types against the gateway's OpenAPI document"
console_check="$work/console-check"
mkdir -p "$console_check"
"$CARGO_TARGET_DIR/debug/mamori" openapi >"$console_check/openapi.json"
if ! diff -q console/src/api/openapi.json "$console_check/openapi.json" >/dev/null; then
    echo "console/src/api/openapi.json differs from \`mamori openapi\`: run scripts/gen-api.sh and commit" >&2
    exit 1
fi
(cd console && npx --no-install openapi-typescript src/api/openapi.json -o "$console_check/schema.d.ts" >/dev/null 2>&1)
if ! diff -q console/src/api/schema.d.ts "$console_check/schema.d.ts" >/dev/null; then
    echo "console/src/api/schema.d.ts is stale: run scripts/gen-api.sh and commit" >&2
    exit 1
fi
log "running the console's unit tests"
(cd console && node tests/unit.mjs)
log "checking the Helm chart (scripts/helm-check.sh)"
MAMORI_BIN="$CARGO_TARGET_DIR/debug/mamori" MAMORI_AGENT_BIN="$CARGO_TARGET_DIR/debug/mamori-agent" \
    scripts/helm-check.sh
log "running tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
log "running the Windows agent's unit tests under Wine"
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine \
    cargo test -p mamori-agent --target x86_64-pc-windows-gnu --lib --locked
log "fuzzing the wire reader and the event validation briefly (scripts/fuzz.sh)"
scripts/fuzz.sh "${MAMORI_FUZZ_SECONDS:-20}"
log "running the console's browser tests"
MAMORI_BIN="$CARGO_TARGET_DIR/debug/mamori" console/tests/run.sh
log "checking the API against its OpenAPI document (schemathesis)"
MAMORI_BIN="$CARGO_TARGET_DIR/debug/mamori" scripts/api-contract.sh
