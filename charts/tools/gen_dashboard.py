#!/usr/bin/env python3
"""Writes charts/regent/files/dashboards/regent.json.

The dashboard is generated so every panel gets the same datasource and namespace wiring; the JSON
is committed and shipped, and check.sh verifies it is up to date and parses. Run it after editing.
"""
import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
RATE = "$__rate_interval"


def target(expr, legend, ref, instant=False, fmt="time_series"):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t.update({"instant": True, "range": False, "format": fmt})
    return t


def panel(pid, title, kind, targets, x, y, w=12, h=8, unit="short", description="", extra=None):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": targets,
    }
    if extra:
        p.update(extra)
    return p


def row(pid, title, y):
    return {"id": pid, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def dashboard():
    panels = [
        row(1, "Sidecar decisions", 0),
        panel(2, "Checks/s by decision", "timeseries", [
            target(f'sum by (decision) (rate(regent_checks_total{{{NS}}}[{RATE}]))', "{{decision}}", "A"),
        ], 0, 1, unit="reqps", description="Check calls answered by regent-sidecar: allow, deny, error."),
        panel(3, "Check latency p50 / p99", "timeseries", [
            target(f'histogram_quantile(0.50, sum by (le) (rate(regent_check_duration_seconds_bucket{{{NS}}}[{RATE}])))', "p50", "A"),
            target(f'histogram_quantile(0.99, sum by (le) (rate(regent_check_duration_seconds_bucket{{{NS}}}[{RATE}])))', "p99", "B"),
        ], 12, 1, unit="s", description="Time to answer a Check inside the sidecar (input, evaluation, response)."),
        panel(4, "Check errors by reason", "timeseries", [
            target(f'sum by (reason) (rate(regent_check_errors_total{{{NS}}}[{RATE}]))', "{{reason}}", "A"),
        ], 0, 9, unit="reqps", description="Failed checks; Envoy applies its failure mode to these."),
        panel(5, "Envoy ext_authz: ok / denied / error", "timeseries", [
            target(f'sum(rate(envoy_http_ext_authz_ok{{{NS}}}[{RATE}]))', "ok", "A"),
            target(f'sum(rate(envoy_http_ext_authz_denied{{{NS}}}[{RATE}]))', "denied", "B"),
            target(f'sum(rate(envoy_http_ext_authz_error{{{NS}}}[{RATE}]))', "error", "C"),
            target(f'sum(rate(envoy_http_ext_authz_failure_mode_allowed{{{NS}}}[{RATE}]))', "failure_mode_allowed", "D"),
        ], 12, 9, unit="reqps",
            description="The ext_authz filter's own counters, as Envoy saw them. Under Istio they need proxyStatsMatcher (see the chart's mesh config snippet)."),
        row(6, "Policy bundles", 17),
        panel(7, "Bundle revision per pod", "table", [
            target(f'max by (namespace, pod, bundle, revision) (regent_bundle_info{{{NS}}})', "", "A", instant=True, fmt="table"),
        ], 0, 18, h=9, description="Active revision (the policy commit) of every sidecar.",
            extra={"options": {"showHeader": True, "sortBy": [{"displayName": "pod", "desc": False}]},
                   "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]}),
        panel(8, "Time since last activation", "timeseries", [
            target(f'time() - max by (pod, bundle) (regent_bundle_last_activation_timestamp_seconds{{{NS}}})', "{{pod}} {{bundle}}", "A"),
        ], 12, 18, h=9, unit="s", description="Seconds since each sidecar last activated a bundle."),
        # Every server replica keeps its own fleet view: the sidecars whose reports reached it in
        # the last fleet.ttl_seconds. A sidecar reports through the Service to whichever replica
        # its connection lands on, so the views overlap: summing them counts a sidecar once per
        # replica that heard from it (up to replicas x too many), while max gives a lower bound
        # that is exact with one replica or when one replica hears from everyone. Hence max;
        # the exact count comes from the sidecars' own regent_bundle_info (panel 14).
        panel(9, "Fleet revision spread (reported to the server)", "timeseries", [
            target('max by (bundle, revision) (regent_fleet_sidecars)', "{{bundle}} @ {{revision}}", "A"),
        ], 0, 27, unit="short", description="Sidecars reporting each revision to the bundle server (the largest replica's view: with several replicas a lower bound). More than one line per bundle means a rollout is in progress or stuck.",
            extra={"fieldConfig": {"defaults": {"unit": "short", "custom": {"stacking": {"mode": "normal"}, "fillOpacity": 30}}, "overrides": []}}),
        panel(10, "Bundle activation failures by reason", "timeseries", [
            target(f'sum by (bundle, reason) (rate(regent_bundle_activation_failures_total{{{NS}}}[{RATE}]))', "{{bundle}} {{reason}}", "A"),
        ], 12, 27, unit="ops", description="Refused bundles (signature, rollback, compile...); the last good policy stays active."),
        row(11, "Bundle server", 35),
        # Every replica fetches and gates every commit itself, so a sum over replicas would count
        # each commit once per replica: max shows the commits.
        panel(12, "Builds by result", "timeseries", [
            target(f'max by (result) (increase(regent_builds_total[{RATE}]))', "{{result}}", "A"),
            target(f'max by (bundle, reason) (increase(regent_publish_failures_total[{RATE}]))', "refused {{bundle}}: {{reason}}", "B"),
        ], 0, 36, unit="short", description="Commits built by regent serve, and commits refused by the publish gate (the previous revision stays served)."),
        panel(13, "Published revision", "table", [
            target('max by (bundle, revision) (regent_published_revision_info)', "", "A", instant=True, fmt="table"),
        ], 12, 36, description="The revision each bundle is served at; compare with the fleet spread above.",
            extra={"options": {"showHeader": True},
                   "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]}),
        # One series per scraped sidecar and active bundle: counting them is exact whatever the
        # number of server replicas (needs the sidecars' PodMonitor).
        panel(14, "Sidecars per revision (scraped)", "timeseries", [
            target(f'count by (bundle, revision) (regent_bundle_info{{{NS}}})', "{{bundle}} @ {{revision}}", "A"),
        ], 0, 44, w=24, unit="short", description="Sidecars Prometheus scrapes, by active revision (exact with any number of server replicas; needs server.serviceMonitor.sidecarPodMonitor).",
            extra={"fieldConfig": {"defaults": {"unit": "short", "custom": {"stacking": {"mode": "normal"}, "fillOpacity": 30}}, "overrides": []}}),
    ]
    return {
        "id": None,
        "uid": "regent-overview",
        "title": "Regent",
        "tags": ["regent", "ext_authz", "rego"],
        "timezone": "browser",
        "schemaVersion": 41,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
             "query": {"query": "label_values(regent_checks_total, namespace)", "refId": "ns"},
             "definition": "label_values(regent_checks_total, namespace)",
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def main():
    out = pathlib.Path(__file__).resolve().parent.parent / "regent" / "files" / "dashboards" / "regent.json"
    text = json.dumps(dashboard(), indent=2) + "\n"
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date: run charts/tools/gen_dashboard.py", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
