"""Checks behind scripts/helm-check.sh (run with the venv's python, which
has PyYAML from kubernetes-validate). Not part of the packaged chart.

  check.py config-keys CHART REPO RENDERED
      values.schema.json's `config` keys, and the MAMORI_* variables the
      rendered Deployments and Job set, against the Rust Config structs:
      no invented variable, no config key the binary would refuse, no
      setting of the binary that neither the file nor the chart covers.
  check.py split RENDERED OUTDIR
      one file per manifest for kubernetes-validate; CRD kinds it has no
      schema for are named and left out; house rules checked on the way
      (non-root, read-only root, no capabilities, probes, grace periods).
  check.py smoke CHART HELM MAMORI_BIN AGENT_BIN|- PG_URL REDIS_URL WORKDIR
      renders the chart for loopback and runs what it rendered: the
      migration Job's command, then every role with its Deployment's env,
      config file, key-encryption key and generated certificates; waits
      for the probes, enrolls an agent over the generated ingest TLS, calls
      the policy service through the gateway over TLS, and stops each role
      with SIGTERM within its terminationGracePeriodSeconds.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

ROLES = ["ingest", "writer", "alerting", "policy", "gateway"]
# Kinds from CRDs: kubernetes-validate has no schema for them offline.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Settings of the binary that the chart deliberately leaves alone.
NOT_IN_CHART = {
    "writer_consumer": "a fixed consumer name would be shared by every replica; the default (hostname-pid-random) is what replicas need",
    "alerting_consumer": "as writer_consumer",
    "mail_dir": "a pickup directory needs a writable volume; in a cluster mail goes over SMTP (smtp.url)",
}
# A variable the chart sets that covers another key of the same setting.
COVERED_BY = {"key_encryption_key": "key_encryption_key_file"}
# MAMORI_* variables read outside the Config structs.
OTHER_VARS = {
    "MAMORI_CONFIG": "mamori/src/main.rs (--config)",
    "MAMORI_LOG_FORMAT": "libs/telemetry/src/trace.rs",
}
RUST_TYPES = {
    "String": "string", "bool": "boolean", "f64": "number",
    "u16": "integer", "u32": "integer", "u64": "integer", "usize": "integer",
    "i32": "integer", "i64": "integer",
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def rust_config(path, repo, struct="Config"):
    """The fields of `pub struct <struct>` in a Rust file: {name: json type}.
    A `#[serde(flatten)]` field of a `mamori_config::` type contributes that
    struct's fields (the settings the roles share, libs/config)."""
    text = open(path).read()
    m = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", text, re.S)
    if not m:
        fail(f"{path}: no `pub struct {struct} {{ ... }}` found (the check reads its fields)")
    fields = {}
    flatten = False
    for line in m.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        if line.startswith("#["):
            flatten = flatten or line == "#[serde(flatten)]"
            continue
        shared = re.fullmatch(r"pub (\w+): mamori_config::(\w+),", line)
        if flatten and shared:
            lib = os.path.join(repo, "libs/config/src/lib.rs")
            fields.update(rust_config(lib, repo, shared.group(2)))
            flatten = False
            continue
        f = re.fullmatch(r"pub (\w+): ([\w:]+),", line)
        if flatten or not f or f.group(2) not in RUST_TYPES:
            fail(f"{path}: cannot read the field `{line}` (a nested config? update helm/mamori/ci/check.py)")
        fields[f.group(1)] = RUST_TYPES[f.group(2)]
    return fields


def config_keys(chart, repo, rendered):
    sections = {r: rust_config(f"{repo}/services/{r}/src/config.rs", repo) for r in ROLES}
    sections["admin"] = rust_config(f"{repo}/mamori/src/admin.rs", repo)
    known_vars = {"MAMORI_" + k.upper() for keys in sections.values() for k in keys} | set(OTHER_VARS)

    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    env_by = {}
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            names = [e["name"] for e in c.get("env", [])]
            role = c["args"][0]
            env_by[role] = set(names)
            for n in names:
                if n.startswith("MAMORI_") and n not in known_vars:
                    fail(f"the {role} container sets {n}, which the binary does not read")
    missing = set(ROLES + ["migrate"]) - set(env_by)
    if missing:
        fail(f"no container runs {sorted(missing)}")

    schema = json.load(open(f"{chart}/values.schema.json"))
    cfg = schema["properties"]["config"]["properties"]
    problems = []
    for role in ROLES:
        rust = sections[role]
        allowed = cfg[role]["properties"]
        for k, s in allowed.items():
            if k not in rust:
                problems.append(f"config.{role}.{k} is in values.schema.json but not in the {role} Config")
            elif s["type"] != rust[k]:
                problems.append(f"config.{role}.{k} is {s['type']} in values.schema.json but {rust[k]} in Rust")
        for k in rust:
            var = "MAMORI_" + k.upper()
            set_by_chart = var in env_by[role] or (
                k in COVERED_BY and "MAMORI_" + COVERED_BY[k].upper() in env_by[role])
            if k in allowed and set_by_chart:
                problems.append(f"config.{role}.{k} is allowed in the file but {var} overrides it in the pod")
            if k not in allowed and not set_by_chart and k not in NOT_IN_CHART:
                problems.append(f"{role}'s `{k}` is neither allowed in config.{role} nor set by the chart ({var}): add it to values.schema.json or the chart")
    if "MAMORI_DATABASE_URL" not in env_by["migrate"]:
        problems.append("the migration Job does not set MAMORI_DATABASE_URL")
    union = {k for r in ROLES for k in cfg[r]["properties"]}
    for k, s in cfg.items():
        if k in ROLES:
            continue
        if k not in union:
            problems.append(f"top-level config.{k} is in no role's section")
        owners = [r for r in ROLES if k in cfg[r]["properties"]]
        if owners and any(cfg[r]["properties"][k]["type"] != s["type"] for r in owners):
            problems.append(f"top-level config.{k} has another type than in {owners}")
    if problems:
        fail("config keys out of step with the Rust Config structs:\n  " + "\n  ".join(problems))
    n = sum(len(cfg[r]["properties"]) for r in ROLES)
    print(f"config keys: {n} allowed in the file across {len(ROLES)} sections, "
          f"{sum(len(env_by[r]) for r in ROLES)} env entries in the Deployments, "
          f"all match the Rust Config structs; left out on purpose: {', '.join(sorted(NOT_IN_CHART))}")


def split(rendered, outdir):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    kinds = {}
    problems = []
    for i, d in enumerate(docs):
        kind, api = d["kind"], d["apiVersion"]
        name = d["metadata"]["name"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if (api, kind) in CRD_KINDS:
            print(f"  skipping {kind} {name} ({api}): a CRD, no schema offline; checked by values.schema.json only")
            continue
        with open(f"{outdir}/{i:03d}-{kind}-{name}.yaml", "w") as f:
            yaml.safe_dump(d, f)
        if kind in ("Deployment", "Job"):
            spec = d["spec"]["template"]["spec"]
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{kind} {name}: mounts a service account token")
            psc = spec.get("securityContext", {})
            if not psc.get("runAsNonRoot"):
                problems.append(f"{kind} {name}: runAsNonRoot is not set")
            for c in spec["containers"]:
                sc = c.get("securityContext", {})
                if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False \
                        or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                    problems.append(f"{kind} {name}: container {c['name']} is not read-only, unprivileged, without capabilities")
                if kind == "Deployment":
                    live = c["livenessProbe"]["httpGet"]
                    ready = c["readinessProbe"]["httpGet"]
                    if (live["path"], ready["path"]) != ("/healthz", "/readyz") or live["port"] != "ops" or ready["port"] != "ops":
                        problems.append(f"{name}: probes are not /healthz and /readyz on the ops port")
                    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                    if spec["terminationGracePeriodSeconds"] <= sleep:
                        problems.append(f"{name}: terminationGracePeriodSeconds leaves no time after the preStop sleep")
    if problems:
        fail("\n  ".join(["rendered manifests break the chart's rules:"] + problems))
    print("  rendered: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def smoke(chart, helm, mamori, agent, pg, redis, work):
    ports = {k: free_port() for k in ["ingest", "ingest_ops", "writer_ops", "alerting_ops",
                                      "policy", "policy_ops", "gateway", "gateway_ops"]}
    release, ns = "smoke", "smoke"
    full = f"{release}-mamori"
    sets = [
        "bindAddress=127.0.0.1",
        f"ingest.port={ports['ingest']}", f"ingest.opsPort={ports['ingest_ops']}",
        f"writer.opsPort={ports['writer_ops']}", f"alerting.opsPort={ports['alerting_ops']}",
        f"policy.port={ports['policy']}", f"policy.opsPort={ports['policy_ops']}",
        f"policy.service.port={ports['policy']}",
        f"gateway.port={ports['gateway']}", f"gateway.opsPort={ports['gateway_ops']}",
        "ingest.tls.dnsNames={localhost}",
        "config.stream_shards=2", "config.db_max_connections=8", "config.ingest.device_rate=3000",
        "config.alerting.mail_daily_quota=100", "config.webhook_allow_private=false",
        f"agentServerUrl=https://localhost:{ports['ingest']}",
        f"publicUrl=http://127.0.0.1:{ports['gateway']}",
    ]
    cmd = [helm, "template", release, chart, "-n", ns]
    for s in sets:
        cmd += ["--set", s]
    cmd += ["--set-string", "config.gateway.mail_from=Mamori <no-reply@smoke.invalid>"]
    docs = [d for d in yaml.safe_load_all(subprocess.check_output(cmd)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    def secret(name):
        return {k: base64.b64decode(v) for k, v in by[("Secret", name)]["data"].items()}

    own = secret(full)
    ingest_tls = secret(f"{full}-ingest-tls")
    files = {
        "config": {"mamori.toml": by[("ConfigMap", f"{full}-config")]["data"]["mamori.toml"].encode()},
        "kek": {"key": own["key-encryption-key"]},
        "tls": {k: ingest_tls[k] for k in ["tls.crt", "tls.key", "ca.crt"]},
    }
    for d, contents in files.items():
        os.makedirs(f"{work}/{d}", exist_ok=True)
        for n, b in contents.items():
            with open(f"{work}/{d}/{n}", "wb") as f:
                f.write(b)
    console = os.path.abspath(f"{chart}/../../console/dist")
    # Where the pods mount what the chart gives them, here.
    paths = {
        "/etc/mamori/config/": f"{work}/config/",
        "/etc/mamori/kek/": f"{work}/kek/",
        # ingest and policy both serve the generated ingest certificate
        # (for localhost); the gateway trusts its CA.
        "/etc/mamori/tls/": f"{work}/tls/",
        "/etc/mamori/policy-ca/": f"{work}/tls/",
        "/usr/share/mamori/console": console if os.path.isfile(f"{console}/index.html") else "",
    }
    secret_values = {"database-url": pg, "redis-url": redis, "migration-database-url": pg}

    def env_of(c):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for e in c["env"]:
            if "valueFrom" in e:
                env[e["name"]] = secret_values[e["valueFrom"]["secretKeyRef"]["key"]]
            else:
                v = e["value"]
                for a, b in paths.items():
                    v = v.replace(a, b)
                env[e["name"]] = v
        return env

    def container(kind, name):
        return by[(kind, name)]["spec"]["template"]["spec"]["containers"][0]

    job = container("Job", f"{full}-migrate")
    print(f"  mamori {' '.join(job['args'])} (the hook Job's command and env)", flush=True)
    subprocess.run([mamori] + job["args"], env=env_of(job), check=True,
                   stdout=subprocess.DEVNULL)

    procs = {}
    grace = {}
    try:
        for role in ROLES:
            dep = by[("Deployment", f"{full}-{role}")]
            c = container("Deployment", f"{full}-{role}")
            env = env_of(c)
            if role == "gateway":
                # The policy certificate names the Service (…-policy.smoke.svc),
                # which does not resolve here: the policy serves the certificate
                # the same template generated for `localhost` (ingest's) instead.
                env["MAMORI_POLICY_URL"] = f"https://localhost:{ports['policy']}"
            grace[role] = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            log = open(f"{work}/{role}.log", "w")
            procs[role] = subprocess.Popen([mamori] + c["args"], env=env, stdout=log, stderr=subprocess.STDOUT)
            ops = next(p["containerPort"] for p in c["ports"] if p["name"] == "ops")
            probes = [c[k]["httpGet"]["path"] for k in ("startupProbe", "livenessProbe", "readinessProbe")]
            for _ in range(300):
                if procs[role].poll() is not None:
                    fail(f"mamori {role} exited:\n" + open(f"{work}/{role}.log").read()[-3000:])
                try:
                    for path in probes:
                        urllib.request.urlopen(f"http://127.0.0.1:{ops}{path}", timeout=1).read()
                    break
                except Exception:
                    time.sleep(0.2)
            else:
                fail(f"mamori {role}: its probes never answered 200:\n" + open(f"{work}/{role}.log").read()[-3000:])
            print(f"  mamori {role}: {', '.join(sorted(set(probes)))} answer 200 on its ops port", flush=True)

        admin = {"MAMORI_DATABASE_URL": pg, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

        def cli(*args, stdin=None):
            out = subprocess.run([mamori, *args, "--json"], env=admin, input=stdin, text=True,
                                 capture_output=True, check=True).stdout
            return json.loads(out)

        tenant = cli("tenant", "create", "Helm smoke")["id"]
        if agent != "-":
            token = cli("token", "create", "--tenant", tenant)["token"]
            r = subprocess.run([agent, "enroll", "--server", f"https://localhost:{ports['ingest']}",
                                "--token", token, "--state-dir", f"{work}/agent",
                                "--ca-cert", f"{work}/tls/ca.crt", "--json"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                fail("the agent could not enroll over the generated ingest certificate:\n" + r.stderr[-2000:])
            print(f"  mamori-agent enroll over TLS, trusting the generated ingest CA: device {json.loads(r.stdout)['device_id']}")
        password = "helm smoke password 1"
        cli("user", "create", "--tenant", tenant, "--email", "admin@smoke.invalid", stdin=password + "\n")

        def api(method, path, body=None, token=None):
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            req = urllib.request.Request(f"http://127.0.0.1:{ports['gateway']}/api/v1{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(), headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")

        access = api("POST", "/auth/login", {"email": "admin@smoke.invalid", "password": password})["access_token"]
        api("GET", "/groups", token=access)
        print("  gateway -> policy over TLS with the generated CA: GET /api/v1/groups answered")
        if paths["/usr/share/mamori/console"]:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['gateway']}/", timeout=5) as resp:
                if "text/html" not in resp.headers.get("content-type", ""):
                    fail("the gateway does not serve the console at /")
            print("  the gateway serves the console at / (gateway.consoleDir)")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for role, p in procs.items():
            t0 = time.time()
            try:
                rc = p.wait(timeout=grace.get(role, 30))
            except subprocess.TimeoutExpired:
                p.kill()
                fail(f"mamori {role} did not stop within terminationGracePeriodSeconds ({grace[role]} s) of SIGTERM")
            if rc != 0 and sys.exc_info()[0] is None:
                fail(f"mamori {role} exited {rc} on SIGTERM:\n" + open(f"{work}/{role}.log").read()[-2000:])
            print(f"  mamori {role}: SIGTERM -> exit {rc} after {time.time() - t0:.1f} s (grace {grace.get(role)} s)")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"config-keys": config_keys, "split": split, "smoke": smoke}[cmd](*args)


if __name__ == "__main__":
    main()
