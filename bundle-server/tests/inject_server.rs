//! The injector served for real over HTTPS on 127.0.0.1, with certificates made in the test.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use regent_bundle_server::inject::server::{serve, Webhook};
use regent_bundle_server::inject::template::InjectTemplate;
use regent_bundle_server::inject::tls::ReloadingCert;
use serde_json::{json, Value};

const HOST: &str = "regent-injector.regent-system.svc";

struct Pair {
    cert: String,
    key: String,
}

fn self_signed() -> Pair {
    let ck = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).expect("rcgen");
    Pair {
        cert: ck.cert.pem(),
        key: ck.key_pair.serialize_pem(),
    }
}

fn write_pair(dir: &Path, pair: &Pair) {
    // Written to temporary names and renamed, as the kubelet's atomic Secret update does.
    std::fs::write(dir.join("tls.crt.tmp"), &pair.cert).unwrap();
    std::fs::write(dir.join("tls.key.tmp"), &pair.key).unwrap();
    std::fs::rename(dir.join("tls.key.tmp"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.tmp"), dir.join("tls.crt")).unwrap();
}

fn client(trust: &Pair, addr: SocketAddr, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(trust.cert.as_bytes()).unwrap())
        .resolve(HOST, addr)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0);
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn admission_review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": {
                "metadata": {"generateName": "shop-", "namespace": "shop"},
                "spec": {"containers": [{"name": "shop", "image": "shop:1"}]}
            }
        }
    })
}

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dir: &Path, reload: Duration) -> Running {
    let template = InjectTemplate::from_yaml(
        "container: {name: regent-sidecar, image: 'regent-sidecar:test'}\nvolumes: [{name: regent-sidecar-data, emptyDir: {}}]",
    )
    .unwrap();
    let cert = ReloadingCert::load(&dir.join("tls.crt"), &dir.join("tls.key"), provider()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let webhook = Webhook {
        template: Arc::new(template),
        cert: Arc::new(cert),
        cert_reload_interval: reload,
    };
    let task = tokio::spawn(serve(listener, webhook, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    let res = tokio::time::timeout(Duration::from_secs(20), r.task)
        .await
        .expect("server stops within the drain timeout")
        .expect("server task did not panic");
    res.expect("server returned Ok");
}

#[tokio::test]
async fn serves_admission_reviews_over_https_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed();
    write_pair(dir.path(), &pair);
    let running = start(dir.path(), Duration::from_secs(60)).await;
    let url = format!("https://{HOST}:{}", running.addr.port());

    for http1 in [false, true] {
        let c = client(&pair, running.addr, http1);
        let uid = format!("uid-http1-{http1}");
        let resp = c
            .post(format!("{url}/inject"))
            .json(&admission_review(&uid))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let expected_version = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(resp.version(), expected_version);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], uid);
        assert_eq!(body["response"]["allowed"], true);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(body["response"]["patch"].as_str().expect("a patch"))
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod = admission_review(&uid)["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][1]["name"], "regent-sidecar");
        assert_eq!(pod["spec"]["volumes"][0]["name"], "regent-sidecar-data");
    }

    let c = client(&pair, running.addr, false);
    // A malformed review is answered (HTTP 200) with a refusal the API server can show.
    let resp = c
        .post(format!("{url}/inject"))
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-bad","operation":"CREATE","kind":{"group":"","kind":"Pod"},"object":{"spec":[]}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["uid"], "u-bad");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 400);

    let health = c.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"regent_inject_reviews_total{outcome="injected"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"regent_inject_reviews_total{outcome="invalid"} 1"#),
        "{metrics}"
    );
    // Outcomes that did not happen are there at 0, so a first one shows in rate().
    for series in [
        r#"regent_inject_reviews_total{outcome="conflict"} 0"#,
        r#"regent_inject_certificate_reloads_total{result="error"} 0"#,
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }

    // Plain HTTP is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", running.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    stop(running).await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed();
    write_pair(dir.path(), &first);
    let running = start(dir.path(), Duration::from_millis(50)).await;
    let url = format!("https://{HOST}:{}/health", running.addr.port());

    let ok = client(&first, running.addr, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let second = self_signed();
    write_pair(dir.path(), &second);
    // A client trusting only the new certificate succeeds once the server has reloaded.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client(&second, running.addr, false).get(&url).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("the renewed certificate was never served: {other:?}"),
        }
    }
    // And the old one is no longer accepted.
    assert!(client(&first, running.addr, false)
        .get(&url)
        .send()
        .await
        .is_err());

    // A broken renewal (key of another certificate) keeps the current pair in service.
    let third = self_signed();
    std::fs::write(dir.path().join("tls.crt"), &third.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &second.key).unwrap();
    let cert = ReloadingCert::load(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        provider(),
    );
    let err = format!("{:#}", cert.unwrap_err());
    assert!(err.contains("do not belong together"), "{err}");
    // Wait (bounded) until the server has tried the broken pair, then check it kept the old one.
    let metrics_url = format!("https://{HOST}:{}/metrics", running.addr.port());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = client(&second, running.addr, false)
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains(r#"regent_inject_certificate_reloads_total{result="error"}"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken renewal was never tried: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client(&second, running.addr, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stop(running).await;
}

#[test]
fn unreadable_or_bad_pem_is_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ReloadingCert::load(
        &dir.path().join("nope.crt"),
        &dir.path().join("nope.key"),
        provider(),
    );
    assert!(format!("{:#}", missing.unwrap_err()).contains("nope.crt"));

    std::fs::write(dir.path().join("tls.crt"), "not pem").unwrap();
    std::fs::write(dir.path().join("tls.key"), self_signed().key).unwrap();
    let bad = ReloadingCert::load(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        provider(),
    );
    let err = format!("{:#}", bad.unwrap_err());
    assert!(
        err.contains("tls.crt") && err.contains("no certificate"),
        "{err}"
    );

    let pair = self_signed();
    std::fs::write(dir.path().join("tls.crt"), &pair.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), "").unwrap();
    let bad = ReloadingCert::load(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        provider(),
    );
    let err = format!("{:#}", bad.unwrap_err());
    assert!(
        err.contains("tls.key") && err.contains("no private key"),
        "{err}"
    );
}
