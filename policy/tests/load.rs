//! Loading bundles into regorus: OPA's activation checks (roots, names, rule/data conflicts).

use regent_bundle::{BuildOptions, Bundle};

fn write_tree(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
}

#[test]
fn loaded_bundle_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("envoy/authz/policy.rego", "package envoy.authz\n\ndefault allow := false\nallow if input.user == data.envoy.authz.admin\n"),
            ("envoy/authz/data.json", r#"{"admin": "alice"}"#),
        ],
    );
    let b = Bundle::from_dir(dir.path(), &BuildOptions::default()).unwrap();
    let mut engine = regent_policy::load::load_bundles(&[("main", &b)]).unwrap();
    engine.set_input(regorus::Value::from_json_str(r#"{"user":"alice"}"#).unwrap());
    assert_eq!(
        engine.eval_rule("data.envoy.authz.allow".into()).unwrap(),
        regorus::Value::from(true)
    );
    engine.set_input(regorus::Value::from_json_str(r#"{"user":"bob"}"#).unwrap());
    assert_eq!(
        engine.eval_rule("data.envoy.authz.allow".into()).unwrap(),
        regorus::Value::from(false)
    );
}

#[test]
fn engine_refuses_overlaps_and_rule_data_conflicts() {
    use regent_policy::load::{load_bundles, LoadError};
    let mk = |files: &[(&str, &str)]| {
        Bundle::from_files(
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        )
        .unwrap()
    };
    let a = mk(&[
        (".manifest", r#"{"roots":["authz"]}"#),
        ("p.rego", "package authz\nallow := true\n"),
    ]);
    let b = mk(&[(".manifest", r#"{"roots":["authz/extra"]}"#)]);
    let all = mk(&[("q.rego", "package other\n")]);
    assert!(matches!(
        load_bundles(&[("a", &a), ("b", &b)]),
        Err(LoadError::OverlappingRoots { .. })
    ));
    assert!(matches!(
        load_bundles(&[("a", &a), ("all", &all)]),
        Err(LoadError::OverlappingRoots { .. })
    ));
    assert!(matches!(
        load_bundles(&[
            ("a", &a),
            ("a", &mk(&[(".manifest", r#"{"roots":["x"]}"#)]))
        ]),
        Err(LoadError::DuplicateName(_))
    ));

    let conflict = mk(&[
        ("p.rego", "package authz\nallow := true\n"),
        ("authz/data.json", r#"{"allow": false}"#),
    ]);
    let err = load_bundles(&[("c", &conflict)]).unwrap_err();
    assert!(
        matches!(&err, LoadError::RuleDataConflict { rule, .. } if rule == "data.authz.allow"),
        "{err}"
    );

    let disjoint_ok = mk(&[
        ("p.rego", "package authz\nallow := true\n"),
        ("authz/data.json", r#"{"roles": {}}"#),
    ]);
    assert!(load_bundles(&[("d", &disjoint_ok)]).is_ok());
}
