#!/usr/bin/env bash
# Policy push benchmark: a private PostgreSQL and Redis, `mamori all`
# (release build), then mamori-policy-bench: 10,000 simulated agents hold
# Connect streams open while the tenant's policy changes five times; prints
# per change the p50/p99/max from the change to the agents' receipt, and
# when every device's applied revision was recorded.
# Extra arguments go to mamori-policy-bench (e.g. --agents 2000 --rounds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/stack.sh policy
"$bin/mamori-policy-bench" --ingest "http://127.0.0.1:$ingest_port" "$@"
