//! Bundle synchronisation: download, verify, activate and persist signed bundles.

use serde::Deserialize;

/// The `sync:` section of the sidecar configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {}
