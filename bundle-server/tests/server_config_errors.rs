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

/// A refused configuration: the file, and what stderr must contain.
struct Refusal {
    what: &'static str,
    yaml: &'static str,
    want: &'static [&'static str],
}

#[test]
fn refused_configurations_name_file_line_and_key_and_exit_2() {
    let cases = [
        Refusal {
            what: "an unknown key deep in a section",
            yaml: "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\n    rots: [envoy]\nsigning: {keys: [], active_kid: k}\n",
            want: &["serve.yaml:6:", "bundles[0]: unknown field `rots`"],
        },
        Refusal {
            what: "a value of the wrong type",
            yaml: "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\n    roots: 5\nsigning: {keys: [], active_kid: k}\n",
            want: &["serve.yaml:6:", "bundles[0].roots: invalid type"],
        },
        Refusal {
            what: "no git section",
            yaml: "bundles: []\nsigning: {keys: [], active_kid: k}\n",
            want: &["serve.yaml", "missing field `git`", "--repo"],
        },
        Refusal {
            what: "a signing algorithm that does not exist",
            yaml: "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\nsigning:\n  keys: [{kid: k, private_key_file: /nonexistent.pem}]\n  active_kid: k\n  algorithm: RS999\n",
            want: &[
                "serve.yaml:9: signing.algorithm: \"RS999\" is not a bundle signing algorithm",
            ],
        },
        Refusal {
            what: "HMAC as the signing algorithm",
            yaml: "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\nsigning:\n  algorithm: HS256\n  keys: [{kid: k, private_key_file: /nonexistent.pem}]\n  active_kid: k\n",
            want: &["serve.yaml:7: signing.algorithm: \"HS256\""],
        },
        Refusal {
            what: "a value that parses but cannot work, in a list",
            yaml: "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\n  - name: platform\n    dir: ../outside\nsigning: {keys: [{kid: k, private_key_file: /k.pem}], active_kid: k}\n",
            want: &["serve.yaml:7: bundles[1].dir: \"../outside\" must be a relative path"],
        },
        Refusal {
            what: "an unreadable signing key",
            yaml: "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\nsigning: {keys: [{kid: k, private_key_file: /nonexistent.pem}], active_kid: k}\n",
            want: &["signing.keys[0] (kid \"k\")", "/nonexistent.pem"],
        },
    ];
    for case in cases {
        let (code, err) = serve_with(case.yaml);
        assert_eq!(code, Some(2), "{}: {err}", case.what);
        for want in case.want {
            assert!(err.contains(want), "{}: {want:?} not in: {err}", case.what);
        }
        assert!(!err.contains("panicked"), "{}: {err}", case.what);
    }
}

#[test]
fn signing_algorithm_that_does_not_fit_the_key_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = regent(&["keygen", "--out-dir", ".", "--name", "ed"], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        dir.path().join("serve.yaml"),
        "git:\n  repo: /srv/policy.git\nbundles:\n  - name: authz\n    dir: policies\nsigning:\n  keys: [{kid: k, private_key_file: ed.key}]\n  active_kid: k\n  algorithm: RS256\n",
    )
    .expect("writing serve.yaml");
    let out = regent(&["serve", "--config", "serve.yaml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("signing.algorithm: algorithm RS256 cannot be used with"),
        "{err}"
    );
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
