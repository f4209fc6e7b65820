//! `regent serve`: the bundle server.
//!
//! Watches a policy git repository ([`git`]), gates every new commit of the tracked branch
//! ([`gate`]: build, compile like the sidecar, test, check entrypoints, sign), and serves the
//! signed bundles with ETags and OPA long polling ([`api`]); collects sidecar status reports into
//! a fleet view ([`fleet`]). One build at a time ([`builder`]); the last publication is kept in
//! the data dir so a restart serves at once ([`store`]).

pub mod api;
pub mod auth;
pub mod builder;
pub mod config;
pub mod fleet;
pub mod gate;
pub mod git;
pub mod listener;
pub mod metrics;
pub mod state;
pub mod store;
pub mod trace;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use regent_bundle::signing::{self, Keyring};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::ServerConfig;

use auth::TokenSet;
use builder::Builder;
use fleet::Fleet;
use gate::Signer;
use git::GitSource;
use metrics::Metrics;
use state::{BuildBook, Shared};
use store::DataStore;

/// Arguments of `regent serve`. Flags override the matching keys of the config file.
// Flags whose help is computed (to show the default) have no doc comment: clap would print both.
#[allow(missing_docs)]
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// YAML configuration file (see docs/server.md for every key).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// `git.repo`: URL or path of the policy repository.
    #[arg(long)]
    pub repo: Option<String>,
    #[arg(long, help = format!(
        "`git.branch`: branch to publish [default: {}]",
        config::default_branch()
    ))]
    pub branch: Option<String>,
    #[arg(long, help = format!(
        "`listen`: address to listen on [default: {}]",
        config::default_listen()
    ))]
    pub listen: Option<SocketAddr>,
    /// Private key file (PKCS#8 PEM ed25519) that signs; with --kid it becomes the active key.
    #[arg(long, requires = "kid")]
    pub key: Option<PathBuf>,
    /// `signing.active_kid`: key id of --key (or of a configured key).
    #[arg(long)]
    pub kid: Option<String>,
    /// `publish_dir`: also write each bundle there (NAME.tar.gz and NAME.tar.gz.etag).
    #[arg(long)]
    pub publish_dir: Option<PathBuf>,
    #[arg(long, help = format!(
        "`data_dir`: git mirror and last published bundles [default: {}]",
        config::default_data_dir().display()
    ))]
    pub data_dir: Option<PathBuf>,
    /// Adds a bundle `NAME=DIR` (repeatable), in addition to the configured ones.
    #[arg(long = "bundle", value_name = "NAME=DIR")]
    pub bundles: Vec<String>,
}

impl ServeArgs {
    /// The configuration: the file (if any) with the flags applied, validated.
    pub fn load(&self) -> anyhow::Result<ServerConfig> {
        use serde_yaml::{Mapping, Value};
        let mut file_text = None;
        let mut root = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                file_text = Some(text.clone());
                // Parsed from the text first so an error in the file keeps its line; a missing
                // key may still come from a flag, so that one is left to the merged check below.
                if let Err(e) = serde_yaml::from_str::<ServerConfig>(&text) {
                    if !e.to_string().contains("missing field") {
                        anyhow::bail!("{}", located(p, &e));
                    }
                }
                serde_yaml::from_str::<Value>(&text)
                    .map_err(|e| anyhow::anyhow!("{}", located(p, &e)))?
            }
            None => Value::Mapping(Mapping::new()),
        };
        let Value::Mapping(map) = &mut root else {
            anyhow::bail!("the configuration must be a YAML mapping");
        };
        fn section<'a>(map: &'a mut Mapping, key: &str) -> anyhow::Result<&'a mut Mapping> {
            let v = map
                .entry(Value::from(key))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            match v {
                Value::Mapping(m) => Ok(m),
                _ => anyhow::bail!("{key}: must be a mapping"),
            }
        }
        if let Some(r) = &self.repo {
            section(map, "git")?.insert("repo".into(), r.clone().into());
        }
        if let Some(b) = &self.branch {
            section(map, "git")?.insert("branch".into(), b.clone().into());
        }
        if let Some(l) = &self.listen {
            map.insert("listen".into(), l.to_string().into());
        }
        if let Some(d) = &self.publish_dir {
            map.insert(
                "publish_dir".into(),
                d.to_string_lossy().into_owned().into(),
            );
        }
        if let Some(d) = &self.data_dir {
            map.insert("data_dir".into(), d.to_string_lossy().into_owned().into());
        }
        if let Some(kid) = &self.kid {
            let signing = section(map, "signing")?;
            signing.insert("active_kid".into(), kid.clone().into());
            if let Some(key) = &self.key {
                let keys = signing
                    .entry("keys".into())
                    .or_insert_with(|| Value::Sequence(Vec::new()));
                let Value::Sequence(keys) = keys else {
                    anyhow::bail!("signing.keys: must be a list");
                };
                keys.retain(|k| k.get("kid").and_then(Value::as_str) != Some(kid.as_str()));
                let mut k = Mapping::new();
                k.insert("kid".into(), kid.clone().into());
                k.insert(
                    "private_key_file".into(),
                    key.to_string_lossy().into_owned().into(),
                );
                keys.push(Value::Mapping(k));
            }
        }
        for spec in &self.bundles {
            let (name, dir) = spec
                .split_once('=')
                .with_context(|| format!("--bundle {spec:?}: expected NAME=DIR"))?;
            let list = map
                .entry("bundles".into())
                .or_insert_with(|| Value::Sequence(Vec::new()));
            let Value::Sequence(list) = list else {
                anyhow::bail!("bundles: must be a list");
            };
            let mut b = Mapping::new();
            b.insert("name".into(), name.into());
            b.insert("dir".into(), dir.into());
            list.push(Value::Mapping(b));
        }
        let cfg: ServerConfig = serde_yaml::from_value(root).map_err(|e| {
            let hint = if e.to_string().contains("missing field `git`") {
                " (set git.repo in the file or pass --repo URL; see regent serve --help)"
            } else {
                ""
            };
            match &self.config {
                Some(p) => anyhow::anyhow!("{}: {e}{hint}", p.display()),
                None => anyhow::anyhow!("configuration: {e}{hint}"),
            }
        })?;
        if let Err(e) = cfg.validate() {
            // `FILE:LINE: key: message` like the parse errors, when the key is in the file.
            match (&self.config, &file_text) {
                (Some(p), Some(text)) => match config::key_line(text, &e.key) {
                    Some(line) => anyhow::bail!("{}:{line}: {e}", p.display()),
                    None => anyhow::bail!("{}: {e}", p.display()),
                },
                _ => return Err(e.into()),
            }
        }
        Ok(cfg)
    }
}

/// `FILE:LINE: path: message`: the line up front, where editors and CI annotations look for it.
fn located(file: &std::path::Path, e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
            format!("{}:{}: {msg}", file.display(), loc.line())
        }
        None => format!("{}: {msg}", file.display()),
    }
}

/// A running server.
pub struct Running {
    /// The address it listens on (the real port when configured with port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pipeline: Option<regent_telemetry::Pipeline>,
}

impl Running {
    /// Waits until a build requested after this call has finished (bounded by `timeout`);
    /// returns whether it finished. Requests a build.
    pub async fn build_now(&self, timeout: Duration) -> bool {
        let gen = self.shared.request_build();
        let mut rx = self.shared.completed.subscribe();
        let done = tokio::time::timeout(timeout, rx.wait_for(|g| *g >= gen))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        done
    }

    /// Revision served for each bundle.
    pub fn published_revisions(&self) -> BTreeMap<String, String> {
        self.shared.published_revisions()
    }

    /// Stale git lock files removed from the mirror since start
    /// (`regent_git_stale_locks_removed_total`).
    pub fn git_stale_locks_removed(&self) -> u64 {
        self.shared.git_stale_locks_removed.get()
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// Stops accepting, releases waiting long polls, stops the build loop, and waits (bounded)
    /// for everything to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // After the build loop: the spans of a build cut short are ended, and exported here.
        if let Some(p) = &self.pipeline {
            p.shutdown().await;
        }
    }
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let raw =
        std::fs::read(path).with_context(|| format!("webhook.secret_file {}", path.display()))?;
    // Files written by editors and `echo` end with a newline that is not part of the secret.
    let trimmed = raw.trim_ascii_end().to_vec();
    if trimmed.is_empty() {
        anyhow::bail!("webhook.secret_file {} is empty", path.display());
    }
    Ok(trimmed)
}

/// Reads every configured signing key: the keyring of their public halves, and the active key
/// set to `signing.algorithm` (refused when the algorithm does not fit the key).
pub(crate) fn load_signing(cfg: &ServerConfig) -> anyhow::Result<(Keyring, Signer)> {
    let mut keyring = Keyring::new();
    let mut active = None;
    for (i, k) in cfg.signing.keys.iter().enumerate() {
        let key = signing::read_signing_key(&k.private_key_file)
            .with_context(|| format!("signing.keys[{i}] (kid {:?})", k.kid))?;
        keyring.insert(k.kid.clone(), key.verifying_key());
        if k.kid == cfg.signing.active_kid {
            active = Some(key);
        }
    }
    let key = active.context("signing.active_kid names no configured key")?;
    let key = match (cfg.signing_alg(), cfg.signing.algorithm.as_deref()) {
        (Some(alg), _) => key.with_alg(alg, "signing.algorithm")?,
        (None, None) => key,
        // validate() refuses it; kept as an error for callers that skipped it.
        (None, Some(name)) => anyhow::bail!("signing.algorithm {name:?} is not supported"),
    };
    Ok((
        keyring,
        Signer {
            kid: cfg.signing.active_kid.clone(),
            key,
            scope: cfg.signing.scope.clone(),
            issuer: cfg.signing.issuer.clone(),
        },
    ))
}

/// Starts the server: restores the last publication, binds, starts the build loop. Must be
/// called inside a tokio runtime.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<Running> {
    cfg.validate()?;
    let signing = load_signing(&cfg)?;
    start_signed(cfg, signing).await
}

/// [`start`] with the signing keys already read (and `cfg` validated).
async fn start_signed(
    cfg: ServerConfig,
    (keyring, signer): (Keyring, Signer),
) -> anyhow::Result<Running> {
    let cfg = Arc::new(cfg);
    let signer = Arc::new(signer);
    let webhook_secret = match &cfg.webhook.secret_file {
        Some(p) => Some(read_secret(p)?),
        None => None,
    };
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir {}", cfg.data_dir.display()))?;
    if let Some(d) = &cfg.publish_dir {
        std::fs::create_dir_all(d).with_context(|| format!("publish_dir {}", d.display()))?;
    }
    let tls = match &cfg.tls {
        Some(t) => Some(listener::tls_acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };

    let metrics = Metrics::with_bundles(cfg.bundles.iter().map(|b| b.name.as_str()))
        .context("registering metrics")?;
    let tracing_metrics = regent_telemetry::TracingMetrics::register(metrics.registry())
        .context("registering metrics")?;
    let pipeline =
        regent_telemetry::Pipeline::start(&cfg.tracing, &tracing_metrics).context("tracing")?;
    let git_stale_locks_removed = git::stale_lock_counter();
    metrics
        .register(Box::new(git_stale_locks_removed.clone()))
        .context("registering metrics")?;
    let fleet = Fleet::new(
        cfg.bundles.iter().map(|b| b.name.clone()).collect(),
        Duration::from_secs(cfg.fleet.ttl_seconds),
        cfg.fleet.max_sidecars,
        cfg.fleet.max_total_report_bytes,
        metrics.clone(),
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        bundles: cfg
            .bundles
            .iter()
            .map(|b| (b.name.clone(), watch::channel(None).0))
            .collect(),
        book: Mutex::new(BuildBook::default()),
        requested: watch::channel(0).0,
        completed: watch::channel(0).0,
        ready: AtomicBool::new(false),
        metrics,
        fleet,
        tokens: TokenSet::from_hex(cfg.auth.tokens.iter().map(|t| t.sha256.as_str())),
        webhook_secret,
        shutdown: shutdown_rx.clone(),
        git_stale_locks_removed,
        cfg: Arc::clone(&cfg),
    });

    let store = DataStore::new(&cfg.data_dir);
    let names: Vec<String> = cfg.bundles.iter().map(|b| b.name.clone()).collect();
    // Crash recovery (see `store`): half-written temporary files go, and the publish dir is
    // made to match the restored publication before anything is served.
    store::remove_temp_files(store.dir());
    if let Some(d) = &cfg.publish_dir {
        store::remove_temp_files(d);
    }
    if let Some(restored) = store.restore(&names, &keyring, cfg.signing.scope.clone()) {
        if !restored.bundles.is_empty() {
            if let Some(d) = &cfg.publish_dir {
                if let Err(e) = store::reconcile_publish_dir(d, &restored.bundles) {
                    tracing::error!(commit = %restored.state.commit, dir = %d.display(), error = %e, "reconciling the publish dir with the published state failed");
                }
            }
            shared.publish(&restored.bundles, &restored.state.published_at);
            let mut book = shared.book();
            book.published_commit = Some((
                restored.state.commit.clone(),
                restored.state.published_at.clone(),
            ));
            if restored.bundles.len() == names.len()
                && restored.state.fingerprint == cfg.build_fingerprint()
            {
                book.attempted = Some((restored.state.commit.clone(), restored.state.fingerprint));
            }
            drop(book);
            tracing::info!(commit = %restored.state.commit, bundles = restored.bundles.len(), "restored the last published bundles");
            shared.set_ready();
        }
    }

    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = tcp.local_addr().context("local address")?;
    let git = GitSource::new(
        &cfg.git.repo,
        &cfg.git.branch,
        cfg.data_dir.join("repo.git"),
        Duration::from_secs(cfg.git.timeout_seconds),
    )
    .with_stale_lock_counter(shared.git_stale_locks_removed.clone());
    // No git of this process runs yet: a lock in the mirror is a leftover of a killed one.
    git.remove_stale_locks("start");
    let builder = Builder {
        git,
        signer,
        store,
        tmp_dir: cfg.data_dir.join("tmp"),
        trace: pipeline
            .as_ref()
            .map(|p| regent_telemetry::spans::TaskTracer::new(p.tracer("regent-server"))),
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        builder.run(Arc::clone(&shared), shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(listener::serve(
        tcp,
        api::router(Arc::clone(&shared)),
        tls,
        shutdown_rx.clone(),
    )));
    let pruner_shared = Arc::clone(&shared);
    let mut pruner_shutdown = shutdown_rx;
    let prune_every = Duration::from_secs((cfg.fleet.ttl_seconds / 4).clamp(1, 60));
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = pruner_shutdown.changed() => return,
                _ = tokio::time::sleep(prune_every) => pruner_shared.fleet.prune(),
            }
        }
    }));
    tracing::info!(%addr, tls = cfg.tls.is_some(), repo = %git::redact_url(&cfg.git.repo), branch = %cfg.git.branch, "regent bundle server listening");
    Ok(Running {
        addr,
        shared,
        shutdown: shutdown_tx,
        tasks,
        pipeline,
    })
}

fn init_logging(cfg: &config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour codes only for a terminal: logs sent to files and collectors stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = if cfg.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Exit code of a configuration or usage error of `regent serve`, the same as the sidecar's.
pub const EXIT_CONFIG: u8 = 2;

/// Runs the server until SIGINT or SIGTERM; returns the exit code.
pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    if args.config.is_none() && args.repo.is_none() {
        eprintln!(
            "regent: error: regent serve needs --config FILE or --repo URL (see regent serve --help)"
        );
        return Ok(EXIT_CONFIG);
    }
    // A bad configuration is the operator's to fix, not a runtime failure: exit like the sidecar.
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("regent: error: {e:#}");
            return Ok(EXIT_CONFIG);
        }
    };
    // Keys that cannot be read, or that cannot sign with signing.algorithm, are configuration
    // errors too.
    let signing = match load_signing(&cfg) {
        Ok(signing) => signing,
        Err(e) => {
            eprintln!("regent: error: {e:#}");
            return Ok(EXIT_CONFIG);
        }
    };
    init_logging(&cfg.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let running = start_signed(cfg, signing).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(0)
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
