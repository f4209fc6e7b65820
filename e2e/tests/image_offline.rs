//! The offline image path of `make image`: `tools/oci-layout.sh` turns a built binary into an
//! OCI image layout. Each test assembles a layout from the debug binary, checks it as a registry
//! client would (index -> manifest -> config and layer, every digest and size), checks the layer
//! is deterministic, unpacks it and runs the entrypoint from the unpacked root filesystem with the
//! unpacked dynamic loader and libraries only: `--version`, and for the sidecar a gRPC Check.
//! Run as root, the entrypoint also runs chrooted into the rootfs as uid 65532, as a container
//! runtime would start it.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use regent_bundle_server::authoring::check::render_response;
use regent_bundle_server::authoring::check_request::check_request_from_json;
use regent_e2e::bins::repo_root;
use regent_e2e::process::{tail, Proc};
use regent_e2e::sidecar::SidecarOptions;
use regent_e2e::upstreams::wait_listening;
use regent_e2e::wait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const RUN_AS: u32 = 65532;

/// A binary of the workspace, as the harness finds it: the environment variable e2e/e2e.sh sets,
/// else next to this crate's own binaries (cargo puts them all in one directory).
fn built(var: &str, name: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_BIN_EXE_regent-e2e-echo"))
            .parent()
            .context("the echo binary has no directory")?
            .join(name),
    };
    ensure!(
        path.is_file(),
        "{} not found: build it first (cargo build -p regent-bundle-server -p regent-sidecar --bins; e2e/e2e.sh does)",
        path.display()
    );
    Ok(path)
}

fn output(mut cmd: Command, what: &str) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// `tools/oci-layout.sh` for `binary` into `out`.
fn assemble(binary: &Path, name: &str, out: &Path) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tools/oci-layout.sh"))
        .arg("--binary")
        .arg(binary)
        .args(["--name", name, "--version", VERSION])
        .args(["--revision", "0123456789abcdef0123456789abcdef01234567"])
        .args(["--source", "https://example.invalid/regent"])
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    output(cmd, "tools/oci-layout.sh")?;
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The blob a descriptor points to, checked against the descriptor's media type, size and digest.
fn blob(
    layout: &Path,
    desc: &Value,
    media_type: &str,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<u8>> {
    ensure!(
        desc["mediaType"] == media_type,
        "descriptor {desc}: media type is not {media_type}"
    );
    let digest = desc["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("{digest}: not a sha256 digest"))?;
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).with_context(|| format!("reading blob {}", path.display()))?;
    ensure!(
        desc["size"].as_u64() == Some(bytes.len() as u64),
        "blob {digest}: descriptor size {} but the file has {} bytes",
        desc["size"],
        bytes.len()
    );
    ensure!(
        sha256_hex(&bytes) == hex,
        "blob {digest}: its content hashes to sha256:{}",
        sha256_hex(&bytes)
    );
    seen.insert(hex.to_string());
    Ok(bytes)
}

/// A validated layout: the image config and the uncompressed layer.
struct Image {
    config: Value,
    layer_tar: Vec<u8>,
    manifest_digest: String,
}

/// Follows index -> manifest -> config and layer, checking every digest and size, and that the
/// layout holds no other blob.
fn validate(layout: &Path) -> Result<Image> {
    ensure!(
        read_json(&layout.join("oci-layout"))? == json!({"imageLayoutVersion": "1.0.0"}),
        "oci-layout file"
    );
    let index = read_json(&layout.join("index.json"))?;
    ensure!(index["schemaVersion"] == 2, "index schemaVersion: {index}");
    ensure!(
        index["mediaType"] == "application/vnd.oci.image.index.v1+json",
        "index mediaType: {index}"
    );
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    ensure!(
        manifests.len() == 1,
        "index lists {} manifests",
        manifests.len()
    );
    let desc = &manifests[0];
    ensure!(
        desc["annotations"]["org.opencontainers.image.ref.name"] == VERSION,
        "index ref.name is not {VERSION}: {desc}"
    );
    ensure!(
        desc["platform"]["os"] == "linux" && desc["platform"]["architecture"].is_string(),
        "index platform: {desc}"
    );

    let mut seen = BTreeSet::new();
    let manifest_bytes = blob(
        layout,
        desc,
        "application/vnd.oci.image.manifest.v1+json",
        &mut seen,
    )?;
    let manifest: Value =
        serde_json::from_slice(&manifest_bytes).context("parsing the manifest")?;
    ensure!(manifest["schemaVersion"] == 2, "manifest: {manifest}");
    let config_bytes = blob(
        layout,
        &manifest["config"],
        "application/vnd.oci.image.config.v1+json",
        &mut seen,
    )?;
    let config: Value =
        serde_json::from_slice(&config_bytes).context("parsing the image config")?;
    let layers = manifest["layers"]
        .as_array()
        .context("manifest without layers")?;
    ensure!(layers.len() == 1, "manifest lists {} layers", layers.len());
    let gz = blob(
        layout,
        &layers[0],
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &mut seen,
    )?;
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut layer_tar)
        .context("gunzipping the layer")?;
    ensure!(
        config["rootfs"]["type"] == "layers"
            && config["rootfs"]["diff_ids"]
                == json!([format!("sha256:{}", sha256_hex(&layer_tar))]),
        "config rootfs.diff_ids do not name the uncompressed layer: {}",
        config["rootfs"]
    );
    ensure!(
        config["architecture"] == desc["platform"]["architecture"] && config["os"] == "linux",
        "config platform differs from the index's"
    );

    let mut stored = BTreeSet::new();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).context("listing blobs")? {
        stored.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    ensure!(
        stored == seen,
        "blobs on disk {stored:?}, referenced {seen:?}"
    );
    Ok(Image {
        config,
        layer_tar,
        manifest_digest: desc["digest"].as_str().unwrap_or_default().to_string(),
    })
}

/// Checks what the layout says about running it, then unpacks the layer into `root`: every entry
/// has mtime 0 and uid/gid 0, except the state directory (owned by the user the image runs as).
fn unpack(image: &Image, name: &str, root: &Path) -> Result<()> {
    let state_dir = format!("/var/lib/{name}");
    let c = &image.config["config"];
    ensure!(c["User"] == "65532:65532", "User: {}", c["User"]);
    ensure!(
        c["Entrypoint"] == json!([format!("/usr/local/bin/{name}")]),
        "Entrypoint: {}",
        c["Entrypoint"]
    );
    ensure!(
        c["Volumes"] == json!({state_dir.clone(): {}}),
        "Volumes: {}",
        c["Volumes"]
    );
    let labels = &c["Labels"];
    for (key, want) in [
        ("org.opencontainers.image.version", VERSION),
        (
            "org.opencontainers.image.revision",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        (
            "org.opencontainers.image.source",
            "https://example.invalid/regent",
        ),
        ("org.opencontainers.image.created", "2023-11-14T22:13:20Z"),
    ] {
        ensure!(labels[key] == want, "label {key}: {}", labels[key]);
    }

    std::fs::create_dir_all(root)?;
    let mut archive = tar::Archive::new(&image.layer_tar[..]);
    let mut names = Vec::new();
    for entry in archive.entries().context("reading the layer")? {
        let mut entry = entry.context("reading a layer entry")?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let h = entry.header();
        let owner = if format!("/{path}") == state_dir {
            RUN_AS as u64
        } else {
            0
        };
        ensure!(h.mtime()? == 0, "{path}: mtime {}", h.mtime()?);
        ensure!(
            h.uid()? == owner && h.gid()? == owner,
            "{path}: owned by {}:{}, want {owner}:{owner}",
            h.uid()?,
            h.gid()?
        );
        ensure!(
            entry
                .unpack_in(root)
                .with_context(|| format!("unpacking {path}"))?,
            "{path}: outside the root"
        );
        names.push(path);
    }
    // Sorted by name, the state directory appended last.
    let last = names.pop().context("empty layer")?;
    ensure!(format!("/{last}") == state_dir, "last entry {last}");
    let mut sorted = names.clone();
    sorted.sort();
    ensure!(names == sorted, "layer entries are not sorted: {names:?}");
    Ok(())
}

/// The image's entrypoint run from the unpacked rootfs: its dynamic loader, with only the
/// rootfs's library directories.
struct Rootfs {
    root: PathBuf,
    loader: PathBuf,
    library_path: String,
}

impl Rootfs {
    fn find(root: &Path) -> Result<Rootfs> {
        let mut loader = None;
        let mut lib_dirs = BTreeSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
            {
                let p = entry?.path();
                let file_name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if p.is_dir() {
                    stack.push(p);
                } else if file_name.starts_with("ld-linux") {
                    loader = Some(p);
                } else if file_name.contains(".so") {
                    lib_dirs.insert(dir.display().to_string());
                }
            }
        }
        Ok(Rootfs {
            root: root.to_path_buf(),
            loader: loader.context("no dynamic loader (ld-linux*) in the rootfs")?,
            library_path: lib_dirs.into_iter().collect::<Vec<_>>().join(":"),
        })
    }

    fn command(&self, entrypoint: &str) -> Command {
        let mut cmd = Command::new(&self.loader);
        cmd.arg("--library-path")
            .arg(&self.library_path)
            .arg(self.root.join(entrypoint.trim_start_matches('/')))
            .env_clear();
        cmd
    }

    /// Every library the entrypoint loads resolves inside the rootfs (the loader would otherwise
    /// fall back to this machine's system directories and hide a missing one).
    fn check_libraries(&self, entrypoint: &str) -> Result<()> {
        let mut cmd = Command::new(&self.loader);
        cmd.arg("--library-path")
            .arg(&self.library_path)
            .arg("--list")
            .arg(self.root.join(entrypoint.trim_start_matches('/')));
        let out = output(cmd, "the rootfs loader --list")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut resolved = 0;
        for line in text.lines() {
            if let Some((_, target)) = line.split_once("=> ") {
                let path = target.split(" (0x").next().unwrap_or_default();
                ensure!(
                    Path::new(path).starts_with(&self.root),
                    "{entrypoint} loads {path} from outside the rootfs:\n{text}"
                );
                resolved += 1;
            }
        }
        ensure!(resolved > 0, "the loader resolved no library:\n{text}");
        Ok(())
    }

    /// As root (and where chroot(2) is allowed): the entrypoint chrooted into the rootfs, as uid
    /// and gid 65532, with nothing of this machine visible. `None` when that cannot be done here.
    #[allow(unsafe_code)] // geteuid, see SAFETY below
    fn chrooted(&self, args: &[&str]) -> Result<Option<Output>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: skipping the chrooted run");
            return Ok(None);
        }
        let out = Command::new("chroot")
            .arg(format!("--userspec={RUN_AS}:{RUN_AS}"))
            .arg(&self.root)
            .args(args)
            .env_clear()
            .output();
        match out {
            Ok(out) if out.status.code() == Some(125) => {
                eprintln!(
                    "chroot refused here, skipping the chrooted run: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(None)
            }
            Ok(out) => Ok(Some(out)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("no chroot binary: skipping the chrooted run");
                Ok(None)
            }
            Err(e) => Err(e).context("running chroot"),
        }
    }
}

/// Assembles, validates and unpacks the layout of `name` into `tmp`.
fn image_rootfs(tmp: &Path, binary: &Path, name: &str) -> Result<(Image, Rootfs)> {
    let layout = tmp.join("layout");
    assemble(binary, name, &layout)?;
    let image = validate(&layout)?;
    let root = tmp.join("rootfs");
    unpack(&image, name, &root)?;
    let rootfs = Rootfs::find(&root)?;
    rootfs.check_libraries(&format!("/usr/local/bin/{name}"))?;
    Ok((image, rootfs))
}

fn check_version(rootfs: &Rootfs, name: &str) -> Result<()> {
    let entrypoint = format!("/usr/local/bin/{name}");
    let mut cmd = rootfs.command(&entrypoint);
    cmd.arg("--version");
    let out = output(cmd, &format!("{name} --version from the rootfs"))?;
    let want = format!("{name} {VERSION}");
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == want,
        "--version printed {:?}, want {want:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    if let Some(out) = rootfs.chrooted(&[&entrypoint, "--version"])? {
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want,
            "chrooted {name} --version ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

const POLICY: &str = "package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == \"GET\"
";

fn check_request(method: &str) -> Value {
    json!({"attributes": {"request": {"http": {
        "method": method, "path": "/api/items", "host": "api", "headers": {"x-user": "alice"}
    }}}})
}

/// One ext_authz Check over gRPC, answered as `regent check` renders it.
async fn grpc_check(port: u16, method: &str) -> Result<Value> {
    let req = check_request_from_json(&check_request(method)).context("building a CheckRequest")?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("gRPC channel not ready")?;
    // The response type is CheckResponse, inferred from render_response below: the codec
    // encodes and decodes the same envoy-types messages the sidecar serves.
    let resp = grpc
        .unary(
            tonic::Request::new(req),
            http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .with_context(|| format!("Check {method}"))?;
    Ok(render_response(resp.get_ref()))
}

#[tokio::test]
async fn sidecar_image_layout_runs_and_answers_check() -> Result<()> {
    let sidecar = built("REGENT_SIDECAR_BIN", "regent-sidecar")?;
    let tmp = tempfile::tempdir()?;
    let (image, rootfs) = image_rootfs(tmp.path(), &sidecar, "regent-sidecar")?;

    // The same binary gives the same image, byte for byte.
    let again = tmp.path().join("layout-again");
    assemble(&sidecar, "regent-sidecar", &again)?;
    ensure!(
        std::fs::read(again.join("index.json"))?
            == std::fs::read(tmp.path().join("layout/index.json"))?,
        "a second assembly of the same binary gave another manifest (first {})",
        image.manifest_digest
    );
    std::fs::remove_dir_all(&again)?;

    check_version(&rootfs, "regent-sidecar")?;

    // A local bundle and a minimal configuration, served from the rootfs's binary.
    let policy = tmp.path().join("policy/envoy");
    std::fs::create_dir_all(&policy)?;
    std::fs::write(policy.join("authz.rego"), POLICY)?;
    let mut opts = SidecarOptions::new()?;
    opts.local_bundle = Some(tmp.path().join("policy"));
    opts.proto_descriptor = None;
    let config = tmp.path().join("sidecar.yaml");
    std::fs::write(&config, serde_json::to_string_pretty(&opts.config())?)?;
    let mut cmd = rootfs.command("/usr/local/bin/regent-sidecar");
    cmd.arg("--config").arg(&config);
    let logs = tmp.path().join("logs");
    let mut proc = Proc::spawn("sidecar-from-rootfs", cmd, &logs)?;
    let log = proc.log_path().to_path_buf();
    wait_listening(&mut proc, opts.http_port, Duration::from_secs(30)).await?;
    wait_listening(&mut proc, opts.grpc_port, Duration::from_secs(30)).await?;
    let ready = format!("http://127.0.0.1:{}/ready", opts.http_port);
    let client = regent_e2e::http::client()?;
    wait::until(
        "the sidecar from the rootfs to be ready",
        Duration::from_secs(30),
        || {
            let (client, ready) = (&client, &ready);
            async move { Ok((client.get(ready).send().await?.status() == 200).then_some(())) }
        },
    )
    .await?;

    let with_log = |e: anyhow::Error| e.context(format!("sidecar log:\n{}", tail(&log, 40)));
    let allowed = grpc_check(opts.grpc_port, "GET").await.map_err(with_log)?;
    ensure!(allowed["allowed"] == true, "GET: {allowed}");
    ensure!(allowed["status"]["code"] == 0, "GET: {allowed}");
    let denied = grpc_check(opts.grpc_port, "POST").await.map_err(with_log)?;
    ensure!(denied["allowed"] == false, "POST: {denied}");
    proc.ensure_running()?;
    proc.stop();
    Ok(())
}

#[tokio::test]
async fn regent_image_layout_runs() -> Result<()> {
    let regent = built("REGENT_BIN", "regent")?;
    let tmp = tempfile::tempdir()?;
    let (_image, rootfs) = image_rootfs(tmp.path(), &regent, "regent")?;
    check_version(&rootfs, "regent")?;

    // The authoring CLI works from the rootfs: `regent test` on a policy with one test.
    let policy = tmp.path().join("policy");
    std::fs::create_dir_all(&policy)?;
    std::fs::write(policy.join("authz.rego"), POLICY)?;
    std::fs::write(
        policy.join("authz_test.rego"),
        "package envoy.authz\n\nimport rego.v1\n\ntest_get_allowed if allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"GET\"}}}}\n",
    )?;
    let mut cmd = rootfs.command("/usr/local/bin/regent");
    cmd.arg("test").arg(&policy);
    let out = output(cmd, "regent test from the rootfs")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("PASS data.envoy.authz.test_get_allowed")
        || !text.contains("1 passed, 0 failed")
    {
        bail!("regent test did not report the one passing test:\n{text}");
    }
    Ok(())
}
