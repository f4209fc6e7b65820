//! What the webhook adds to a pod: the `--config` file of `regent inject-webhook`.
//!
//! The chart renders it from the same `regent.sidecarContainer` template it documents for manual
//! use, so injected and hand-written sidecars cannot drift apart.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The sidecar container, its volumes and the pod labels added on injection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectTemplate {
    /// A Kubernetes `Container` object; `name` is required and identifies an injected pod.
    pub container: Map<String, Value>,
    /// Kubernetes `Volume` objects added to the pod.
    #[serde(default)]
    pub volumes: Vec<Map<String, Value>>,
    /// Add the container as a native sidecar (an init container with `restartPolicy: Always`,
    /// Kubernetes >= 1.29), which is started and ready before the application containers.
    #[serde(default)]
    pub native_sidecar: bool,
    /// Labels set on injected pods (e.g. for a PodMonitor to find them).
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
}

/// A template that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// YAML/JSON syntax or an unknown key (serde names it).
    #[error("{0}")]
    Parse(String),
    /// A value that would make the patch invalid.
    #[error("invalid inject template: {0}")]
    Invalid(String),
}

impl InjectTemplate {
    /// Reads and validates a YAML (or JSON) template file.
    pub fn from_file(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            TemplateError::Parse(m) => TemplateError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates YAML (JSON is YAML too).
    pub fn from_yaml(text: &str) -> Result<Self, TemplateError> {
        let tpl: InjectTemplate =
            serde_yaml::from_str(text).map_err(|e| TemplateError::Parse(e.to_string()))?;
        tpl.validate()?;
        Ok(tpl)
    }

    /// The injected container's name.
    pub fn container_name(&self) -> &str {
        self.container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Names of the template's volumes.
    pub fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.volumes
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
    }

    /// Container ports the sidecar listens on (they share the pod's network namespace).
    pub fn container_ports(&self) -> Vec<i64> {
        container_ports(&self.container)
    }

    fn validate(&self) -> Result<(), TemplateError> {
        let bad = |m: String| Err(TemplateError::Invalid(m));
        match self.container.get("name") {
            Some(Value::String(n)) if is_dns_label(n) => {}
            Some(other) => {
                let msg = "container.name must be a DNS label (lowercase letters, digits, '-')";
                return bad(format!("{msg}, got {other}"));
            }
            None => return bad("container.name is required".into()),
        }
        if self.native_sidecar && self.container.contains_key("restartPolicy") {
            return bad("container.restartPolicy is set by nativeSidecar; leave it out".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let Some(name) = v.get("name").and_then(Value::as_str) else {
                return bad(format!("volumes[{i}] has no name"));
            };
            if !seen.insert(name) {
                return bad(format!("volumes[{i}]: duplicate volume name {name:?}"));
            }
        }
        if let Some(mounts) = self.container.get("volumeMounts") {
            let Some(mounts) = mounts.as_array() else {
                return bad("container.volumeMounts must be a list".into());
            };
            for (i, m) in mounts.iter().enumerate() {
                if m.get("name").and_then(Value::as_str).is_none() {
                    return bad(format!("container.volumeMounts[{i}] has no name"));
                }
            }
        }
        for key in self.pod_labels.keys() {
            if key.is_empty() || key.len() > 253 {
                return bad(format!("podLabels: invalid label key {key:?}"));
            }
        }
        Ok(())
    }
}

/// `containerPort`s of a container object.
pub(crate) fn container_ports(container: &Map<String, Value>) -> Vec<i64> {
    container
        .get("ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("containerPort").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_template_parses() {
        let t = InjectTemplate::from_yaml("container: {name: regent-sidecar, image: x}").unwrap();
        assert_eq!(t.container_name(), "regent-sidecar");
        assert!(!t.native_sidecar);
        assert!(t.volumes.is_empty());
    }

    #[test]
    fn bad_templates_are_explained() {
        for (yaml, needle) in [
            ("container: {image: x}", "container.name is required"),
            ("container: {name: Regent_Sidecar}", "DNS label"),
            ("container: {name: 7}", "DNS label"),
            (
                "container: {name: a}\nvolumes: [{emptyDir: {}}]",
                "volumes[0] has no name",
            ),
            (
                "container: {name: a}\nvolumes: [{name: v}, {name: v}]",
                "duplicate volume name",
            ),
            (
                "container: {name: a}\nsidecars: 1",
                "unknown field `sidecars`",
            ),
            (
                "container: {name: a, restartPolicy: Always}\nnativeSidecar: true",
                "restartPolicy",
            ),
            (
                "container: {name: a, volumeMounts: {}}",
                "volumeMounts must be a list",
            ),
            ("container: [1]", "invalid type"),
        ] {
            let err = InjectTemplate::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
