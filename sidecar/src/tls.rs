//! TLS material that follows its files: the gRPC listener's certificate, key and client CA
//! (`grpc.tls`), and the CA file and client certificate of outgoing HTTPS clients (`sync.http`
//! for bundle downloads and status reports, `identity.jwks[].ca_file` for key set fetches).
//!
//! Material is parsed completely (certificates, a private key that matches its certificate, a
//! CA bundle with at least one certificate) before it is swapped in as a whole, so a bad file
//! never half-replaces good material. Only new handshakes see a swap: a connection keeps the
//! session it was set up with.
//!
//! - Server side: [`ServerTls`] keeps the rustls `ServerConfig` in an [`ArcSwap`]; [`incoming`]
//!   runs every accepted connection's handshake with the config in force at that moment.
//! - Client side: [`client_config`] builds a rustls `ClientConfig` whose certificate verifier
//!   and client certificate resolver read a [`ClientTls`] at each handshake, so a reqwest client
//!   built once (and its connection pool) stays in use across a rotation. A [`ClientTls`] is
//!   shared by every client built from the same files: the clients are built in several places
//!   (downloads, status reports, key set fetches) while one watcher per file set reloads them,
//!   and what a path holds is the same for all of its readers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;
use crate::reload::Watcher;

/// A TLS file that cannot be used; `key` is the configuration key that names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{key}: reading {path}: {source}")]
    Read {
        /// Configuration key.
        key: String,
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file was read but its content is not usable.
    #[error("{key}: {path}: {message}")]
    Invalid {
        /// Configuration key.
        key: String,
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        key: key.to_string(),
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The crypto provider of every config built here: ring, the one rustls is built with, named
/// explicitly so no process-wide default has to be installed first.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; none is an error.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(key, path, "holds no certificate"));
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    cert_key: &str,
    cert_path: &Path,
    key_key: &str,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert_key, cert_path)?;
    let pem = read(key_key, key_path)?;
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| invalid(key_key, key_path, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| invalid(key_key, key_path, "holds no private key"))?;
    // Checks that the key is usable and is the one of the chain's first certificate.
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        invalid(
            key_key,
            key_path,
            format!("unusable with {cert_key} {}: {e}", cert_path.display()),
        )
    })?;
    Ok(Arc::new(certified))
}

/// A root store from a PEM CA bundle, on top of `base`.
fn roots(key: &str, path: &Path, mut base: RootCertStore) -> Result<RootCertStore, TlsError> {
    for (i, cert) in certificates(key, path)?.into_iter().enumerate() {
        base.add(cert).map_err(|e| {
            invalid(
                key,
                path,
                format!("certificate {i} is not a usable CA: {e}"),
            )
        })?;
    }
    Ok(base)
}

/// The gRPC listener's TLS: the `ServerConfig` new handshakes use, swapped whole on reload.
pub struct ServerTls {
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// Of the files, taken just before the config in force at start was read from them.
    read_at_start: [u8; 32],
}

impl ServerTls {
    /// Reads `grpc.tls` (blocking); an unusable file is an error naming its key.
    pub fn load(files: &TlsConfig) -> Result<Arc<ServerTls>, TlsError> {
        let read_at_start = crate::reload::fingerprint(&paths(files));
        Ok(Arc::new(ServerTls {
            current: ArcSwap::from_pointee(server_config(files)?),
            files: files.clone(),
            read_at_start,
        }))
    }

    /// Re-reads the files (blocking) and swaps the new config in only if all of them are usable.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(server_config(&self.files)?));
        Ok(())
    }

    /// The config of the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// A watcher that reloads this listener's TLS when one of its files changes (cheap: the
    /// fingerprint of the files as read at start is kept).
    pub fn watcher(self: &Arc<Self>) -> Watcher {
        let tls = Arc::clone(self);
        Watcher::from_fingerprint(
            "grpc_tls",
            paths(&self.files),
            Box::new(move || Ok(tls.reload()?)),
            self.read_at_start,
        )
    }
}

fn paths(files: &TlsConfig) -> Vec<PathBuf> {
    let mut paths = vec![files.cert_file.clone(), files.key_file.clone()];
    paths.extend(files.client_ca_file.clone());
    paths
}

/// What tonic's own TLS set-up builds from the same files: the certificate and key, client
/// certificates required when `client_ca_file` is set, HTTP/2 by ALPN.
fn server_config(files: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certified = certified_key(
        "grpc.tls.cert_file",
        &files.cert_file,
        "grpc.tls.key_file",
        &files.key_file,
    )?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("grpc.tls", &files.cert_file, e))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let key = "grpc.tls.client_ca_file";
            let roots = roots(key, ca, RootCertStore::empty())?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(key, ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Longest a client may take to complete its TLS handshake: a connection that stalls it holds
/// only its own task, never the accept loop, and is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handshaken and waiting for the server to take them.
const HANDSHAKEN_QUEUE: usize = 64;

/// TLS connections from `accepted`, each handshaken in its own task with the config in force
/// when it was accepted. Accept errors are passed on as they are; a failed handshake is logged
/// and its connection dropped. Stops when `shutdown` turns true or the returned stream is
/// dropped.
pub fn incoming<S, IO>(
    accepted: S,
    tls: Arc<ServerTls>,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = std::io::Result<TlsStream<IO>>> + Send + 'static
where
    S: Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let next = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
                next = accepted.next() => next,
            };
            let io = match next {
                None => return,
                Some(Err(e)) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(io)) => io,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!("gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The TLS files of an outgoing HTTPS client (configuration keys without their section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientFiles {
    /// `ca_file`: trusted in addition to the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// `client_cert_file` and `client_key_file`, for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    /// True when there is nothing beyond the built-in roots.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_identity.is_none()
    }

    /// The files, as a watcher fingerprints them.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.ca_file.iter().cloned().collect();
        if let Some((cert, key)) = &self.client_identity {
            paths.push(cert.clone());
            paths.push(key.clone());
        }
        paths
    }
}

/// What a client handshake uses: the server certificate verifier and the client certificate.
#[derive(Debug)]
struct ClientMaterial {
    verifier: Arc<WebPkiServerVerifier>,
    identity: Option<Arc<CertifiedKey>>,
}

impl ClientMaterial {
    fn read(files: &ClientFiles) -> Result<ClientMaterial, TlsError> {
        let mut store = RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &files.ca_file {
            store = roots("ca_file", ca, store)?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| {
                let path = files.ca_file.as_deref().unwrap_or(Path::new(""));
                invalid("ca_file", path, e)
            })?;
        let identity = match &files.client_identity {
            None => None,
            Some((cert, key)) => Some(certified_key(
                "client_cert_file",
                cert,
                "client_key_file",
                key,
            )?),
        };
        Ok(ClientMaterial { verifier, identity })
    }
}

/// The TLS material of every outgoing client built from one set of files.
#[derive(Debug)]
pub struct ClientTls {
    current: ArcSwap<ClientMaterial>,
}

/// Every [`ClientTls`] some client still uses, by its files.
fn registry() -> &'static Mutex<HashMap<ClientFiles, Weak<ClientTls>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<ClientFiles, Weak<ClientTls>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn registered(files: &ClientFiles) -> Option<Arc<ClientTls>> {
    let mut map = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.retain(|_, w| w.strong_count() > 0);
    map.get(files).and_then(Weak::upgrade)
}

impl ClientTls {
    /// The material of `files`, read now (blocking): a client being built always starts from
    /// what the files hold, and every other client of the same files gets it too.
    pub fn shared(files: &ClientFiles) -> Result<Arc<ClientTls>, TlsError> {
        let material = Arc::new(ClientMaterial::read(files)?);
        let mut map = registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(tls) = map.get(files).and_then(Weak::upgrade) {
            tls.current.store(material);
            return Ok(tls);
        }
        let tls = Arc::new(ClientTls {
            current: ArcSwap::new(material),
        });
        map.insert(files.clone(), Arc::downgrade(&tls));
        Ok(tls)
    }

    /// Re-reads `files` (blocking) and swaps the material of their clients only if all of them
    /// are usable. The files are checked even when no client uses them yet, so a bad file is
    /// reported when it appears.
    pub fn reload(files: &ClientFiles) -> Result<(), TlsError> {
        let material = Arc::new(ClientMaterial::read(files)?);
        if let Some(tls) = registered(files) {
            tls.current.store(material);
        }
        Ok(())
    }

    /// [`ClientTls::watcher`] of `files` unless there are none (only the built-in roots).
    pub fn watcher_of(what: &'static str, section: &str, files: ClientFiles) -> Option<Watcher> {
        (!files.is_empty()).then(|| ClientTls::watcher(what, section.to_string(), files))
    }

    /// A watcher that reloads the clients of `files` when one of them changes; `what` is its
    /// `regent_reload_total` label and `section` the configuration section named in errors.
    pub fn watcher(what: &'static str, section: String, files: ClientFiles) -> Watcher {
        let paths = files.paths();
        Watcher::new(
            what,
            paths,
            Box::new(move || {
                ClientTls::reload(&files).map_err(|e| anyhow::anyhow!("{section}.{e}"))
            }),
        )
    }
}

impl ServerCertVerifier for ClientTls {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current.load().verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().verifier.supported_verify_schemes()
    }
}

impl ResolvesClientCert for ClientTls {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current.load().identity.clone()
    }

    fn has_certs(&self) -> bool {
        self.current.load().identity.is_some()
    }
}

/// The rustls config of an outgoing client of `files` (reads them now, blocking): what reqwest
/// builds itself (TLS 1.2 and 1.3, HTTP/2 or 1.1 by ALPN), with verifier and client certificate
/// following the files.
pub fn client_config(files: &ClientFiles) -> Result<ClientConfig, TlsError> {
    let tls = ClientTls::shared(files)?;
    let path = files.ca_file.as_deref().unwrap_or(Path::new(""));
    // "Dangerous" only in that rustls cannot see what the verifier does: it is WebPKI's own,
    // read through the swap at each handshake.
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("ca_file", path, e))?
        .dangerous()
        .with_custom_certificate_verifier(tls.clone())
        .with_client_cert_resolver(tls);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Watchers of every TLS file set `cfg` reads at start: the gRPC listener's (`grpc`, already
/// loaded from `grpc.tls`), each `identity.jwks[]` CA file, and `sync.http`'s files when bundles
/// are synced. Fingerprints the files (blocking); call it before the outgoing clients are
/// built, so a change made while they read their files is seen by the first poll.
pub fn watchers(cfg: &crate::config::SidecarConfig, grpc: Option<&Arc<ServerTls>>) -> Vec<Watcher> {
    let mut watchers: Vec<Watcher> = grpc.map(ServerTls::watcher).into_iter().collect();
    for (i, src) in cfg.identity.jwks.iter().enumerate() {
        if let Some(ca) = &src.ca_file {
            let files = ClientFiles {
                ca_file: Some(ca.clone()),
                client_identity: None,
            };
            watchers.push(ClientTls::watcher(
                "jwks_ca",
                format!("identity.jwks[{i}]"),
                files,
            ));
        }
    }
    if let Some(up) = &cfg.decision_logs.upload {
        watchers.extend(ClientTls::watcher_of(
            "decision_log_tls",
            "decision_logs.upload",
            up.client_files(),
        ));
    }
    let sync_files = crate::sync::download::client_files(&cfg.sync.http);
    if !cfg.sync.bundles.is_empty() && !sync_files.is_empty() {
        watchers.push(ClientTls::watcher(
            "sync_tls",
            "sync.http".to_string(),
            sync_files,
        ));
    }
    watchers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a_crt, _) = pair(dir.path(), "a");
        let (_, b_key) = pair(dir.path(), "b");
        let files = TlsConfig {
            cert_file: a_crt,
            key_file: b_key,
            client_ca_file: None,
        };
        let e = ServerTls::load(&files).err().expect("mismatch refused");
        assert!(e.to_string().starts_with("grpc.tls.key_file: "), "{e}");
    }

    #[test]
    fn an_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let files = ClientFiles {
            ca_file: Some(ca),
            client_identity: None,
        };
        let e = ClientTls::shared(&files).expect_err("no certificate");
        assert!(e.to_string().contains("holds no certificate"), "{e}");
    }

    #[test]
    fn clients_of_the_same_files_share_their_material_while_one_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = pair(dir.path(), "client");
        let files = ClientFiles {
            ca_file: Some(crt.clone()),
            client_identity: Some((crt, key)),
        };
        let first = ClientTls::shared(&files).unwrap();
        let second = ClientTls::shared(&files).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(first.has_certs());
        drop((first, second));
        assert!(
            registered(&files).is_none(),
            "nothing keeps unused material"
        );
    }
}
