//! Bundle synchronisation: download, verify, activate and persist signed bundles.

pub mod backoff;
pub mod config;
pub mod download;
pub mod persist;
pub mod status;

pub use config::{
    BundleSource, ConfigError, HttpConfig, KeyConfig, PollingConfig, StatusConfig, SyncConfig,
};
