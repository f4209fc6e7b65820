//! OPA configuration files, written as OPA's and OPA-Envoy's docs show them, read by
//! `SidecarConfig::from_file`: each maps onto the expected Regent settings, each key Regent cannot
//! honour is refused by its dotted path; and the real binary syncs a signed bundle with one.

mod common;
mod server_support;
mod sync_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{listening_addr, run_to_end, Proc};
use regent_bundle::signing::{self, SignClaims};
use regent_bundle::Bundle;
use regent_sidecar::config::{ConfigError, LogOutput, SidecarConfig};
use server_support::{allowed, connect, get};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

fn load(text: &str) -> Result<SidecarConfig, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    SidecarConfig::from_file(&write(dir.path(), "opa-config.yaml", text))
}

fn load_err(text: &str) -> String {
    match load(text) {
        Ok(cfg) => panic!("accepted:\n{text}\n=> {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

fn public_pem() -> String {
    signing::generate_key_pem().1
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

#[test]
fn the_opa_envoy_readme_config_maps_onto_the_listener_and_decision() {
    let cfg = load(
        "plugins:\n  envoy_ext_authz_grpc:\n    addr: :9191\n    path: envoy/authz/allow\n    dry-run: false\n    enable-reflection: false\ndecision_logs:\n  console: true\n",
    )
    .expect("valid");
    assert_eq!(cfg.grpc.addr.to_string(), "0.0.0.0:9191");
    assert_eq!(cfg.policy.path, "envoy/authz/allow");
    assert!(!cfg.policy.dry_run);
    assert!(!cfg.grpc.reflection);
    assert_eq!(cfg.decision_logs.output, LogOutput::Stdout);
    assert!(cfg.sync.bundles.is_empty());
    assert!(cfg.opa_origin.is_some(), "marked as read from OPA's format");
}

#[test]
fn nd_builtin_cache_turns_on_recording_remote_call_answers() {
    let plugin = "plugins:\n  envoy_ext_authz_grpc: {}\n";
    let cfg = load(&format!("{plugin}decision_logs:\n  console: true\n")).expect("valid");
    assert!(
        !cfg.decision_logs.nd_builtin_cache,
        "off unless asked, as in OPA"
    );
    let cfg = load(&format!(
        "{plugin}decision_logs:\n  console: true\nnd_builtin_cache: true\n"
    ))
    .expect("valid");
    assert!(cfg.decision_logs.nd_builtin_cache);
    // Regent's own key: a Regent file, not OPA's.
    let cfg = load("decision_logs:\n  output: stdout\n  nd_builtin_cache: true\n").expect("valid");
    assert!(cfg.decision_logs.nd_builtin_cache);
    assert!(cfg.opa_origin.is_none());
    assert!(load_err(&format!("{plugin}nd_builtin_cache: yes please\n"))
        .contains("nd_builtin_cache: must be true or false"));
}

#[test]
fn decision_logs_to_a_service_map_onto_the_upload() {
    let cfg = load(
        "services:\n  logs:\n    url: https://logs.example.com/api/\n    credentials:\n      bearer:\n        token_path: /var/run/logs-token\ndecision_logs:\n  service: logs\n  reporting:\n    min_delay_seconds: 10\n    upload_size_limit_bytes: 65536\n    buffer_size_limit_bytes: 1048576\n",
    )
    .expect("valid");
    let up = cfg.decision_logs.upload.expect("an upload");
    assert_eq!(up.url, "https://logs.example.com/api/logs");
    assert_eq!(
        up.bearer_token_file.as_deref(),
        Some(Path::new("/var/run/logs-token"))
    );
    assert_eq!(up.min_delay_seconds, 10);
    assert_eq!(up.max_delay_seconds, 600, "OPA's default");
    assert_eq!(up.upload_size_limit_bytes, 65536);
    assert_eq!(up.buffer_size_limit_bytes, 1048576);
    assert_eq!(cfg.decision_logs.output, LogOutput::None, "no console");

    let cfg = load(
        "services:\n  logs:\n    url: https://logs.example.com\ndecision_logs:\n  service: logs\n  partition_name: edge\n  console: true\n",
    )
    .expect("valid");
    let up = cfg.decision_logs.upload.expect("an upload");
    assert_eq!(up.url, "https://logs.example.com/logs/edge");
    assert_eq!(up.min_delay_seconds, 300, "OPA's default");
    assert_eq!(cfg.decision_logs.output, LogOutput::Stdout);
}

#[test]
fn distributed_tracing_maps_onto_tracing() {
    use regent_sidecar::telemetry::Exporter;
    let cfg = load(
        "distributed_tracing:\n  type: grpc\n  address: otel-collector:4317\n  sample_percentage: 10\n",
    )
    .expect("valid");
    assert_eq!(cfg.tracing.exporter, Exporter::OtlpGrpc);
    assert_eq!(
        cfg.tracing.endpoint.as_deref(),
        Some("http://otel-collector:4317")
    );
    assert!((cfg.tracing.sample_ratio - 0.1).abs() < 1e-9);
    assert_eq!(cfg.tracing.service_name, "opa", "OPA's default name");
    let cfg = load(
        "distributed_tracing:\n  type: http\n  address: collector:4318\n  encryption: tls\n  service_name: edge\n",
    )
    .expect("valid");
    assert_eq!(cfg.tracing.exporter, Exporter::OtlpHttp);
    assert_eq!(
        cfg.tracing.endpoint.as_deref(),
        Some("https://collector:4318")
    );
    assert_eq!(cfg.tracing.service_name, "edge");
    // Without `type` OPA does not trace.
    let cfg = load("distributed_tracing:\n  address: collector:4317\n").expect("valid");
    assert_eq!(cfg.tracing.exporter, Exporter::None);
}

#[test]
fn every_envoy_plugin_option_maps() {
    let cfg = load(
        "plugins:\n  envoy_ext_authz_grpc:\n    addr: localhost:9292\n    path: /istio/authz/allow\n    dry-run: true\n    enable-reflection: true\n    skip-request-body-parse: true\n    proto-descriptor: /etc/opa/app.pb\n    grpc-max-recv-msg-size: 40194304\n    grpc-max-send-msg-size: 2147483647\n",
    )
    .expect("valid");
    assert_eq!(cfg.grpc.addr.to_string(), "127.0.0.1:9292");
    assert_eq!(cfg.policy.path, "istio/authz/allow");
    assert!(cfg.policy.dry_run);
    assert!(cfg.grpc.reflection);
    assert!(cfg.policy.skip_request_body_parse);
    assert_eq!(
        cfg.policy.proto_descriptor.as_deref(),
        Some(Path::new("/etc/opa/app.pb"))
    );
    assert_eq!(cfg.grpc.max_recv_message_bytes, 40194304);

    let cfg = load("plugins:\n  envoy_ext_authz_grpc:\n    addr: 0.0.0.0:9191\n").expect("valid");
    assert_eq!(cfg.grpc.addr.to_string(), "0.0.0.0:9191");
    // OPA-Envoy's defaults, not Regent's: every interface, envoy/authz/allow.
    let cfg = load("plugins:\n  envoy_ext_authz_grpc: {}\n").expect("valid");
    assert_eq!(cfg.grpc.addr.to_string(), "0.0.0.0:9191");
    assert_eq!(cfg.policy.path, "envoy/authz/allow");
    assert_eq!(cfg.decision_logs.output, LogOutput::None);
}

#[test]
fn bundles_with_signing_keys_map_onto_sync() {
    let pem = public_pem();
    let text = format!(
        "services:\n  acmecorp:\n    url: https://example.com/control-plane-api/v1\n    response_header_timeout_seconds: 5\n    tls:\n      ca_cert: /etc/opa/ca.pem\n    credentials:\n      client_tls:\n        cert: /etc/opa/client.pem\n        private_key: /etc/opa/client-key.pem\nbundles:\n  authz:\n    service: acmecorp\n    resource: bundles/http/example/authz.tar.gz\n    persist: true\n    polling:\n      min_delay_seconds: 10\n      max_delay_seconds: 20\n      long_polling_timeout_seconds: 15\n    signing:\n      keyid: global_key\n      scope: write\nkeys:\n  global_key:\n    algorithm: EdDSA\n    key: |\n{}  unused_key:\n    algorithm: RS256\n    key: |\n{}persistence_directory: /var/opa\nplugins:\n  envoy_ext_authz_grpc:\n    addr: :9191\n",
        indent(&pem, 6),
        indent(&public_pem(), 6)
    );
    let cfg = load(&text).expect("valid");
    let s = &cfg.sync;
    assert_eq!(s.bundles.len(), 1);
    assert_eq!(s.bundles[0].name, "authz");
    assert_eq!(
        s.bundles[0].url,
        "https://example.com/control-plane-api/v1/bundles/http/example/authz.tar.gz"
    );
    assert_eq!(s.bundles[0].long_poll_timeout_seconds, Some(15));
    assert_eq!(s.polling.min_delay_seconds, 10);
    assert_eq!(s.polling.max_delay_seconds, 20);
    // Only the key OPA would use for the bundle is trusted.
    assert_eq!(s.keys.len(), 1);
    assert_eq!(s.keys[0].kid, "global_key");
    assert_eq!(s.keys[0].public_key.as_deref(), Some(pem.as_str()));
    assert_eq!(s.keys[0].algorithm.as_deref(), Some("EdDSA"));
    assert!(s.keys[0].public_key_file.is_none());
    assert_eq!(s.scope.as_deref(), Some("write"));
    assert!(!s.insecure_skip_verification);
    assert_eq!(
        s.persist_dir.as_deref(),
        Some(Path::new("/var/opa/bundles"))
    );
    assert_eq!(
        s.http.ca_file.as_deref(),
        Some(Path::new("/etc/opa/ca.pem"))
    );
    assert_eq!(
        s.http.client_cert_file.as_deref(),
        Some(Path::new("/etc/opa/client.pem"))
    );
    assert_eq!(
        s.http.client_key_file.as_deref(),
        Some(Path::new("/etc/opa/client-key.pem"))
    );
    assert_eq!(s.http.read_timeout_seconds, 5);
}

#[test]
fn bearer_credentials_status_and_labels_map() {
    let text = format!(
        "services:\n  - name: acmecorp\n    url: https://example.com/v1/\n    credentials:\n      bearer:\n        token_path: /var/run/secrets/opa/token\n        scheme: Bearer\nlabels:\n  app: myapp\n  region: west\nbundles:\n  authz:\n    signing:\n      keyid: k\nkeys:\n  k:\n    algorithm: EdDSA\n    scope: read\n    key: |\n{}status:\n  service: acmecorp\n  partition_name: fleet-a\n",
        indent(&public_pem(), 6)
    );
    let cfg = load(&text).expect("valid");
    let s = &cfg.sync;
    assert_eq!(
        s.http.bearer_token_file.as_deref(),
        Some(Path::new("/var/run/secrets/opa/token"))
    );
    // Service omitted: the only service; resource omitted: bundles/<name>.
    assert_eq!(s.bundles[0].url, "https://example.com/v1/bundles/authz");
    // OPA's polling defaults (60/120) and no long polling unless asked.
    assert_eq!(s.polling.min_delay_seconds, 60);
    assert_eq!(s.polling.max_delay_seconds, 120);
    assert_eq!(s.bundles[0].long_poll_timeout_seconds, Some(0));
    // The key's scope applies when the bundle's signing names none.
    assert_eq!(s.scope.as_deref(), Some("read"));
    assert_eq!(s.keys[0].algorithm.as_deref(), Some("EdDSA"));
    let status = s.status.as_ref().expect("status");
    assert_eq!(status.url, "https://example.com/v1/status/fleet-a");
    assert_eq!(status.labels.get("app").map(String::as_str), Some("myapp"));
    assert_eq!(
        status.labels.get("region").map(String::as_str),
        Some("west")
    );
    assert!(s.persist_dir.is_none());

    // OPA's inline token, with another scheme: sent as given, and never in debug output.
    let cfg = load("services:\n  s:\n    url: https://example.com/\n    credentials:\n      bearer:\n        token: s3cret\n        scheme: Token\nbundles:\n  authz:\n    service: s\n").expect("valid");
    let h = &cfg.sync.http;
    assert_eq!(h.bearer_token.as_ref().map(|t| t.expose()), Some("s3cret"));
    assert_eq!(h.bearer_scheme, "Token");
    assert!(h.bearer_token_file.is_none());
    assert!(!format!("{cfg:?}").contains("s3cret"));
}

#[test]
fn unsigned_bundles_are_accepted_unverified_as_in_opa() {
    let cfg = load(
        "services:\n  s:\n    url: http://bundles.local\nbundles:\n  authz:\n    service: s\n    resource: authz.tar.gz\n",
    )
    .expect("valid");
    assert!(cfg.sync.insecure_skip_verification);
    assert!(cfg.sync.keys.is_empty());
    assert_eq!(cfg.sync.bundles[0].url, "http://bundles.local/authz.tar.gz");
    let notes = &cfg.opa_origin.expect("opa").notes;
    assert!(notes.iter().any(|n| n.contains("NOT checked")), "{notes:?}");
}

#[test]
fn decision_logs_console_alone_is_opa_format() {
    let cfg = load("decision_logs:\n  console: true\n").expect("valid");
    assert_eq!(cfg.decision_logs.output, LogOutput::Stdout);
    assert!(cfg.opa_origin.is_some());
    // Regent's own section of the same name is still Regent's.
    let cfg = load("decision_logs:\n  output: stdout\n").expect("valid");
    assert_eq!(cfg.decision_logs.output, LogOutput::Stdout);
    assert!(cfg.opa_origin.is_none());
}

#[test]
fn each_unsupported_key_is_named_with_its_path_and_line() {
    let svc = "services:\n  s:\n    url: http://x\n";
    let key = format!(
        "keys:\n  k:\n    algorithm: EdDSA\n    key: |\n{}",
        indent(&public_pem(), 6)
    );
    let cases: Vec<(String, &str, Option<usize>)> = vec![
        (
            "plugins:\n  envoy_ext_authz_grpc:\n    addr: :9191\n    enable-performance-metrics: true\n".into(),
            "plugins.envoy_ext_authz_grpc.enable-performance-metrics: not supported by Regent",
            Some(4),
        ),
        (
            "plugins:\n  envoy_ext_authz_grpc:\n    grpc-max-send-msg-size: 1024\n".into(),
            "plugins.envoy_ext_authz_grpc.grpc-max-send-msg-size: not supported by Regent",
            Some(3),
        ),
        (
            "plugins:\n  envoy_ext_authz_grpc:\n    query: data.envoy.authz.allow\n".into(),
            "plugins.envoy_ext_authz_grpc.query: not supported by Regent",
            Some(3),
        ),
        (
            "plugins:\n  envoy_ext_authz_grpc:\n    addr: unix:///tmp/opa.sock\n".into(),
            "plugins.envoy_ext_authz_grpc.addr",
            Some(3),
        ),
        (
            "plugins:\n  envoy_ext_authz_grpc:\n    addr: opa.local:9191\n".into(),
            "plugins.envoy_ext_authz_grpc.addr",
            Some(3),
        ),
        (
            "plugins:\n  my_plugin:\n    x: 1\n".into(),
            "plugins.my_plugin: not supported by Regent",
            Some(2),
        ),
        (
            "discovery:\n  name: discovery\n  service: s\n".into(),
            "discovery.name: not supported by Regent",
            Some(2),
        ),
        (
            "distributed_tracing:\n  type: zipkin\n".into(),
            "distributed_tracing.type: must be grpc or http",
            Some(2),
        ),
        (
            "distributed_tracing:\n  type: grpc\n  encryption: mtls\n".into(),
            "distributed_tracing.encryption: not supported by Regent",
            Some(3),
        ),
        (
            "distributed_tracing:\n  type: grpc\n  sample_percentage: 150\n".into(),
            "sample_ratio",
            None,
        ),
        (
            "server:\n  encoding:\n    gzip:\n      min_length: 1024\n".into(),
            "server.encoding: not supported by Regent",
            Some(2),
        ),
        (
            "default_decision: /system/main\n".into(),
            "default_decision: not supported by Regent",
            Some(1),
        ),
        (
            "caching:\n  inter_query_builtin_cache:\n    max_size_bytes: 10000000\n".into(),
            "caching.inter_query_builtin_cache: not supported by Regent",
            Some(2),
        ),
        (
            "decision_logs:\n  service: s\n  reporting:\n    min_delay_seconds: 5\n".into(),
            "decision_logs.service: names service \"s\", which is not in `services`",
            Some(2),
        ),
        (
            "decision_logs:\n  console: true\n  reporting:\n    min_delay_seconds: 5\n".into(),
            "decision_logs.reporting: needs decision_logs.service",
            Some(3),
        ),
        (
            format!("{svc}decision_logs:\n  service: s\n  reporting:\n    max_decisions_per_second: 5\n"),
            "decision_logs.reporting.max_decisions_per_second: not supported by Regent",
            Some(7),
        ),
        (
            "decision_logs:\n  console: true\n  mask_decision: /acme/log/mask\n".into(),
            "decision_logs.mask_decision: not supported by Regent",
            Some(3),
        ),
        (
            format!("{svc}    headers:\n      X-Tenant: a\n"),
            "services.s.headers: not supported by Regent",
            Some(4),
        ),
        (
            format!("{svc}    credentials:\n      bearer:\n        token: secret\n        token_path: /t\n"),
            "services.s.credentials.bearer.token: give token or token_path, not both",
            Some(6),
        ),
        (
            format!("{svc}    credentials:\n      bearer:\n        token_path: /t\n        scheme: \"Bear er\"\n"),
            "services.s.credentials.bearer.scheme: the scheme must be one HTTP auth-scheme token",
            Some(7),
        ),
        (
            format!("{svc}    credentials:\n      bearer:\n        token: \"a\\nb\"\nbundles:\n  a:\n    service: s\n"),
            "services.s.credentials.bearer.token: the token holds characters not allowed in an HTTP header",
            Some(6),
        ),
        (
            format!("{svc}    credentials:\n      oauth2:\n        token_url: https://x/t\n"),
            "services.s.credentials.oauth2: not supported by Regent",
            Some(5),
        ),
        (
            format!("{svc}    credentials:\n      s3_signing:\n        environment_credentials: {{}}\n"),
            "services.s.credentials.s3_signing: not supported by Regent",
            Some(5),
        ),
        (
            format!("{svc}    type: oci\n"),
            "services.s.type: not supported by Regent",
            Some(4),
        ),
        (
            format!("{svc}    allow_insecure_tls: true\n"),
            "services.s.allow_insecure_tls: not supported by Regent",
            Some(4),
        ),
        (
            format!("{svc}    flavour: x\n"),
            "services.s.flavour: not supported by Regent",
            Some(4),
        ),
        (
            format!("{svc}bundles:\n  authz:\n    service: s\n    signing:\n      keyid: k\n      exclude_files: [\"data.json\"]\n{key}"),
            "bundles.authz.signing.exclude_files: not supported by Regent",
            Some(9),
        ),
        (
            format!("{svc}bundles:\n  authz:\n    service: s\n    resource: file:///etc/b.tar.gz\n"),
            "bundles.authz.resource: not supported by Regent",
            Some(7),
        ),
        (
            format!("{svc}bundles:\n  authz:\n    service: s\n    signing:\n      keyid: missing\n{key}"),
            "bundles.authz.signing.keyid: names key \"missing\"",
            Some(8),
        ),
        (
            format!("{svc}bundles:\n  authz:\n    service: nope\n"),
            "bundles.authz.service: names service \"nope\"",
            Some(6),
        ),
        (
            format!("{svc}bundles:\n  authz:\n    polling:\n      min_delay_seconds: 30\n      max_delay_seconds: 10\n"),
            "bundles.authz.polling.min_delay_seconds: must be at least 1",
            Some(7),
        ),
        (
            "keys:\n  k:\n    algorithm: HS256\n    key: secret\n".into(),
            "keys.k.algorithm: not supported by Regent",
            Some(3),
        ),
        (
            "keys:\n  k:\n    private_key: /etc/opa/signing.pem\n".into(),
            "keys.k.private_key: not supported by Regent",
            Some(3),
        ),
        (
            format!("{svc}status:\n  service: s\n  console: true\n"),
            "status.console: not supported by Regent",
            Some(6),
        ),
        (
            format!("{svc}bundles:\n  a:\n    service: s\n  b:\n    service: s\n    polling:\n      min_delay_seconds: 5\n"),
            "bundles.b.polling: not supported by Regent",
            Some(9),
        ),
        (
            format!("{svc}  t:\n    url: http://y\n    credentials:\n      bearer:\n        token_path: /t\nbundles:\n  a:\n    service: s\n  b:\n    service: t\n"),
            "services.t: not supported by Regent",
            Some(4),
        ),
    ];
    for (yaml, needle, line) in cases {
        let err = load_err(&yaml);
        assert!(err.contains("opa-config.yaml: "), "{yaml}\n=> {err}");
        assert!(err.contains(needle), "{yaml}\n=> {err}\nwanted {needle:?}");
        if let Some(l) = line {
            assert!(
                err.contains(&format!("line {l}: ")),
                "{yaml}\n=> {err}\nwanted line {l}"
            );
        }
    }
}

#[test]
fn a_file_mixing_both_formats_names_the_keys() {
    let err = load_err("services:\n  s:\n    url: http://x\ngrpc:\n  addr: 127.0.0.1:9191\n");
    assert!(
        err.contains("services") && err.contains("grpc") && err.contains("one format"),
        "{err}"
    );
    // A Regent file keeps Regent's errors.
    let err = load_err("grpc:\n  adr: 127.0.0.1:9191\n");
    assert!(err.contains("unknown field `adr`"), "{err}");
}

#[test]
fn the_binary_refuses_an_unsupported_opa_key_with_exit_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "opa-config.yaml",
        "plugins:\n  envoy_ext_authz_grpc:\n    addr: :9191\n    enable-performance-metrics: true\n",
    );
    let (code, stderr) = run_to_end(&["--config", config.to_str().expect("utf8")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "opa-config.yaml: line 4: plugins.envoy_ext_authz_grpc.enable-performance-metrics: not supported by Regent"
        ),
        "{stderr}"
    );
}

/// The real binary with an OPA configuration: it downloads a signed bundle from a server on
/// 127.0.0.1 and answers Checks with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_syncs_a_signed_bundle_with_an_opa_config() {
    let (srv, base) = sync_support::start().await;
    let (private, public) = signing::generate_key_pem();
    let key = signing::signing_key_from_pem(&private, "test key").expect("key");
    let mut files = BTreeMap::new();
    files.insert(
        ".manifest".to_string(),
        br#"{"revision":"r1","roots":["envoy"]}"#.to_vec(),
    );
    files.insert(
        "envoy/authz/policy.rego".to_string(),
        b"package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.attributes.request.http.path == \"/ok\"\n".to_vec(),
    );
    let mut bundle = Bundle::from_files(files).expect("bundle");
    let claims = SignClaims {
        iat: Some(1),
        ..SignClaims::default()
    };
    signing::sign(&mut bundle, &key, "bundle_key", &claims).expect("sign");
    srv.publish(bundle.to_tar_gz().expect("tar"), "\"r1\"");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "opa-config.yaml",
        &format!(
            "services:\n  control:\n    url: {base}\n    credentials:\n      bearer:\n        token: s3cret\n        scheme: Token\nbundles:\n  authz:\n    service: control\n    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 1\n    signing:\n      keyid: bundle_key\nkeys:\n  bundle_key:\n    algorithm: EdDSA\n    key: |\n{}plugins:\n  envoy_ext_authz_grpc:\n    addr: localhost:0\n    path: envoy/authz/allow\ndecision_logs:\n  console: true\n",
            indent(&public, 6)
        ),
    );
    let mut proc = Proc::spawn(&[
        "--config",
        config.to_str().expect("utf8"),
        "--http-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let listening = proc.event("regent-sidecar listening", Duration::from_secs(30));
    let grpc = listening_addr(&listening, "grpc");
    assert!(
        grpc.ip().is_loopback(),
        "localhost:0 binds loopback: {grpc}"
    );

    let mut client = connect(grpc).await;
    // Until the bundle is active the sidecar fails closed; wait (bounded) for the allow.
    let mut ok = None;
    for _ in 0..300 {
        let r = client
            .check(get("/ok").build())
            .await
            .expect("answer")
            .into_inner();
        if allowed(&r) {
            ok = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok.is_some(), "the synced policy never allowed /ok");
    let denied = client
        .check(get("/other").build())
        .await
        .expect("answer")
        .into_inner();
    assert!(!allowed(&denied), "{denied:?}");
    let seen = srv.seen();
    assert!(!seen.is_empty(), "the bundle was downloaded");
    // Every download carried the service's inline credentials.
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some("Token s3cret"), "{s:?}");
    }
    assert_eq!(
        proc.exited(),
        None,
        "the sidecar is still running after answering"
    );
}
