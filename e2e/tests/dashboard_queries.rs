//! The Grafana dashboard and the chart's alert rules, proven against a real Prometheus: it
//! scrapes a real sidecar, `regent serve` and Envoy while requests flow and a commit is pushed,
//! then every PromQL expression of charts/regent/files/dashboards/regent.json and of the rendered
//! alert rules (charts/test-values/rendered/monitoring-values/alerts.yaml, kept current by
//! charts/check.sh) is evaluated through Prometheus's HTTP API. Each must parse; each dashboard
//! query must return series; each metric selector in an alert must match series. A metric
//! renamed in code, or a label an expression filters on that is not exported, fails here.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use regent_e2e::http::send;
use regent_e2e::jwt::Issuer;
use regent_e2e::prometheus::{Prometheus, Target};
use regent_e2e::wait;

/// What the ServiceMonitor of monitoring-values gives the server's series (the server alerts
/// select on them).
const SERVER_LABELS: [(&str, &str); 2] =
    [("namespace", "regent-system"), ("service", "regent-server")];

fn repo_file(rel: &str) -> Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every target expression of the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let dash: serde_json::Value =
        serde_json::from_str(&repo_file("charts/regent/files/dashboards/regent.json")?)?;
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().context("panels")? {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$namespace", ".*")
                .replace("$__rate_interval", "10s");
            out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    Ok(out)
}

/// Every alert expression of the rendered rules, by alert name.
fn alert_queries() -> Result<Vec<(String, String)>> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&repo_file(
        "charts/test-values/rendered/monitoring-values/alerts.yaml",
    )?)?;
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().context("groups")? {
        for rule in group["rules"].as_sequence().context("rules")? {
            let name = rule["alert"].as_str().context("alert name")?.to_string();
            let expr = rule["expr"].as_str().context("expr")?.to_string();
            out.push((name, expr));
        }
    }
    Ok(out)
}

/// The metric selectors of an expression: each Regent or Envoy metric name with its label
/// matchers, e.g. `regent_bundle_downloads_total{result=~"ok|not_modified"}`.
fn selectors(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_name = (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts_name {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
        {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("regent_") || name.starts_with("envoy_")) {
            continue;
        }
        let mut selector = name.to_string();
        if expr[i..].starts_with('{') {
            if let Some(end) = expr[i..].find('}') {
                selector.push_str(&expr[i..=i + end]);
                i += end + 1;
            }
        }
        out.insert(selector);
    }
    out
}

#[test]
fn selectors_are_read_with_their_matchers() {
    let s = selectors(
        r#"sum without (result) (increase(regent_bundle_downloads_total{result=~"ok|not_modified"}[5m])) and on (job) regent_x{} > 0"#,
    );
    assert_eq!(
        s.into_iter().collect::<Vec<_>>(),
        [
            "regent_bundle_downloads_total{result=~\"ok|not_modified\"}",
            "regent_x{}"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_runs_on_a_real_prometheus() -> Result<()> {
    let mut h = common::harness("dashboard_queries")?;
    let issuer = Issuer::generate()?;
    let s = common::ServerStack::start(&h, &issuer).await?;
    let local = |port: u16| format!("127.0.0.1:{port}");
    let targets = [
        Target {
            job: "regent-sidecar".into(),
            address: local(s.sidecar.opts.http_port),
            path: "/metrics".into(),
            labels: vec![
                ("namespace".into(), "e2e".into()),
                ("pod".into(), "app-0".into()),
            ],
        },
        Target {
            job: "regent-server".into(),
            address: local(s.chain.server.opts.port),
            path: "/metrics".into(),
            labels: SERVER_LABELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        Target {
            job: "envoy".into(),
            address: local(s.envoy.opts.admin_port),
            path: "/stats/prometheus".into(),
            labels: vec![
                ("namespace".into(), "e2e".into()),
                ("pod".into(), "app-0".into()),
            ],
        },
    ];
    let prom = Prometheus::start(&h, &targets).await?;
    prom.wait_targets_up(targets.len()).await?;

    // Traffic (allowed and denied) and a pushed commit, so counters move and the fleet view
    // has a sidecar on a published revision.
    let client = common::client();
    for user in ["alice", "bob", "carol", "alice"] {
        send(
            client
                .get(s.envoy.url("/api/items/1"))
                .header("x-user", user),
        )
        .await?;
    }
    s.chain.repo.write(
        "roles/data.json",
        r#"{"alice": ["admin"], "bob": ["reader"], "carol": ["reader"]}"#,
    )?;
    let commit = s.chain.repo.commit_and_push("carol reads")?;
    let sidecar = &s.sidecar;
    wait::until(
        "the sidecar to run the pushed commit",
        Duration::from_secs(60),
        || async {
            Ok((sidecar.revision().await?.as_deref() == Some(commit.as_str())).then_some(()))
        },
    )
    .await?;
    // Rates over 10 s need samples on both sides of the traffic: keep it flowing meanwhile.
    let until = std::time::Instant::now() + Duration::from_secs(12);
    while std::time::Instant::now() < until {
        for user in ["alice", "bob", "nobody"] {
            send(
                client
                    .get(s.envoy.url("/api/items/1"))
                    .header("x-user", user),
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut failures = Vec::new();
    for (panel, expr) in dashboard_queries()? {
        match prom.query(&expr).await {
            Ok(r) if r.is_empty() => {
                failures.push(format!("dashboard {panel:?}: no series for {expr}"))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("dashboard {panel:?}: {expr}: {e:#}")),
        }
        for sel in selectors(&expr) {
            check_selector(&prom, &format!("dashboard {panel:?}"), &sel, &mut failures).await;
        }
    }
    let alerts = alert_queries()?;
    assert!(alerts.len() >= 5, "{alerts:?}");
    for (alert, expr) in &alerts {
        // A healthy system fires nothing: the expression must parse; its series must exist.
        if let Err(e) = prom.query(expr).await {
            failures.push(format!("alert {alert}: {expr}: {e:#}"));
        }
        for sel in selectors(expr) {
            check_selector(&prom, &format!("alert {alert}"), &sel, &mut failures).await;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    h.pass();
    Ok(())
}

async fn check_selector(prom: &Prometheus, what: &str, sel: &str, failures: &mut Vec<String>) {
    match prom.query(sel).await {
        Ok(r) if r.is_empty() => failures.push(format!("{what}: no series match {sel}")),
        Ok(_) => {}
        Err(e) => failures.push(format!("{what}: {sel}: {e:#}")),
    }
}
