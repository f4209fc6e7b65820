#!/usr/bin/env python3
"""Checks on `helm template` output that kubernetes-validate cannot make.

    check_rendered.py dashboard FILE     the Grafana dashboard JSON
    check_rendered.py manifests FILE     a rendered release
    check_rendered.py extract FILE DIR   write the embedded server.yaml / sidecar.yaml / inject.yaml to DIR
    check_rendered.py rules FILE OUT     write the PrometheusRule's groups to OUT (a rules file for promtool)

For manifests: custom resources (cert-manager, Istio, Prometheus Operator) against schemas of the
fields the chart uses (kubernetes-validate has no CRD schemas and only warns), the config files
embedded in ConfigMaps (parsed, the keys the binaries and mounts depend on present), and the
chart's invariants: hardened containers, every mount backed by a volume, selectors that match,
references between objects that resolve, no Secret rendered from values, and every regent_* metric
an alert or a dashboard panel queries registered somewhere in the binaries' sources.
Exits 1 and names every problem found.
"""
import json
import sys

import jsonschema
import yaml

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


# --- custom resources -------------------------------------------------------------------------

def strict(props, required=()):
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(required)}


STR = {"type": "string", "minLength": 1}
STRS = {"type": "array", "items": STR}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
METADATA = {"type": "object", "required": ["name"], "properties": {"name": STR, "namespace": STR, "labels": LABELS}}
SELECTOR = strict({"matchLabels": LABELS, "matchExpressions": {"type": "array"}})
ISSUER_REF = strict({"name": STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": STR}, ["name"])
SECRET_OR_CM = strict({"secret": strict({"name": STR, "key": STR}, ["name", "key"]),
                       "configMap": strict({"name": STR, "key": STR}, ["name", "key"])})
TLS_CONFIG = strict({"ca": SECRET_OR_CM, "cert": SECRET_OR_CM, "keySecret": strict({"name": STR, "key": STR}, ["name", "key"]),
                     "serverName": STR, "insecureSkipVerify": {"type": "boolean"}, "caFile": STR, "certFile": STR,
                     "keyFile": STR, "minVersion": STR, "maxVersion": STR})
RELABELINGS = {"type": "array", "items": {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": STRS, "separator": {"type": "string"}, "targetLabel": STR, "regex": {"type": "string"},
    "modulus": {"type": "integer"}, "replacement": {"type": "string"},
    "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase",
                        "uppercase", "keepequal", "dropequal", "Replace", "Keep", "Drop", "HashMod", "LabelMap",
                        "LabelDrop", "LabelKeep", "Lowercase", "Uppercase", "KeepEqual", "DropEqual"]}}}}
ENDPOINT = strict({"port": STR, "path": STR, "interval": DURATION, "scrapeTimeout": DURATION,
                   "scheme": {"enum": ["http", "https"]}, "honorLabels": {"type": "boolean"}, "tlsConfig": TLS_CONFIG,
                   "relabelings": RELABELINGS, "metricRelabelings": RELABELINGS})
RULE = strict({"alert": STR, "record": STR, "expr": STR, "for": DURATION, "labels": LABELS,
               "annotations": LABELS}, ["expr"])

# Everything else is a custom resource and needs a schema below.
BUILTIN_API_VERSIONS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "admissionregistration.k8s.io/v1"}

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): strict({
        "selector": SELECTOR,
        "namespaceSelector": strict({"matchNames": STRS, "any": {"type": "boolean"}}),
        "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
    }, ["selector", "endpoints"]),
    ("monitoring.coreos.com/v1", "PodMonitor"): strict({
        "selector": SELECTOR,
        "namespaceSelector": strict({"matchNames": STRS, "any": {"type": "boolean"}}),
        "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
    }, ["selector", "podMetricsEndpoints"]),
    ("monitoring.coreos.com/v1", "PrometheusRule"): strict({
        "groups": {"type": "array", "minItems": 1, "items": strict({
            "name": STR, "interval": DURATION, "rules": {"type": "array", "minItems": 1, "items": RULE}}, ["name", "rules"])},
    }, ["groups"]),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): strict({
        "parentRefs": {"type": "array", "minItems": 1, "items": strict({
            "name": STR, "namespace": STR, "sectionName": STR, "group": {"type": "string"}, "kind": STR,
            "port": {"type": "integer"}}, ["name"])},
        "hostnames": STRS,
        "rules": {"type": "array", "minItems": 1, "items": strict({
            "matches": {"type": "array", "items": strict({
                "path": strict({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]}, "value": STR}),
                "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]}})},
            "backendRefs": {"type": "array", "minItems": 1, "items": strict({
                "name": STR, "port": {"type": "integer", "minimum": 1, "maximum": 65535}}, ["name", "port"])}})},
    }, ["parentRefs", "rules"]),
    ("cert-manager.io/v1", "Issuer"): {
        "type": "object", "minProperties": 1, "maxProperties": 1,
        "properties": {"selfSigned": {"type": "object"}, "ca": strict({"secretName": STR}, ["secretName"])},
        "additionalProperties": False,
    },
    ("cert-manager.io/v1", "Certificate"): strict({
        "secretName": STR, "commonName": STR, "dnsNames": STRS, "isCA": {"type": "boolean"},
        "duration": DURATION, "renewBefore": DURATION,
        "privateKey": strict({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"}}),
        "usages": {"type": "array", "items": {"enum": ["server auth", "client auth", "digital signature",
                                                        "key encipherment", "cert sign"]}},
        "issuerRef": ISSUER_REF,
    }, ["secretName", "issuerRef"]),
    ("networking.istio.io/v1", "ServiceEntry"): strict({
        "hosts": {"type": "array", "minItems": 1, "items": STR},
        "exportTo": STRS,
        "endpoints": {"type": "array", "items": strict({"address": STR})},
        "ports": {"type": "array", "minItems": 1, "items": strict({
            "name": STR, "number": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"enum": ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]}}, ["number", "name"])},
        "resolution": {"enum": ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]},
    }, ["hosts", "ports"]),
    ("security.istio.io/v1", "AuthorizationPolicy"): strict({
        "selector": strict({"matchLabels": LABELS}),
        "action": {"const": "CUSTOM"},
        "provider": strict({"name": STR}, ["name"]),
        "rules": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                             "properties": {"from": {"type": "array"}, "to": {"type": "array"},
                                                            "when": {"type": "array"}}}},
    }, ["action", "provider"]),
}


def check_custom_resource(doc, where):
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = CRD_SCHEMAS.get(key)
    if schema is None:
        return False
    try:
        jsonschema.validate(doc.get("metadata"), METADATA)
        jsonschema.validate(doc.get("spec"), schema)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        problem(where, f"spec/{path}: {e.message}")
    return True


# --- embedded configs ---------------------------------------------------------------------------

def check_configmap(doc, where, ctx):
    data = doc.get("data") or {}
    for key, text in data.items():
        if key.endswith(".json"):
            try:
                dash = json.loads(text)
            except ValueError as e:
                problem(where, f"{key} is not JSON: {e}")
                continue
            ctx["dashboards"].append(dash)
        elif key.endswith(".yaml"):
            try:
                cfg = yaml.safe_load(text)
            except yaml.YAMLError as e:
                problem(where, f"{key} is not YAML: {e}")
                continue
            if key == "server.yaml":
                for k in ("listen", "data_dir", "signing", "git", "bundles"):
                    if k not in cfg:
                        problem(where, f"server.yaml has no {k}")
                if not (cfg.get("git") or {}).get("repo"):
                    problem(where, "server.yaml has no git.repo")
                for b in cfg.get("bundles") or []:
                    if not b.get("name") or not b.get("dir"):
                        problem(where, f"server.yaml bundle {b} needs name and dir")
                signing = cfg.get("signing", {})
                kids = [k.get("kid") for k in signing.get("keys", [])]
                if signing.get("active_kid") not in kids:
                    problem(where, "server.yaml signing.active_kid is not one of signing.keys")
                ctx["server_config"] = cfg
            elif key == "sidecar.yaml":
                if not str(cfg.get("grpc", {}).get("addr", "")).startswith("127.0.0.1:"):
                    problem(where, "sidecar.yaml grpc.addr must stay on loopback")
                sync = cfg.get("sync", {})
                if sync.get("bundles") and not sync.get("keys") and not sync.get("insecure_skip_verification"):
                    ctx["warnings"].append(f"{where}: sidecar.yaml has bundles but no keys (every bundle will be refused)")
                ctx["sidecar_configs"].append((doc["metadata"].get("namespace"), cfg, set(data)))
            elif key == "inject.yaml":
                ctx["inject_config"] = cfg
            elif key == "extensionProviders.yaml":
                for p in cfg.get("extensionProviders", []):
                    grpc = p.get("envoyExtAuthzGrpc", {})
                    if not grpc.get("timeout"):
                        problem(where, f"extension provider {p.get('name')} has no explicit timeout")
                    if grpc.get("service") is None or grpc.get("port") is None:
                        problem(where, f"extension provider {p.get('name')} needs service and port")
                ctx["providers"] = [p.get("name") for p in cfg.get("extensionProviders", [])]


# --- invariants ---------------------------------------------------------------------------------

def check_container(c, pod_spec, where):
    sc = c.get("securityContext") or {}
    psc = pod_spec.get("securityContext") or {}
    name = f"{where} container {c.get('name')}"
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(name, "readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(name, "allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(name, "capabilities must drop ALL")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problem(name, "runAsNonRoot must be set")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        problem(name, "seccompProfile must be RuntimeDefault")
    if not (c.get("resources") or {}).get("requests"):
        problem(name, "resources.requests missing")
    volumes = {v["name"] for v in pod_spec.get("volumes") or []}
    for m in c.get("volumeMounts") or []:
        if m["name"] not in volumes:
            problem(name, f"volumeMount {m['name']} has no volume")


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_manifests(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    ctx = {"dashboards": [], "sidecar_configs": [], "warnings": [], "providers": []}
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Secret":
            problem(where, "the chart must not render Secrets (keys come from existing Secrets)")
        if d.get("apiVersion") not in BUILTIN_API_VERSIONS:
            if not check_custom_resource(d, where):
                problem(where, f"no schema for custom resource {d['apiVersion']} {d['kind']}")
        if d["kind"] == "ConfigMap":
            check_configmap(d, where, ctx)
        if d["kind"] in ("Deployment", "Pod"):
            spec = d["spec"]["template"]["spec"] if d["kind"] == "Deployment" else d["spec"]
            for c in spec.get("containers", []):
                check_container(c, spec, where)
        if d["kind"] == "Deployment":
            sel = d["spec"]["selector"]["matchLabels"]
            if not matches(sel, d["spec"]["template"]["metadata"]["labels"]):
                problem(where, "selector does not match the pod template labels")
            for c in d["spec"]["template"]["spec"]["containers"]:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        problem(where, f"container {c['name']} has no {probe}")

    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind.get("Deployment", [])]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for d in by_kind.get(kind, []):
            spec = d["spec"]
            sel = spec.get("selector") if kind == "Service" else (spec.get("selector") or spec.get("podSelector") or {}).get("matchLabels")
            if not any(matches(sel, labels) for labels in pod_labels):
                problem(f"{kind}/{d['metadata']['name']}", "selects no pod of this release")

    services = {d["metadata"]["name"] for d in by_kind.get("Service", [])}
    certs = {f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in by_kind.get("Certificate", [])}
    for d in by_kind.get("MutatingWebhookConfiguration", []):
        where = f"MutatingWebhookConfiguration/{d['metadata']['name']}"
        ref = (d["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
        for w in d["webhooks"]:
            svc = w["clientConfig"]["service"]["name"]
            if svc not in services:
                problem(where, f"webhook service {svc} is not rendered")
            if ref is None and not w["clientConfig"].get("caBundle"):
                problem(where, "neither caBundle nor cert-manager.io/inject-ca-from")
        if ref is not None and ref not in certs:
            problem(where, f"inject-ca-from {ref} names no rendered Certificate")

    # The injector's template must mount the sidecar ConfigMap and be injectable everywhere the
    # sidecar config exists.
    inject = ctx.get("inject_config")
    if inject is not None:
        container = inject.get("container") or {}
        vols = {v.get("name") for v in inject.get("volumes") or []}
        for m in container.get("volumeMounts") or []:
            if m["name"] not in vols:
                problem("inject.yaml", f"sidecar mount {m['name']} has no volume in the template")
        cm_names = {v["configMap"]["name"] for v in inject.get("volumes") or [] if "configMap" in v}
        rendered_cms = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
        for name in cm_names - rendered_cms:
            problem("inject.yaml", f"ConfigMap {name} is not rendered")
        if not container.get("name"):
            problem("inject.yaml", "container has no name")

    for ns, cfg, keys in ctx["sidecar_configs"]:
        for k in (cfg.get("sync") or {}).get("keys") or []:
            fname = k["public_key_file"].rsplit("/", 1)[-1]
            if f"key-{fname}" not in keys:
                problem(f"ConfigMap sidecar ({ns})", f"key file {fname} is not in the ConfigMap")

    for d in by_kind.get("AuthorizationPolicy", []):
        name = d["spec"]["provider"]["name"]
        if ctx["providers"] and name not in ctx["providers"]:
            problem(f"AuthorizationPolicy/{d['metadata']['name']}", f"provider {name} is not in the mesh config")

    for kind in ("Ingress", "HTTPRoute"):
        for d in by_kind.get(kind, []):
            where = f"{kind}/{d['metadata']['name']}"
            if kind == "Ingress":
                backends = [p["backend"]["service"]["name"] for r in d["spec"]["rules"] for p in r["http"]["paths"]]
            else:
                backends = [b["name"] for r in d["spec"]["rules"] for b in r["backendRefs"]]
            for b in backends:
                if b not in services:
                    problem(where, f"backend Service {b} is not rendered")

    for d in by_kind.get("PrometheusRule", []):
        where = f"PrometheusRule/{d['metadata']['name']}"
        for g in d["spec"]["groups"]:
            for r in g["rules"]:
                check_metric_names(r["expr"], f"{where} {r.get('alert') or r.get('record')}")
                if r.get("alert") and not (r.get("annotations") or {}).get("runbook_url"):
                    problem(where, f"alert {r['alert']} has no runbook_url")

    for dash in ctx["dashboards"]:
        check_dashboard_obj(dash, "dashboard ConfigMap")
    for w in ctx["warnings"]:
        print(f"  note: {w}")


# --- metric names against the code ----------------------------------------------------------------

_exported = None


def exported_metrics():
    """Every regent_* metric name the binaries register: the string literals in their sources."""
    global _exported
    if _exported is None:
        import pathlib
        import re
        root = pathlib.Path(__file__).resolve().parents[2]
        _exported = set()
        for crate in ("sidecar", "bundle-server", "policy"):
            for f in (root / crate / "src").rglob("*.rs"):
                _exported.update(re.findall(r'"(regent_[a-z0-9_]+)"', f.read_text()))
    return _exported


def check_metric_names(expr, where):
    import re
    for name in set(re.findall(r"\b(regent_[a-z0-9_]+)", expr)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported_metrics() and base not in exported_metrics():
            problem(where, f"{name} is not a metric the code exports")


def extract_rules(path, out):
    """Writes the groups of the release's PrometheusRule as a Prometheus rules file (for promtool)."""
    with open(path) as f:
        rules = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        print(f"{path}: expected one PrometheusRule, found {len(rules)}", file=sys.stderr)
        return 1
    with open(out, "w") as f:
        yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, f, sort_keys=False)
    return 0


# --- dashboard ----------------------------------------------------------------------------------

REQUIRED_METRICS = [
    "regent_checks_total", "regent_check_duration_seconds_bucket", "regent_check_errors_total",
    "regent_bundle_info", "regent_bundle_last_activation_timestamp_seconds", "regent_fleet_sidecars",
    "envoy_http_ext_authz_ok", "envoy_http_ext_authz_denied", "envoy_http_ext_authz_error",
]


def check_dashboard_obj(dash, where):
    if dash.get("id") is not None:
        problem(where, "id must be null (provisioned dashboards are matched by uid)")
    if not dash.get("uid"):
        problem(where, "uid missing")
    exprs = []
    cells = set()
    for p in dash.get("panels", []):
        g = p.get("gridPos", {})
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                if (x, y) in cells:
                    problem(where, f"panel {p.get('title')} overlaps another")
                    break
                cells.add((x, y))
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problem(where, f"panel {p.get('title')} does not use the datasource variable")
        for t in p.get("targets", []):
            exprs.append(t.get("expr", ""))
            check_metric_names(t.get("expr", ""), f"{where} panel {p.get('title')}")
    for m in REQUIRED_METRICS:
        if not any(m in e for e in exprs):
            problem(where, f"no panel queries {m}")
    names = [v.get("name") for v in dash.get("templating", {}).get("list", [])]
    if "datasource" not in names:
        problem(where, "no datasource variable")


EMBEDDED = ("server.yaml", "sidecar.yaml", "inject.yaml")


def extract(path, outdir):
    """Writes the config files embedded in the release's ConfigMaps to outdir (one copy each),
    and the release's alert rules, if it has them, as alerts.yaml."""
    import os
    os.makedirs(outdir, exist_ok=True)
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        if d["kind"] != "ConfigMap":
            continue
        for key, text in (d.get("data") or {}).items():
            target = os.path.join(outdir, key)
            if key in EMBEDDED and not os.path.exists(target):
                with open(target, "w") as out:
                    out.write(text)
    # The alert rules as a Prometheus rules file: e2e/tests/dashboard_queries.rs evaluates each
    # expression against a real Prometheus, so a renamed metric fails there.
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) == 1:
        with open(os.path.join(outdir, "alerts.yaml"), "w") as out:
            yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, out, sort_keys=False)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "rules":
        return extract_rules(sys.argv[2], sys.argv[3])
    if len(sys.argv) != 3 or sys.argv[1] not in ("dashboard", "manifests"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "dashboard":
        with open(sys.argv[2]) as f:
            check_dashboard_obj(json.load(f), sys.argv[2])
    else:
        check_manifests(sys.argv[2])
    for p in problems:
        print(f"  problem: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
