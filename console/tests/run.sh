#!/usr/bin/env bash
# The console's browser tests: Debian's Chromium driven by Playwright
# (tests/e2e.mjs) against a real `mamori all` with the console built in
# dist/, on a database of its own (scripts/with-mamori.sh). Called by
# scripts/test.sh with the PostgreSQL and Redis it started and the built
# `mamori` (MAMORI_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
chromium=${MAMORI_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || { echo "no Chromium at $chromium (apt-get install chromium)" >&2; exit 1; }
[ -f dist/index.html ] || { echo "the console is not built (npm run build)" >&2; exit 1; }
export MAMORI_CHROMIUM="$chromium"
# The tests' webhook receiver listens on loopback.
export MAMORI_WEBHOOK_ALLOW_PRIVATE=true
# The agent the flow test installs (built beside the server).
export MAMORI_AGENT_BIN=${MAMORI_AGENT_BIN:-$(dirname "$MAMORI_BIN")/mamori-agent}
exec ../scripts/with-mamori.sh sh -c 'MAMORI_CONSOLE_URL="$MAMORI_URL" node tests/e2e.mjs'
