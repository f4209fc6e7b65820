//! Finding test rules in loaded modules.
//!
//! regorus has no public "list rules" API, so this reads the parsed modules through its
//! `unstable` AST (regorus is pinned to an exact version in the workspace, so this cannot change
//! under us unnoticed: a new version fails to compile here first).

use std::collections::{BTreeMap, BTreeSet};

use regorus::unstable::{Parser, Rule, RuleHead};
use regorus::Engine;

/// A test rule found in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestRule {
    /// Module path as loaded into the engine.
    pub source_file: String,
    /// Line of the first definition's head.
    pub line: u32,
    /// Package components, decoded (`["envoy", "authz_test"]`).
    pub package: Vec<String>,
    /// Rule name (`test_...`).
    pub name: String,
}

/// Every rule named `test_*` whose head is a plain name (not a function, a partial set or a
/// ref head), once per package and name even when defined by several bodies, sorted by
/// file then line.
pub(crate) fn test_rules(engine: &mut Engine) -> anyhow::Result<Vec<TestRule>> {
    let packages: BTreeMap<String, Vec<String>> = engine
        .get_policy_package_components()?
        .into_iter()
        .map(|p| (p.source_file, p.components))
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for module in engine.get_modules().iter() {
        let source_file = module.package.span.source.file().to_string();
        let Some(package) = packages.get(&source_file) else {
            continue;
        };
        for rule in &module.policy {
            let Rule::Spec { head, .. } = &**rule else {
                continue;
            };
            // `test_x if ...` and `test_x := v if ...` are Compr heads; functions and
            // `test_x contains v` are not tests in OPA either.
            let RuleHead::Compr { refr, span, .. } = head else {
                continue;
            };
            let components = Parser::get_path_ref_components(refr)?;
            let [only] = components.as_slice() else {
                continue;
            };
            let name = only.text();
            if !name.starts_with("test_") {
                continue;
            }
            if seen.insert((package.clone(), name.to_string())) {
                out.push(TestRule {
                    source_file: source_file.clone(),
                    line: span.line,
                    package: package.clone(),
                    name: name.to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.source_file, a.line).cmp(&(&b.source_file, b.line)));
    Ok(out)
}

/// Rule references are printed exactly as the sidecar builds its decision rule.
pub(crate) use regent_policy::rule_ref;

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(modules: &[(&str, &str)]) -> Engine {
        let mut e = Engine::new();
        for (path, src) in modules {
            e.add_policy(path.to_string(), src.to_string()).unwrap();
        }
        e
    }

    #[test]
    fn finds_only_plain_test_rules_once_each() {
        let mut e = engine(&[
            (
                "b_test.rego",
                "package p_test\n\ntest_b if true\n\ntest_a if {\n  true\n}\ntest_a if false\n",
            ),
            (
                "a_test.rego",
                "package q\n\ntest_fn(x) := x\ntest_set contains 1\nnot_a_test if true\ntest_value := 1\n",
            ),
        ]);
        let found = test_rules(&mut e).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|t| (t.source_file.as_str(), t.line, t.name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a_test.rego", 6, "test_value"),
                ("b_test.rego", 3, "test_b"),
                ("b_test.rego", 5, "test_a"),
            ]
        );
        assert_eq!(found[1].package, vec!["p_test".to_string()]);
    }

    #[test]
    fn rule_refs_quote_non_identifiers() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(rule_ref(&c(&["a", "b_1", "test_x"])), "data.a.b_1.test_x");
        assert_eq!(
            rule_ref(&c(&["com.foo", "test_x"])),
            r#"data["com.foo"].test_x"#
        );
    }
}
