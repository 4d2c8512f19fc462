#!/usr/bin/env bash
# The API against its own OpenAPI document, property-based: schemathesis
# (from PyPI, in a virtualenv under ~/.cache) generates requests for every
# operation from the document, as a signed-up tenant administrator and
# with no token, against a real `mamori all` (scripts/with-mamori.sh), and
# fails on any 5xx, any answer that does not match the document, and any
# status code the document does not list. Called by scripts/test.sh.
#
# MAMORI_CONTRACT_SECONDS bounds the first run (default 90; the MSP run gets
# half, the run without a token a third).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MAMORI_SCHEMATHESIS_VENV:-$HOME/.cache/mamori-schemathesis}
version=4.32.5
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    echo "==> installing schemathesis $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi
export SCHEMATHESIS_BIN="$venv/bin/schemathesis"
export MAMORI_CONTRACT_SECONDS=${MAMORI_CONTRACT_SECONDS:-90}
exec scripts/with-mamori.sh bash -c '
set -euo pipefail
signup() {
    python3 - "$1" <<PY
import json, sys, urllib.request, uuid
body = json.dumps({"email": f"contract-{uuid.uuid4().hex}@example.com",
                   "password": "a long passphrase for the contract run",
                   "company": "Contract " + sys.argv[1], "kind": sys.argv[1]}).encode()
req = urllib.request.Request("$MAMORI_URL/api/v1/signup", body, {"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req))["access_token"])
PY
}
# The coverage phase is left out: on Python 3.11 it stops with an internal
# error of Hypothesis ("AST constructor recursion depth mismatch").
run() {
    "$SCHEMATHESIS_BIN" --config-file scripts/schemathesis.toml run "$MAMORI_URL/api/v1/openapi.json" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --phases examples,fuzzing,stateful --workers 2 --no-color --suppress-health-check all \
        --warnings off "$@"
}
# Calls that end the session a run uses are left out of the signed-in
# runs; the run without a token covers them.
keep_session=(--exclude-path /api/v1/auth/logout-everywhere --exclude-path /api/v1/me/password
              --exclude-path /api/v1/auth/logout)
echo "==> schemathesis, as a tenant administrator"
run --max-time "$MAMORI_CONTRACT_SECONDS" "${keep_session[@]}" -H "Authorization: Bearer $(signup tenant)"
echo "==> schemathesis, as an MSP administrator"
run --max-time "$(( MAMORI_CONTRACT_SECONDS / 2 ))" "${keep_session[@]}" -H "Authorization: Bearer $(signup msp)"
echo "==> schemathesis, without a token"
run --max-time "$(( MAMORI_CONTRACT_SECONDS / 3 ))"
'
