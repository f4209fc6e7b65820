//! Decision paths: OPA's slash syntax (`envoy/authz/allow`) and the rule references regorus takes.

/// OPA-Envoy's decision path when none is configured.
pub const DEFAULT_DECISION_PATH: &str = "envoy/authz/allow";

/// Converts a decision path in OPA's syntax (`envoy/authz/allow`) to a rule reference
/// (`data.envoy.authz.allow`). Slashes at both ends are trimmed; segments that are not plain identifiers
/// are quoted (`test/com.foo/allow` → `data.test["com.foo"].allow`). An empty path is OPA-Envoy's
/// default, [`DEFAULT_DECISION_PATH`].
pub fn decision_rule(path: &str) -> Result<String, String> {
    let mut trimmed = path.trim().trim_matches('/');
    if trimmed.is_empty() {
        trimmed = DEFAULT_DECISION_PATH;
    }
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!("policy.path {path:?} has an empty segment"));
    }
    Ok(rule_ref(&segments))
}

/// The rule reference under `data` for path components, as OPA prints it: plain identifiers joined
/// with `.`, anything else quoted in brackets (`["test", "com.foo"]` → `data.test["com.foo"]`).
pub fn rule_ref<S: AsRef<str>>(components: &[S]) -> String {
    let mut rule = String::from("data");
    for seg in components {
        let seg = seg.as_ref();
        let ident = seg
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            rule.push('.');
            rule.push_str(seg);
        } else {
            rule.push('[');
            rule.push_str(&serde_json::Value::from(seg).to_string());
            rule.push(']');
        }
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_paths_follow_opa_syntax() {
        assert_eq!(
            decision_rule("envoy/authz/allow").unwrap(),
            "data.envoy.authz.allow"
        );
        assert_eq!(
            decision_rule("/istio/authz/allow/").unwrap(),
            "data.istio.authz.allow"
        );
        assert_eq!(
            decision_rule("test/com.foo/allow").unwrap(),
            r#"data.test["com.foo"].allow"#
        );
        assert_eq!(decision_rule("").unwrap(), "data.envoy.authz.allow");
        assert_eq!(decision_rule(" / ").unwrap(), "data.envoy.authz.allow");
        assert!(decision_rule("a//b").is_err());
    }
}
