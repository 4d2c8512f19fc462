#!/usr/bin/env bash
# Tenant isolation in the shared alerting service: a private PostgreSQL and
# Redis and `mamori all` (release build), then mamori-fairness-bench: a
# quiet tenant's event → alarm latency alone and beside a hostile tenant
# (worst-case policy globs and a flood of long paths). Runs twice, on fresh
# servers: with the per-tenant alerting budget as configured (default
# 20 ms), and with it effectively off (60 s), to show what it buys.
# Extra arguments go to mamori-fairness-bench (e.g. --flood-rate 4000).
set -euo pipefail
cd "$(dirname "$0")/.."

on_fresh_stack() (
    . loadtest/stack.sh fairness
    "$bin/mamori-fairness-bench" --ingest "http://127.0.0.1:$ingest_port" "$@"
)

printf '\033[1m==> per-tenant budget %s ms\033[0m\n' "${MAMORI_ALERTING_TENANT_BUDGET_MS:-20}" >&2
on_fresh_stack "$@"
printf '\033[1m==> per-tenant budget off (60 s)\033[0m\n' >&2
MAMORI_ALERTING_TENANT_BUDGET_MS=60000 on_fresh_stack "$@"
