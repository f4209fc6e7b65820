//! Deciding whether a pod gets the sidecar, and the RFC 6902 JSON patch that adds it.
//!
//! Pure functions of (pod, template): no I/O, so every case is unit-tested.

use serde_json::{json, Map, Value};

use super::template::{container_ports, InjectTemplate};

/// Pod annotation (or label) that opts a pod out when set to `"false"`.
pub const INJECT_ANNOTATION: &str = "regent.dev/inject";
/// Annotation the webhook sets on pods it injected.
pub const STATUS_ANNOTATION: &str = "regent.dev/status";

/// What the webhook decided for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Add the sidecar with these JSON patch operations.
    Inject(Vec<Value>),
    /// Leave the pod unchanged, for this reason.
    Skip(SkipReason),
}

/// Why a pod is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `regent.dev/inject: "false"`.
    OptedOut,
    /// A container (or init container) with the sidecar's name is already there, e.g. when the
    /// webhook is invoked again (`reinvocationPolicy: IfNeeded`) or the sidecar was added by hand.
    AlreadyInjected,
    /// Injecting would break the pod (a volume name or port already in use); the message says
    /// which. Returned to the user as an admission warning.
    Conflict(String),
}

impl SkipReason {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::OptedOut => "opted_out",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::Conflict(_) => "conflict",
        }
    }
}

/// A pod object the patch cannot be computed for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PodError(pub String);

/// Plans the injection of `tpl` into `pod` (a Kubernetes Pod as JSON).
pub fn plan(pod: &Value, tpl: &InjectTemplate) -> Result<Plan, PodError> {
    let pod = pod
        .as_object()
        .ok_or_else(|| PodError("the pod is not a JSON object".into()))?;
    let metadata = optional_object(pod, "metadata", "metadata")?;
    let annotations = match metadata {
        Some(m) => optional_object(m, "annotations", "metadata.annotations")?,
        None => None,
    };
    let labels = match metadata {
        Some(m) => optional_object(m, "labels", "metadata.labels")?,
        None => None,
    };
    if is_opted_out(annotations) || is_opted_out(labels) {
        return Ok(Plan::Skip(SkipReason::OptedOut));
    }
    let spec = pod
        .get("spec")
        .ok_or_else(|| PodError("the pod has no spec".into()))?
        .as_object()
        .ok_or_else(|| PodError("spec is not an object".into()))?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        // The sidecar's ports would be the node's, shared by every such pod on it.
        return Ok(Plan::Skip(SkipReason::Conflict(
            "regent-sidecar not injected: the pod uses hostNetwork (its ports would be the node's)"
                .into(),
        )));
    }
    let containers = optional_array(spec, "containers", "spec.containers")?;
    let init_containers = optional_array(spec, "initContainers", "spec.initContainers")?;
    let volumes = optional_array(spec, "volumes", "spec.volumes")?;

    let name = tpl.container_name();
    let mut all_containers = containers
        .into_iter()
        .flatten()
        .chain(init_containers.into_iter().flatten());
    if all_containers.any(|c| c.get("name").and_then(Value::as_str) == Some(name)) {
        return Ok(Plan::Skip(SkipReason::AlreadyInjected));
    }
    let mut ports_in_use = Vec::new();
    // Regular containers and native sidecars stay up next to ours and share its network
    // namespace; ordinary init containers have exited by then.
    for c in containers.into_iter().flatten() {
        ports_in_use.extend(c.as_object().map(container_ports).unwrap_or_default());
    }
    for c in init_containers.into_iter().flatten() {
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            ports_in_use.extend(c.as_object().map(container_ports).unwrap_or_default());
        }
    }
    if let Some(port) = tpl
        .container_ports()
        .into_iter()
        .find(|p| ports_in_use.contains(p))
    {
        return Ok(Plan::Skip(SkipReason::Conflict(format!(
            "regent-sidecar not injected: port {port} is already used by a container of this pod"
        ))));
    }
    let existing_volumes: Vec<&str> = volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    if let Some(v) = tpl.volume_names().find(|v| existing_volumes.contains(v)) {
        return Ok(Plan::Skip(SkipReason::Conflict(format!(
            "regent-sidecar not injected: the pod already has a volume named {v:?}"
        ))));
    }

    let mut ops = Vec::new();
    let mut container = tpl.container.clone();
    let (path, exists) = if tpl.native_sidecar {
        container.insert("restartPolicy".into(), json!("Always"));
        ("/spec/initContainers", init_containers.is_some())
    } else {
        ("/spec/containers", containers.is_some())
    };
    append(&mut ops, path, exists, vec![Value::Object(container)]);
    if !tpl.volumes.is_empty() {
        let vols = tpl.volumes.iter().cloned().map(Value::Object).collect();
        append(&mut ops, "/spec/volumes", volumes.is_some(), vols);
    }

    let mut new_annotations = Map::new();
    new_annotations.insert(STATUS_ANNOTATION.into(), json!("injected"));
    let new_labels: Map<String, Value> = tpl
        .pod_labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if metadata.is_none() {
        let mut m = Map::new();
        m.insert("annotations".into(), Value::Object(new_annotations));
        if !new_labels.is_empty() {
            m.insert("labels".into(), Value::Object(new_labels));
        }
        ops.push(json!({"op": "add", "path": "/metadata", "value": m}));
    } else {
        set_keys(
            &mut ops,
            "/metadata/annotations",
            annotations.is_some(),
            new_annotations,
        );
        if !new_labels.is_empty() {
            set_keys(&mut ops, "/metadata/labels", labels.is_some(), new_labels);
        }
    }
    Ok(Plan::Inject(ops))
}

/// Escapes a key for use in a JSON pointer (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn is_opted_out(map: Option<&Map<String, Value>>) -> bool {
    map.and_then(|m| m.get(INJECT_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// Adds `items` to the array at `path`, creating the array when the pod has none (a JSON patch
/// `add` to `path/-` fails if the array is missing).
fn append(ops: &mut Vec<Value>, path: &str, exists: bool, items: Vec<Value>) {
    if exists {
        for item in items {
            ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item}));
        }
    } else {
        ops.push(json!({"op": "add", "path": path, "value": items}));
    }
}

/// Sets keys of the object at `path`, creating the object when missing.
fn set_keys(ops: &mut Vec<Value>, path: &str, exists: bool, entries: Map<String, Value>) {
    if exists {
        for (k, v) in entries {
            ops.push(
                json!({"op": "add", "path": format!("{path}/{}", pointer_escape(&k)), "value": v}),
            );
        }
    } else {
        ops.push(json!({"op": "add", "path": path, "value": entries}));
    }
}

fn optional_object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, PodError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(PodError(format!("{what} is not an object"))),
    }
}

fn optional_array<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a Vec<Value>>, PodError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(PodError(format!("{what} is not a list"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escape_follows_rfc6901() {
        assert_eq!(pointer_escape("regent.dev/status"), "regent.dev~1status");
        assert_eq!(pointer_escape("a~b/c"), "a~0b~1c");
    }
}
