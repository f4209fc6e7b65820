//! Key files re-read without a restart: a real sidecar syncing signed bundles from a real bundle
//! server on 127.0.0.1, whose `sync.keys[]` file is replaced on disk while it runs.

mod server_support;
mod sync_support;

use std::path::Path;
use std::time::Duration;

use regent_sidecar::sync::{BundleSource, KeyConfig, PollingConfig};
use server_support::{base_config, eventually, metric, Sidecar};
use sync_support::{key_pair, signed};

const WAIT: Duration = Duration::from_secs(20);

/// Replaces `path` atomically (write beside, then rename), as a Kubernetes symlink swap does, so a
/// poll never reads half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write key");
    std::fs::rename(&tmp, path).expect("rename key");
}

fn reloads(s: &Sidecar, result: &str) -> f64 {
    let sample = format!(r#"regent_reload_total{{result="{result}",what="keyring"}}"#);
    metric(&s.running.metrics.render(), &sample).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_file_is_used_for_the_next_download_and_a_bad_one_is_refused() {
    let (old_key, old_public) = key_pair();
    let (new_key, new_public) = key_pair();
    let (server, base) = sync_support::start().await;
    server.publish(signed("r1", &old_key, 100), "\"e1\"");

    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("k1.pem");
    std::fs::write(&key_file, &old_public).expect("write key");
    let mut cfg = base_config();
    cfg.reload.interval_seconds = 1;
    cfg.sync.bundles = vec![BundleSource {
        name: "authz".into(),
        url: format!("{base}/bundles/authz"),
        roots: None,
        long_poll_timeout_seconds: None,
    }];
    cfg.sync.keys = vec![KeyConfig {
        kid: "k1".into(),
        public_key_file: Some(key_file.clone()),
        ..KeyConfig::default()
    }];
    cfg.sync.polling = PollingConfig {
        min_delay_seconds: 1,
        max_delay_seconds: 1,
        long_poll_timeout_seconds: 0,
    };
    let s = Sidecar::start_with(cfg, dir).await;
    assert!(
        eventually(WAIT, || s.revision("authz") == "r1").await,
        "r1 never activated"
    );
    assert_eq!(reloads(&s, "ok"), 0.0, "{}", s.running.metrics.render());
    assert_eq!(reloads(&s, "error"), 0.0);

    // Signed with a key the sidecar does not have yet: refused, r1 stays.
    server.publish(signed("r2", &new_key, 200), "\"e2\"");
    let refused = || s.sync_failing("authz");
    assert!(eventually(WAIT, refused).await, "r2 was not refused");
    assert_eq!(s.revision("authz"), "r1");

    // The key file now holds the new key: the next download of r2 is accepted, no restart.
    replace(&key_file, &new_public);
    assert!(
        eventually(WAIT, || s.revision("authz") == "r2").await,
        "r2 never activated after the key file changed"
    );
    assert_eq!(reloads(&s, "ok"), 1.0);

    // Garbage in the key file: refused and counted, the keyring in force stays, so a bundle
    // signed with the (still configured) new key is accepted.
    replace(
        &key_file,
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    );
    assert!(
        eventually(WAIT, || reloads(&s, "error") == 1.0).await,
        "the bad key file was not counted"
    );
    server.publish(signed("r3", &new_key, 300), "\"e3\"");
    assert!(
        eventually(WAIT, || s.revision("authz") == "r3").await,
        "the keyring in force was lost with the bad file"
    );
    assert_eq!(reloads(&s, "ok"), 1.0);
    s.stop().await;
}
