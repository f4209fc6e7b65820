//! TLS files re-read without a restart, on 127.0.0.1: a real sidecar whose gRPC certificate,
//! client CA and JWKS CA file are rotated on disk the way Kubernetes updates a mounted Secret
//! (a `..data` symlink swapped to a new directory), and a bundle download whose CA and client
//! certificate rotate, and an `http.send` whose CA file does. Certificates are issued here by throw-away CAs. Every wait is a bounded
//! poll.

mod server_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use regent_sidecar::config::{SidecarConfig, TlsConfig};
use regent_sidecar::server::Running;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use server_support::{base_config, eventually, get, metric, write_policy_dir};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const WAIT: Duration = Duration::from_secs(20);

const ALLOW: &str = "package envoy.authz\n\nallow := true\n";

// --- certificates --------------------------------------------------------------------------

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM, and the certificate's DER (what a handshake shows).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for 127.0.0.1, or a client certificate.
    fn issue(&self, name: &str, client: bool) -> Leaf {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn roots(ca: &Ca) -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    r.add(ca.cert.der().clone()).unwrap();
    r
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .unwrap()
        .unwrap()
}

// --- a mounted Secret ----------------------------------------------------------------------

/// A directory laid out as Kubernetes mounts a Secret: `name -> ..data/name`, `..data -> vN`.
struct Secret {
    dir: PathBuf,
    version: usize,
}

impl Secret {
    fn new(dir: &Path, files: &[(&str, &str)]) -> Secret {
        std::fs::create_dir_all(dir).unwrap();
        let mut s = Secret {
            dir: dir.to_path_buf(),
            version: 0,
        };
        s.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every file changes at once: a new directory, then one rename of the `..data` link.
    fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let v = format!("v{}", self.version);
        std::fs::create_dir(self.dir.join(&v)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&v).join(name), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&v, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

// --- the sidecar ---------------------------------------------------------------------------

async fn start(dir: &Path, tweak: impl FnOnce(&mut SidecarConfig)) -> Running {
    let policy = dir.join("policy");
    write_policy_dir(&policy, ALLOW, None);
    let mut cfg = base_config();
    cfg.policy.bundle = Some(policy);
    cfg.reload.interval_seconds = 1;
    tweak(&mut cfg);
    let s = regent_sidecar::server::start(cfg)
        .await
        .expect("sidecar starts");
    assert!(
        eventually(WAIT, || s.store.current().is_some()).await,
        "the policy never loaded"
    );
    s
}

/// `regent_reload_total{what,result}` as `/metrics` shows it.
async fn reloads(s: &Running, what: &str, result: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", s.http_addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    let sample = format!("regent_reload_total{{result=\"{result}\",what=\"{what}\"}}");
    metric(&text, &sample).unwrap_or(-1.0)
}

async fn until_reloads(s: &Running, what: &str, result: &str, at_least: f64) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if reloads(s, what, result).await >= at_least {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One new TLS handshake with the gRPC listener: the certificate it presented, or why it
/// failed. TLS 1.2, so a refused client certificate fails the handshake itself.
async fn handshake(
    addr: SocketAddr,
    trust: &Ca,
    client: Option<&Leaf>,
) -> Result<Vec<u8>, std::io::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(trust));
    let mut cfg = match client {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(chain(&c.cert_pem), key(&c.key_pem))
            .unwrap(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok(presented)
}

async fn grpc_client(addr: SocketAddr, trust: &Ca) -> AuthorizationClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trust.pem()))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("gRPC over TLS connects");
    AuthorizationClient::new(channel)
}

async fn allowed(client: &mut AuthorizationClient<Channel>) -> bool {
    let r = client
        .check(get("/x").build())
        .await
        .expect("Check answered")
        .into_inner();
    r.status.map(|s| s.code) == Some(0)
}

async fn until_presented(addr: SocketAddr, trust: &Ca, want: &Leaf) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if handshake(addr, trust, None)
            .await
            .is_ok_and(|der| der == want.der)
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_grpc_certificate_is_served_to_new_handshakes_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("ca 1"), Ca::new("ca 2"));
    let (a, b, c) = (
        ca1.issue("a", false),
        ca2.issue("b", false),
        ca1.issue("c", false),
    );
    let mut secret = Secret::new(
        &dir.path().join("tls"),
        &[("tls.crt", &a.cert_pem), ("tls.key", &a.key_pem)],
    );
    let tls = TlsConfig {
        cert_file: secret.path("tls.crt"),
        key_file: secret.path("tls.key"),
        client_ca_file: None,
    };
    let s = start(dir.path(), |cfg| cfg.grpc.tls = Some(tls)).await;
    assert_eq!(handshake(s.grpc_addr, &ca1, None).await.unwrap(), a.der);
    assert_eq!(reloads(&s, "grpc_tls", "ok").await, 0.0);
    // Connected before the rotation, trusting only the first CA.
    let mut before = grpc_client(s.grpc_addr, &ca1).await;
    assert!(allowed(&mut before).await);

    secret.update(&[("tls.crt", &b.cert_pem), ("tls.key", &b.key_pem)]);
    assert!(
        until_presented(s.grpc_addr, &ca2, &b).await,
        "a new handshake never saw certificate B"
    );
    assert!(until_reloads(&s, "grpc_tls", "ok", 1.0).await);
    assert!(
        handshake(s.grpc_addr, &ca1, None).await.is_err(),
        "certificate A is still served"
    );
    // New connections speak gRPC with the new certificate; the one opened before keeps its
    // session (a new handshake trusting only CA 1 would fail).
    assert!(allowed(&mut grpc_client(s.grpc_addr, &ca2).await).await);
    assert!(allowed(&mut before).await);

    // A key that is not a key, then a valid key that belongs to another certificate.
    secret.update(&[("tls.crt", &c.cert_pem), ("tls.key", "not a key\n")]);
    assert!(until_reloads(&s, "grpc_tls", "error", 1.0).await);
    assert_eq!(handshake(s.grpc_addr, &ca2, None).await.unwrap(), b.der);
    secret.update(&[("tls.crt", &c.cert_pem), ("tls.key", &a.key_pem)]);
    assert!(until_reloads(&s, "grpc_tls", "error", 2.0).await);
    assert_eq!(handshake(s.grpc_addr, &ca2, None).await.unwrap(), b.der);
    assert_eq!(reloads(&s, "grpc_tls", "ok").await, 1.0);
    assert!(allowed(&mut grpc_client(s.grpc_addr, &ca2).await).await);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_ca_decides_which_client_certificates_new_handshakes_accept() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, ca_x, ca_y) = (Ca::new("server ca"), Ca::new("ca x"), Ca::new("ca y"));
    let server = server_ca.issue("server", false);
    let (x, y) = (ca_x.issue("client x", true), ca_y.issue("client y", true));
    let mut secret = Secret::new(
        &dir.path().join("tls"),
        &[
            ("tls.crt", &server.cert_pem),
            ("tls.key", &server.key_pem),
            ("ca.crt", &ca_x.pem()),
        ],
    );
    let tls = TlsConfig {
        cert_file: secret.path("tls.crt"),
        key_file: secret.path("tls.key"),
        client_ca_file: Some(secret.path("ca.crt")),
    };
    let s = start(dir.path(), |cfg| cfg.grpc.tls = Some(tls)).await;
    assert!(handshake(s.grpc_addr, &server_ca, Some(&x)).await.is_ok());
    assert!(handshake(s.grpc_addr, &server_ca, Some(&y)).await.is_err());
    assert!(handshake(s.grpc_addr, &server_ca, None).await.is_err());

    let files = |ca: &str| {
        [
            ("tls.crt", server.cert_pem.clone()),
            ("tls.key", server.key_pem.clone()),
            ("ca.crt", ca.to_string()),
        ]
    };
    let update = |secret: &mut Secret, ca: &str| {
        let f = files(ca);
        let refs: Vec<(&str, &str)> = f.iter().map(|(n, t)| (*n, t.as_str())).collect();
        secret.update(&refs);
    };
    update(&mut secret, &ca_y.pem());
    let addr = s.grpc_addr;
    let mut accepted = false;
    for _ in 0..400 {
        if handshake(addr, &server_ca, Some(&y)).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        accepted,
        "client Y was never accepted after the CA rotation"
    );
    assert!(handshake(addr, &server_ca, Some(&x)).await.is_err());
    assert!(until_reloads(&s, "grpc_tls", "ok", 1.0).await);

    // A CA file with no certificate is refused; the CA in force stays.
    update(&mut secret, "");
    assert!(until_reloads(&s, "grpc_tls", "error", 1.0).await);
    assert!(handshake(addr, &server_ca, Some(&y)).await.is_ok());
    s.shutdown().await;
}

// --- HTTPS servers whose certificate the test replaces -------------------------------------

/// An HTTPS server on 127.0.0.1 answering every request with `body`; each connection serves
/// one request (so every request is a new handshake with the certificate set at that moment),
/// and a client certificate from `client_ca` is required when one is given.
struct Https {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
}

fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)),
                provider(),
            )
            .build()
            .unwrap(),
        ),
    };
    Arc::new(
        builder
            .with_single_cert(chain(&leaf.cert_pem), key(&leaf.key_pem))
            .unwrap(),
    )
}

impl Https {
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>, body: String) -> Https {
        let config = Arc::new(Mutex::new(server_config(leaf, client_ca)));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let current = config.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = tokio_rustls::TlsAcceptor::from(current.lock().unwrap().clone());
                let body = body.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Https { addr, config }
    }

    fn set(&self, leaf: &Leaf, client_ca: Option<&Ca>) {
        *self.config.lock().unwrap() = server_config(leaf, client_ca);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_provider_reissued_by_a_new_ca_is_fetched_once_the_ca_file_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("idp ca 1"), Ca::new("idp ca 2"));
    let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let idp = Https::start(&ca1.issue("idp", false), None, jwks.to_string()).await;
    let mut secret = Secret::new(&dir.path().join("idp-ca"), &[("ca.crt", &ca1.pem())]);
    let issuer = format!("https://{}", idp.addr);
    let src = serde_yaml::from_str(&format!(
        "{{issuer: '{issuer}', jwks_url: '{issuer}/keys', refresh_seconds: 1, min_refresh_interval_seconds: 1, ca_file: '{}'}}",
        secret.path("ca.crt").display()
    ))
    .unwrap();
    let s = start(dir.path(), |cfg| cfg.identity.jwks = vec![src]).await;
    let refreshes = |result: &str| {
        let sample =
            format!("regent_jwks_refresh_total{{issuer=\"{issuer}\",result=\"{result}\"}}");
        metric(&s.metrics.render(), &sample).unwrap_or(0.0)
    };
    assert!(eventually(WAIT, || refreshes("ok") >= 1.0).await);

    // The provider's certificate is re-issued by a CA the sidecar does not trust yet.
    idp.set(&ca2.issue("idp", false), None);
    let failed = refreshes("transport");
    assert!(eventually(WAIT, || refreshes("transport") > failed).await);

    secret.update(&[("ca.crt", &ca2.pem())]);
    assert!(until_reloads(&s, "jwks_ca", "ok", 1.0).await);
    let ok = refreshes("ok");
    assert!(
        eventually(WAIT, || refreshes("ok") > ok).await,
        "no fetch succeeded after the CA file was rotated"
    );

    // A CA file that is not PEM is refused; fetches keep trusting CA 2.
    secret.update(&[("ca.crt", "garbage")]);
    assert!(until_reloads(&s, "jwks_ca", "error", 1.0).await);
    let ok = refreshes("ok");
    assert!(eventually(WAIT, || refreshes("ok") > ok).await);
    s.shutdown().await;
}

#[tokio::test]
async fn a_bundle_download_follows_its_rotated_ca_and_client_certificate() {
    use regent_sidecar::reload::Polled;
    use regent_sidecar::sync::download::{client_files, Downloader, Fetched};
    use regent_sidecar::tls::ClientTls;

    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("bundle server ca"), Ca::new("client ca"));
    let other_ca = Ca::new("another ca");
    let server = Https::start(
        &server_ca.issue("bundles", false),
        Some(&client_ca),
        "bundle".to_string(),
    )
    .await;
    let (good, bad) = (
        client_ca.issue("sidecar", true),
        other_ca.issue("sidecar", true),
    );
    let mut secret = Secret::new(
        &dir.path().join("sync-tls"),
        &[
            ("ca.crt", &other_ca.pem()),
            ("tls.crt", &bad.cert_pem),
            ("tls.key", &bad.key_pem),
        ],
    );
    let http = regent_sidecar::sync::HttpConfig {
        connect_timeout_seconds: 5,
        read_timeout_seconds: 5,
        ca_file: Some(secret.path("ca.crt")),
        client_cert_file: Some(secret.path("tls.crt")),
        client_key_file: Some(secret.path("tls.key")),
        ..Default::default()
    };
    let url = format!("https://{}/bundles/authz", server.addr);
    let mut d = Downloader::new(&url, &http, 0).expect("downloader");
    // What the sidecar polls every reload.interval_seconds (sync.http's files).
    let mut w = ClientTls::watcher("sync_tls", "sync.http".to_string(), client_files(&http));
    assert_eq!(w.poll(), Polled::Unchanged);
    assert!(
        d.fetch().await.is_err(),
        "the server's CA is not trusted yet"
    );

    // The same client, once the CA file names the server's CA: TLS to the server works, but
    // its client certificate is still refused.
    secret.update(&[
        ("ca.crt", &server_ca.pem()),
        ("tls.crt", &bad.cert_pem),
        ("tls.key", &bad.key_pem),
    ]);
    assert_eq!(w.poll(), Polled::Reloaded);
    assert!(d.fetch().await.is_err(), "a certificate from another CA");

    secret.update(&[
        ("ca.crt", &server_ca.pem()),
        ("tls.crt", &good.cert_pem),
        ("tls.key", &good.key_pem),
    ]);
    assert_eq!(w.poll(), Polled::Reloaded);
    assert!(matches!(d.fetch().await, Ok(Fetched::Bundle { bytes, .. }) if bytes == b"bundle"));

    // A key that does not match its certificate is refused and the pair in force kept.
    secret.update(&[
        ("ca.crt", &server_ca.pem()),
        ("tls.crt", &good.cert_pem),
        ("tls.key", &bad.key_pem),
    ]);
    assert!(
        matches!(w.poll(), Polled::Refused(e) if e.contains("sync.http.client_key_file")),
        "a mismatched key must be refused naming it"
    );
    assert!(d.fetch().await.is_ok(), "the old pair stays in force");
}

/// Checks `/x` over plain gRPC until the answer is `want` (bounded).
async fn until_answer(addr: SocketAddr, want: bool) -> bool {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    let mut client = AuthorizationClient::new(channel);
    for _ in 0..100 {
        if allowed(&mut client).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_send_follows_its_rotated_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("api ca 1"), Ca::new("api ca 2"));
    let api = Https::start(&ca1.issue("api", false), None, "{}".to_string()).await;
    let mut secret = Secret::new(&dir.path().join("api-ca"), &[("ca.crt", &ca1.pem())]);
    // Allowed while the API answers over TLS the sidecar trusts.
    let policy = dir.path().join("send-policy");
    let rego = format!(
        "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if http.send({{\"method\": \"GET\", \"url\": \"https://{}/\", \"raise_error\": false}}).status_code == 200\n",
        api.addr
    );
    write_policy_dir(&policy, &rego, None);
    let ca_file = secret.path("ca.crt");
    let s = start(dir.path(), |cfg| {
        cfg.policy.bundle = Some(policy);
        cfg.remote_calls.http_send.allowed_hosts = vec![api.addr.to_string()];
        cfg.remote_calls.http_send.ca_file = Some(ca_file);
    })
    .await;
    assert!(until_answer(s.grpc_addr, true).await, "trusted API allows");

    // Re-issued by a CA the sidecar does not trust yet: the handshake fails, the policy denies.
    api.set(&ca2.issue("api", false), None);
    assert!(
        until_answer(s.grpc_addr, false).await,
        "untrusted API denies"
    );

    secret.update(&[("ca.crt", &ca2.pem())]);
    assert!(until_reloads(&s, "remote_tls", "ok", 1.0).await);
    assert!(
        until_answer(s.grpc_addr, true).await,
        "the new CA is trusted"
    );

    // A CA file that is not PEM is refused; http.send keeps trusting CA 2.
    secret.update(&[("ca.crt", "garbage")]);
    assert!(until_reloads(&s, "remote_tls", "error", 1.0).await);
    assert!(until_answer(s.grpc_addr, true).await);
    s.shutdown().await;
}
