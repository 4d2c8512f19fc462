#!/usr/bin/env bash
# Regenerates the console's copy of the gateway's OpenAPI document and the
# TypeScript types made from it (console/src/api/). scripts/test.sh fails
# when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
cargo build --locked -p mamori
"$CARGO_TARGET_DIR/debug/mamori" openapi >console/src/api/openapi.json
(cd console && npx --no-install openapi-typescript src/api/openapi.json -o src/api/schema.d.ts)
