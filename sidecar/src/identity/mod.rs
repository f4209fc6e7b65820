//! Identity at the edge: remote key sets (JWKS) of identity providers, kept current for the
//! policies' `io.jwt.decode_verify(token, {"jwks_issuer": ...})` and `regent.jwks(issuer)`.
//!
//! [`start`] restores each issuer's persisted key set (if young enough), publishes it in
//! regent-policy's registry (`regent_policy::builtins::keysets`) and starts one fetcher task
//! per issuer ([`fetch`]). The Check path only reads the registry: it never waits on a fetch.
//!
//! Passports ([`passport`]): [`start`] also reads the passport key files and publishes them
//! for `regent.passport.mint` / `regent.passport.verify`;
//! [`IdentityHandle::passport_watcher`] re-reads them when they change. See docs/identity.md.

pub mod config;
pub mod fetch;
pub mod metrics;
pub mod passport;
pub mod persist;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use regent_policy::builtins::keysets::{self, KeySetState, RemoteKeySet};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{IdentityConfig, IdentityConfigError, JwksSource};

use fetch::{KeySetTask, NotifyHook, RefreshSignal};
use metrics::JwksMetrics;
use passport::PassportHandle;

/// Running key set fetchers and the published passport keys.
pub struct IdentityHandle {
    /// (issuer, registry installation) of each key set.
    installed: Vec<(String, u64)>,
    shutdown: watch::Sender<bool>,
    /// Taken by the first [`IdentityHandle::shutdown`].
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The passport keys, when `identity.passport` is configured.
    passport: Option<PassportHandle>,
}

/// One key set's state, as `/ready` and the status report show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeySetReport {
    /// Seconds since the keys were fetched or last confirmed (absent while there are none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// When the keys were fetched or last confirmed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// Usable keys in force (0 while there are none).
    pub keys: usize,
    /// True while tokens of this issuer are refused: no keys yet, or past `max_stale_seconds`.
    pub unavailable: bool,
    /// The last refresh failure, while refreshes fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl KeySetReport {
    /// The report of one registry state at `now`.
    pub fn of(state: &KeySetState, now: SystemTime) -> KeySetReport {
        let usable = state.usable(now);
        KeySetReport {
            age_seconds: usable.and(state.age(now)).map(|a| a.as_secs()),
            fetched_at: usable.and(state.fetched_at).map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            keys: usable.map_or(0, |k| k.len()),
            unavailable: usable.is_none(),
            last_error: state.last_error.clone(),
        }
    }
}

/// Every key set in the process's registry, by issuer (what the status report carries; a
/// sidecar process has one configuration, so these are its key sets).
pub fn all_reports() -> BTreeMap<String, KeySetReport> {
    let now = SystemTime::now();
    keysets::all_states()
        .into_iter()
        .map(|(issuer, s)| (issuer, KeySetReport::of(&s, now)))
        .collect()
}

impl IdentityHandle {
    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.installed.iter().map(|(i, _)| i.as_str())
    }

    /// The state of each configured key set.
    pub fn reports(&self) -> BTreeMap<String, KeySetReport> {
        let now = SystemTime::now();
        self.installed
            .iter()
            .filter_map(|(issuer, _)| {
                keysets::state(issuer).map(|s| (issuer.clone(), KeySetReport::of(&s, now)))
            })
            .collect()
    }

    /// A watcher that re-reads the passport key files when they change (for
    /// `crate::reload::spawn`); `None` without passports. Blocking: it fingerprints the files.
    pub fn passport_watcher(&self) -> Option<crate::reload::Watcher> {
        self.passport.as_ref().map(PassportHandle::watcher)
    }

    /// Stops the fetchers and withdraws the key sets and passport keys from the registries.
    pub async fn shutdown(&self) {
        if let Some(p) = &self.passport {
            p.shutdown();
        }
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in tasks {
            let _ = t.await;
        }
        for (issuer, installation) in &self.installed {
            keysets::uninstall(issuer, *installation);
        }
    }
}

/// The HTTP client of one provider: the bundle downloads' client builder with this key set's
/// timeout and CA file.
fn client_for(src: &JwksSource) -> anyhow::Result<reqwest::Client> {
    let http = crate::sync::HttpConfig {
        connect_timeout_seconds: src.timeout_seconds,
        read_timeout_seconds: src.timeout_seconds,
        ca_file: src.ca_file.clone(),
        ..Default::default()
    };
    Ok(crate::sync::download::build_client(
        &http,
        Duration::from_secs(src.timeout_seconds),
    )?)
}

/// The persisted key set of `src`, if there is one that parses and is younger than
/// `max_stale_seconds`; anything else is logged and skipped (the first fetch replaces it).
async fn restore(
    src: &JwksSource,
    path: &Path,
) -> Option<(Arc<RemoteKeySet>, String, Option<String>, SystemTime)> {
    let (p, issuer, max) = (path.to_path_buf(), src.issuer.clone(), src.max_bytes);
    let loaded = match tokio::task::spawn_blocking(move || persist::load(&p, &issuer, max)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(issuer = %src.issuer, error = %e, "key set restore task failed");
            return None;
        }
    };
    let persisted = match loaded {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(issuer = %src.issuer, error = %e, "persisted key set unreadable; skipped");
            return None;
        }
    };
    let age = SystemTime::now()
        .duration_since(persisted.fetched_at)
        .unwrap_or(Duration::ZERO);
    if age > Duration::from_secs(src.max_stale_seconds) {
        tracing::warn!(issuer = %src.issuer, age_seconds = age.as_secs(), "persisted key set is older than max_stale_seconds; not used");
        return None;
    }
    match RemoteKeySet::parse(persisted.jwks.as_bytes()) {
        Ok((set, _)) => {
            tracing::info!(issuer = %src.issuer, keys = set.len(), age_seconds = age.as_secs(), "restored the persisted key set");
            Some((
                Arc::new(set),
                persisted.jwks,
                persisted.etag,
                persisted.fetched_at,
            ))
        }
        Err(e) => {
            tracing::warn!(issuer = %src.issuer, error = %e, "persisted key set refused; skipped");
            None
        }
    }
}

/// Publishes the passport keys and starts the key set fetchers of `cfg` (neither configured:
/// `None`). `persist_dir` is the effective persistence directory (`identity.persist_dir`, else
/// `sync.persist_dir`). Returns once the passport keys and persisted key sets are published; the
/// first fetches run in the background.
pub async fn start(
    cfg: &IdentityConfig,
    persist_dir: Option<&Path>,
    registry: &prometheus::Registry,
) -> anyhow::Result<Option<IdentityHandle>> {
    cfg.validate()?;
    if cfg.jwks.is_empty() {
        let Some(passport) = start_passport(cfg, registry).await? else {
            return Ok(None);
        };
        return Ok(Some(IdentityHandle {
            installed: Vec::new(),
            shutdown: watch::channel(false).0,
            tasks: std::sync::Mutex::new(Vec::new()),
            passport: Some(passport),
        }));
    }
    let issuers: Vec<String> = cfg.jwks.iter().map(|s| s.issuer.clone()).collect();
    let metrics =
        JwksMetrics::register(registry, &issuers).context("registering the key set metrics")?;
    let mut prepared = Vec::new();
    for (i, src) in cfg.jwks.iter().enumerate() {
        let client = client_for(src).with_context(|| format!("identity.jwks[{i}]"))?;
        prepared.push((src, client));
    }
    // After the steps that can fail, so a refused key set configuration leaves nothing published.
    let passport = start_passport(cfg, registry).await?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut installed = Vec::new();
    let mut tasks = Vec::new();
    for (src, client) in prepared {
        let persist = persist_dir.map(|d| persist::path_for(d, &src.issuer));
        let restored = match &persist {
            Some(p) => restore(src, p).await,
            None => None,
        };
        let mut state = KeySetState::empty(Duration::from_secs(src.max_stale_seconds));
        let mut raw = None;
        if let Some((set, jwks, etag, fetched_at)) = restored {
            state.keys = Some(set);
            state.fetched_at = Some(fetched_at);
            raw = Some((jwks, etag));
        }
        let signal = Arc::new(RefreshSignal::new(src));
        let installation = keysets::install(
            &src.issuer,
            Some(Arc::new(NotifyHook(signal.clone()))),
            state,
        );
        installed.push((src.issuer.clone(), installation));
        let task = KeySetTask {
            src: src.clone(),
            client,
            metrics: metrics.clone(),
            persist,
            signal,
            raw,
            discovered: None,
        };
        tasks.push(tokio::spawn(task.run(shutdown_rx.clone())));
    }
    tracing::info!(issuers = ?issuers, "key set fetchers started");
    Ok(Some(IdentityHandle {
        installed,
        shutdown,
        tasks: std::sync::Mutex::new(tasks),
        passport,
    }))
}

/// Reads the passport key files off the runtime threads and publishes them, if configured.
async fn start_passport(
    cfg: &IdentityConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<Option<PassportHandle>> {
    if !cfg.passport.enabled() {
        return Ok(None);
    }
    let (settings, registry) = (cfg.passport.clone(), registry.clone());
    let handle = tokio::task::spawn_blocking(move || PassportHandle::start(&settings, &registry))
        .await
        .context("passport key loading task failed")??;
    Ok(Some(handle))
}
