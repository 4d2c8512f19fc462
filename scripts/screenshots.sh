#!/usr/bin/env bash
# Writes screenshots of the console's main pages (Japanese) into
# docs/screenshots/: a private PostgreSQL and Redis, a real `mamori all`
# with the console, a demo company whose simulated PCs send a month of
# operation logs (console/tests/demo.mjs), and an MSP that runs it
# (console/tests/screenshots.mjs). Needs Chromium (/usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
ensure_servers_installed
[ -x "${MAMORI_CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium
# Japanese text needs a Japanese font (IPA Gothic, 3.5 MB).
if [ -z "$(fc-list :lang=ja 2>/dev/null)" ]; then
    log "installing a Japanese font (fonts-ipafont-gothic)"
    apt_install fonts-ipafont-gothic
fi
log "building mamori, mamori-loadtest and the console"
cargo build --locked -p mamori -p mamori-loadtest
build_console
start_private_servers shots
export MAMORI_TEST_DATABASE_URL="postgres://mamori@127.0.0.1:$pg_port/mamori"
export MAMORI_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export MAMORI_BIN="$CARGO_TARGET_DIR/debug/mamori"
export MAMORI_LOADTEST_BIN="$CARGO_TARGET_DIR/debug/mamori-loadtest"
export MAMORI_SCREENSHOT_DIR="$PWD/docs/screenshots"
scripts/with-mamori.sh sh -c 'cd console && MAMORI_CONSOLE_URL="$MAMORI_URL" node tests/screenshots.mjs'
log "screenshots in docs/screenshots/"
