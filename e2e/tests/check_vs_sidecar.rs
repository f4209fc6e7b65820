//! `regent check` and the sidecar's own `Authorizer` answer the same requests the same way.

#[path = "../../bundle-server/tests/cli_support/mod.rs"]
mod cli_support;

use std::sync::Arc;
use std::time::Duration;

use cli_support::*;
use regent_bundle_server::authoring::check::render_response;
use regent_bundle_server::authoring::check_request::check_request_from_json;
use regent_policy::input::InputOptions;
use regent_sidecar::authorizer::Authorizer;
use regent_sidecar::config::{DecisionLogConfig, EngineChoice, FailModeConfig};
use regent_sidecar::decision_log::DecisionLogger;
use regent_sidecar::metrics::Metrics;
use regent_sidecar::policy::{PolicySettings, PolicyStore};

/// `regent check` and the sidecar's `Authorizer` give the same answer for the same requests.
#[test]
fn check_agrees_with_the_sidecar_authorizer() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let dir = policy_dir(cwd);

    let settings = PolicySettings {
        rule: "data.envoy.authz.allow".into(),
        engine: EngineChoice::Auto,
        eval_timeout: Duration::from_secs(1),
        ..PolicySettings::default()
    };
    let store = Arc::new(PolicyStore::new(
        settings,
        prometheus::IntCounter::new("activations", "test").unwrap(),
    ));
    let bundle = regent_bundle::Bundle::from_dir(&dir, &Default::default()).unwrap();
    store
        .activate(&[("local".to_string(), Arc::new(bundle))])
        .unwrap();
    let logger = DecisionLogger::start(
        &DecisionLogConfig::default(),
        "envoy/authz/allow",
        regent_sidecar::decision_log::DecisionLogMetrics::new().unwrap(),
    )
    .unwrap();
    let authorizer = Authorizer::new(
        store,
        Metrics::new().unwrap(),
        logger,
        InputOptions::default(),
        false,
        FailModeConfig::default(),
    );

    let cases = [
        ("allow", request("GET", "/api/items?x=1", "alice"), 0),
        ("deny", request("GET", "/api/items", "bob"), 3),
        ("post", request("POST", "/api/items", "alice"), 3),
        ("parse-error", request("GET", "/api/%ff", "alice"), 3),
    ];
    for (name, req, want_code) in cases {
        let file = format!("{name}.json");
        write_json(cwd, &file, &req);
        let (c, mut cli, err) = check(cwd, "policies", &file);
        assert_eq!(c, want_code, "{name}: {cli}{err}");

        let proto = check_request_from_json(&req).unwrap();
        let resp = authorizer.check_now(&proto).unwrap();
        let mut sidecar = render_response(&resp);

        // Decision ids are random in the sidecar; everything else must match.
        for doc in [&mut cli, &mut sidecar] {
            doc["dynamic_metadata"]
                .as_object_mut()
                .unwrap()
                .remove("decision_id");
            doc.as_object_mut().unwrap().remove("decision");
        }
        assert_eq!(cli, sidecar, "{name}");
        assert_eq!(cli["allowed"], want_code == 0, "{name}");
    }
}
