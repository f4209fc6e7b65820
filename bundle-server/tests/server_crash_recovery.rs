//! Crash-consistent publication: the server killed at each step of a publication restarts
//! serving, writing and publishing consistently.
//!
//! A kill is simulated deterministically by writing the on-disk state a kill at that step
//! leaves, from the real files of two real publications (commits A then B): a publication
//! writes `published/NAME.tar.gz` (data dir), then `published/state.json`, then
//! `publish_dir/NAME.tar.gz` and `NAME.tar.gz.etag`, each through a `.regent-*.tmp` file
//! renamed into place; a fetch that is killed leaves git's ref lock in the mirror. Each test
//! then starts a real server (127.0.0.1:0, real git repository) on that state and checks that
//! `/bundles`, the data dir and the publish dir agree, at once where the state allows and after
//! the next build, and that the next push is published consistently too.

mod server_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regent_bundle_server::server;
use reqwest::StatusCode;
use server_support::*;

const BUILD: Duration = Duration::from_secs(60);
const BUNDLES: [&str; 2] = ["authz", "platform"];

/// The files of one complete publication.
struct Snapshot {
    commit: String,
    /// `state.json`.
    state: Vec<u8>,
    /// `published/NAME.tar.gz` by bundle name.
    data: BTreeMap<String, Vec<u8>>,
    /// Files of the publish dir by file name (`NAME.tar.gz`, `NAME.tar.gz.etag`).
    publish: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    fn read(commit: &str, data: &Path, publish: &Path) -> Snapshot {
        let published = data.join("published");
        let mut s = Snapshot {
            commit: commit.to_string(),
            state: std::fs::read(published.join("state.json")).expect("state.json"),
            data: BTreeMap::new(),
            publish: BTreeMap::new(),
        };
        for b in BUNDLES {
            let f = format!("{b}.tar.gz");
            s.data.insert(
                b.to_string(),
                std::fs::read(published.join(&f)).expect("data bundle"),
            );
            for f in [f.clone(), format!("{f}.etag")] {
                let bytes = std::fs::read(publish.join(&f)).expect("publish dir file");
                s.publish.insert(f, bytes);
            }
        }
        s
    }

    fn put_data_bundle(&self, data: &Path, bundle: &str) {
        std::fs::write(
            data.join("published").join(format!("{bundle}.tar.gz")),
            &self.data[bundle],
        )
        .unwrap();
    }

    fn put_state(&self, data: &Path) {
        std::fs::write(data.join("published/state.json"), &self.state).unwrap();
    }

    fn put_publish(&self, publish: &Path, file: &str) {
        std::fs::write(publish.join(file), &self.publish[file]).unwrap();
    }

    /// The whole publication, in both dirs.
    fn put_all(&self, data: &Path, publish: &Path) {
        for b in BUNDLES {
            self.put_data_bundle(data, b);
        }
        self.put_state(data);
        for f in self.publish.keys() {
            self.put_publish(publish, f);
        }
    }
}

/// A repository and two real publications of it: A, then B (the origin's head).
struct Fixture {
    repo: PolicyRepo,
    keys: Keys,
    a: Snapshot,
    b: Snapshot,
    /// The data dir after B (git mirror included).
    data: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let repo = PolicyRepo::new();
        let keys = Keys::new();
        let data = tempfile::tempdir().unwrap();
        let publish = tempfile::tempdir().unwrap();
        let publish_once = |commit: String| {
            let cfg = config(
                &repo.origin,
                data.path(),
                &keys.private,
                &format!("publish_dir: {}", publish.path().display()),
            );
            let (data, publish) = (data.path(), publish.path());
            async move {
                let srv = start(cfg).await;
                for b in BUNDLES {
                    wait_published(&srv, b, &commit).await;
                }
                srv.shutdown().await;
                Snapshot::read(&commit, data, publish)
            }
        };
        let a = publish_once(git(&repo.work, &["rev-parse", "HEAD"])).await;
        repo.write("authz/policy.rego", &format!("{POLICY}\n# B\n"));
        repo.write(
            "platform/common.rego",
            &format!("{PLATFORM}\nviewers := {{\"bob\"}}\n"),
        );
        let b = publish_once(repo.commit_push("commit B")).await;
        assert_ne!(a.data["authz"], b.data["authz"]);
        Fixture {
            repo,
            keys,
            a,
            b,
            data,
        }
    }

    /// A fresh data dir (a copy of the one after B, git mirror included) and an empty publish
    /// dir, for the test to shape into the state a kill leaves.
    fn dirs(&self) -> (tempfile::TempDir, tempfile::TempDir) {
        let data = tempfile::tempdir().unwrap();
        copy_tree(self.data.path(), data.path());
        (data, tempfile::tempdir().unwrap())
    }

    fn config(&self, data: &Path, publish: &Path) -> server::ServerConfig {
        config(
            &self.repo.origin,
            data,
            &self.keys.private,
            &format!("publish_dir: {}", publish.display()),
        )
    }

    /// The same, with the repository unreachable (the git server is down during the restart):
    /// no build can publish, so what start-up restored holds still while the test looks.
    fn config_repo_down(&self, data: &Path, publish: &Path) -> server::ServerConfig {
        config(
            &self.repo.dir.path().join("unreachable.git"),
            data,
            &self.keys.private,
            &format!("publish_dir: {}", publish.display()),
        )
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".regent-") && n.ends_with(".tmp")
        })
        .collect()
}

/// `bundle` as served: (ETag, bytes); `None` when not served (503/404).
async fn served(srv: &server::Running, bundle: &str) -> Option<(String, Vec<u8>)> {
    let resp = client()
        .get(url(srv, &format!("/bundles/{bundle}")))
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::OK {
        return None;
    }
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    Some((etag, resp.bytes().await.unwrap().to_vec()))
}

/// Every bundle in `bundles` is served at `commit`, and the data dir, `state.json` and the
/// publish dir hold exactly what is served; no temporary file is left in either dir.
async fn assert_consistent(
    srv: &server::Running,
    fx: &Fixture,
    data: &Path,
    publish: &Path,
    bundles: &[&str],
    commit: &str,
) {
    let keyring = fx.keys.keyring("k1");
    let published = data.join("published");
    for b in bundles {
        let Some((etag, bytes)) = served(srv, b).await else {
            panic!("{b} not served; status: {}", status(srv).await);
        };
        let (bundle, _) = verify(&bytes, &keyring);
        assert_eq!(bundle.revision(), commit, "{b} served");
        let f = format!("{b}.tar.gz");
        assert!(
            std::fs::read(publish.join(&f)).ok() == Some(bytes.clone()),
            "publish dir {f} is not the served bundle"
        );
        assert_eq!(
            std::fs::read_to_string(publish.join(format!("{f}.etag")))
                .unwrap()
                .trim(),
            etag,
            "publish dir {f}.etag"
        );
        assert!(
            std::fs::read(published.join(&f)).unwrap() == bytes,
            "data dir {f} is not the served bundle"
        );
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(published.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["commit"], commit, "state.json");
    assert_eq!(temp_files(publish), Vec::<PathBuf>::new());
    assert_eq!(temp_files(&published), Vec::<PathBuf>::new());
}

/// Waits for `commit` to be served, checks consistency, then pushes one more commit and checks
/// that it is published consistently as well.
async fn converges_and_publishes_next(
    srv: &server::Running,
    fx: &Fixture,
    data: &Path,
    publish: &Path,
    commit: &str,
) {
    for b in BUNDLES {
        wait_published(srv, b, commit).await;
    }
    assert_consistent(srv, fx, data, publish, &BUNDLES, commit).await;
    fx.repo.write("README.md", &format!("after {commit}\n"));
    fx.repo
        .write("authz/extra.rego", "package envoy.authz\n\nextra := 1\n");
    let next = fx.repo.commit_push("the next publication");
    assert!(srv.build_now(BUILD).await);
    let st = status(srv).await;
    assert_eq!(st["last_build"]["result"], "published", "{st}");
    assert_consistent(srv, fx, data, publish, &BUNDLES, &next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_writing_the_data_dir_bundles() {
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    // Publishing B: authz written to the data dir, killed while writing platform's.
    fx.a.put_all(d, p);
    fx.b.put_data_bundle(d, "authz");
    std::fs::write(
        d.join("published/.regent-k1lled.tmp"),
        &fx.b.data["platform"][..100],
    )
    .unwrap();

    let srv = start(fx.config_repo_down(d, p)).await;
    // What state.json (A) vouches for is served at once, and matches the publish dir; authz
    // of B without a state naming B is not served; the temporary file is gone.
    assert_consistent(&srv, &fx, d, p, &["platform"], &fx.a.commit).await;
    assert_eq!(served(&srv, "authz").await, None);
    assert!(srv.build_now(BUILD).await);
    assert_consistent(&srv, &fx, d, p, &["platform"], &fx.a.commit).await;
    srv.shutdown().await;

    // With the repository back, B is gated again and published everywhere.
    let srv = start(fx.config(d, p)).await;
    converges_and_publishes_next(&srv, &fx, d, p, &fx.b.commit).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_state_json() {
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    // Publishing B: both data dir bundles written, state.json still names A.
    fx.a.put_all(d, p);
    for b in BUNDLES {
        fx.b.put_data_bundle(d, b);
    }

    let srv = start(fx.config_repo_down(d, p)).await;
    // Nothing the state vouches for is on disk: nothing is served (not ready), and the
    // publish dir keeps the last complete publication, A, untouched.
    assert!(srv.build_now(BUILD).await);
    for b in BUNDLES {
        assert_eq!(served(&srv, b).await, None);
    }
    for (f, bytes) in &fx.a.publish {
        assert!(std::fs::read(p.join(f)).unwrap() == *bytes, "{f} changed");
    }
    srv.shutdown().await;

    // With the repository back, B is gated again and published everywhere.
    let srv = start(fx.config(d, p)).await;
    converges_and_publishes_next(&srv, &fx, d, p, &fx.b.commit).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_state_json_and_the_publish_dir() {
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    // Publishing B: data dir and state.json at B; the publish dir still holds A for authz and
    // nothing at all for platform (e.g. a publish dir configured since).
    fx.b.put_all(d, p);
    fx.a.put_publish(p, "authz.tar.gz");
    fx.a.put_publish(p, "authz.tar.gz.etag");
    std::fs::remove_file(p.join("platform.tar.gz")).unwrap();
    std::fs::remove_file(p.join("platform.tar.gz.etag")).unwrap();

    let srv = start(fx.config(d, p)).await;
    // Reconciled during start, before the first build: served B, publish dir B.
    assert!(srv.is_ready());
    for (f, bytes) in &fx.b.publish {
        assert!(
            std::fs::read(p.join(f)).unwrap() == *bytes,
            "{f} not rewritten"
        );
    }
    assert_consistent(&srv, &fx, d, p, &BUNDLES, &fx.b.commit).await;
    // B is not gated again (same commit, same configuration), and nothing changes.
    assert!(srv.build_now(BUILD).await);
    assert_consistent(&srv, &fx, d, p, &BUNDLES, &fx.b.commit).await;
    converges_and_publishes_next(&srv, &fx, d, p, &fx.b.commit).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_the_publish_dir() {
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    // Publishing B to the publish dir: authz's bundle renamed into place, killed before its
    // ETag, with platform's bundle half written to a temporary file.
    fx.b.put_all(d, p);
    fx.a.put_publish(p, "authz.tar.gz.etag");
    fx.a.put_publish(p, "platform.tar.gz");
    fx.a.put_publish(p, "platform.tar.gz.etag");
    std::fs::write(
        p.join(".regent-Xy12ab.tmp"),
        &fx.b.publish["platform.tar.gz"][..64],
    )
    .unwrap();

    let srv = start(fx.config(d, p)).await;
    assert_consistent(&srv, &fx, d, p, &BUNDLES, &fx.b.commit).await;
    converges_and_publishes_next(&srv, &fx, d, p, &fx.b.commit).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_publication_is_left_untouched() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    // Killed after the publish dir was written (before or after the swap for clients).
    fx.b.put_all(d, p);
    let inodes = |p: &Path| -> Vec<u64> {
        fx.b.publish
            .keys()
            .map(|f| std::fs::metadata(p.join(f)).unwrap().ino())
            .collect()
    };
    let before = inodes(p);

    let srv = start(fx.config(d, p)).await;
    assert_consistent(&srv, &fx, d, p, &BUNDLES, &fx.b.commit).await;
    assert_eq!(
        inodes(p),
        before,
        "a publish dir that matches is not rewritten"
    );
    assert_eq!(srv.git_stale_locks_removed(), 0);
    converges_and_publishes_next(&srv, &fx, d, p, &fx.b.commit).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_fetch_leaves_git_locks_that_start_removes() {
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    fx.b.put_all(d, p);
    // C is pushed; the server is killed while `git fetch` holds the ref lock (and the
    // packed-refs lock).
    fx.repo.write("README.md", "commit C\n");
    let c = fx.repo.commit_push("commit C");
    let mirror = d.join("repo.git");
    let ref_lock = mirror.join("refs/heads/regent-tracked.lock");
    std::fs::write(&ref_lock, format!("{c}\n")).unwrap();
    std::fs::write(mirror.join("packed-refs.lock"), "").unwrap();

    let srv = start(fx.config(d, p)).await;
    // The locks are gone (before any git ran) and counted; C is fetched and published.
    assert!(!ref_lock.exists());
    assert!(!mirror.join("packed-refs.lock").exists());
    assert_eq!(srv.git_stale_locks_removed(), 2);
    converges_and_publishes_next(&srv, &fx, d, p, &c).await;
    srv.shutdown().await;
}

/// A lock held by a live git (here: a `git cat-file --batch` working in the mirror, waiting on
/// its input) is not removed; once that git is gone, the next build removes it and publishes.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_live_git_is_kept_and_removed_once_it_is_gone() {
    let fx = Fixture::new().await;
    let (data, publish) = fx.dirs();
    let (d, p) = (data.path(), publish.path());
    fx.b.put_all(d, p);
    let mirror = d.join("repo.git");
    let ref_lock = mirror.join("refs/heads/regent-tracked.lock");
    let mut holder = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&mirror)
        .args(["cat-file", "--batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    fx.repo.write("README.md", "commit C\n");
    let c = fx.repo.commit_push("commit C");
    std::fs::write(&ref_lock, format!("{c}\n")).unwrap();

    let srv = start(fx.config(d, p)).await;
    // The start-up build cannot fetch C: the lock stays, B stays served everywhere.
    assert!(srv.build_now(BUILD).await);
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["result"], "error", "{st}");
    assert!(
        st["last_build"]["error"]
            .as_str()
            .unwrap()
            .contains("regent-tracked.lock"),
        "{st}"
    );
    assert!(ref_lock.exists());
    assert_eq!(srv.git_stale_locks_removed(), 0);
    assert_consistent(&srv, &fx, d, p, &BUNDLES, &fx.b.commit).await;

    // That git ends without releasing the lock (as a killed one would): the next build
    // removes it, fetches again and publishes C.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(srv.build_now(BUILD).await);
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["result"], "published", "{st}");
    assert!(!ref_lock.exists());
    assert_eq!(srv.git_stale_locks_removed(), 1);
    converges_and_publishes_next(&srv, &fx, d, p, &c).await;
    srv.shutdown().await;
}
