//! `regent serve` refuses a bad configuration before it starts: the message names the file, the
//! line and the dotted key, and the exit code is 2 like the sidecar's. `--help` shows defaults
//! taken from the code.

use std::path::Path;
use std::process::{Command, Output};

use regent_bundle_server::server::ServerConfig;

fn regent(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regent"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running regent")
}

fn serve_with(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("serve.yaml"), yaml).expect("writing serve.yaml");
    let out = regent(&["serve", "--config", "serve.yaml"], dir.path());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_deep_in_a_section_names_file_line_and_path() {
    let (code, err) = serve_with(
        "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\n    rots: [envoy]\nsigning: {keys: [], active_kid: k}\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("serve.yaml:6:"), "{err}");
    assert!(err.contains("bundles[0]: unknown field `rots`"), "{err}");
}

#[test]
fn wrong_type_names_file_line_and_path() {
    let (code, err) = serve_with(
        "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\n    roots: 5\nsigning: {keys: [], active_kid: k}\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("serve.yaml:6:"), "{err}");
    assert!(err.contains("bundles[0].roots: invalid type"), "{err}");
}

#[test]
fn missing_git_says_how_to_give_it() {
    let (code, err) = serve_with("bundles: []\nsigning: {keys: [], active_kid: k}\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("serve.yaml"), "{err}");
    assert!(err.contains("missing field `git`"), "{err}");
    assert!(err.contains("--repo"), "{err}");
}

#[test]
fn no_arguments_says_what_to_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = regent(&["serve"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("regent serve needs --config FILE or --repo URL"),
        "{err}"
    );
}

#[test]
fn serve_help_shows_the_config_defaults() {
    let defaults = ServerConfig::from_yaml(
        "git: {repo: /srv/policy.git}\nbundles: []\nsigning: {keys: [], active_kid: k}\n",
    )
    .expect("minimal configuration");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = regent(&["serve", "--help"], dir.path());
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("[default: {}]", defaults.listen),
        format!("[default: {}]", defaults.git.branch),
        format!("[default: {}]", defaults.data_dir.display()),
    ] {
        assert!(help.contains(&want), "{want} not in:\n{help}");
    }
}

#[test]
fn build_help_shows_the_output_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = regent(&["build", "--help"], dir.path());
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: bundle.tar.gz]"), "{help}");
}
