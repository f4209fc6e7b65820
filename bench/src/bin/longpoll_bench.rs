//! Long-poll fan-out benchmark: N concurrent clients (default 10,000) park a long poll on the
//! bundle server over their own TCP connections; a commit is pushed and the webhook called; we
//! measure the time until the last client has the new bundle, and the server's RSS.
//!
//! The server runs in a child process (this same binary, `--serve CONFIG`) so its RSS is its
//! own. Source addresses are spread over 127.0.0.0/8 so ephemeral ports never run out.
//!
//! ```text
//! cargo run --release -p regent-bench --bin longpoll_bench -- [CLIENTS]
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

#[allow(unsafe_code)] // getrlimit/setrlimit, see SAFETY below
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            return lim.rlim_cur;
        }
    }
    0
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .context("git")?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn serve(config: &str) -> anyhow::Result<()> {
    raise_nofile();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cfg = regent_bundle_server::server::ServerConfig::from_file(Path::new(config))?;
        let running = regent_bundle_server::server::start(cfg).await?;
        println!("LISTENING {}", running.addr);
        // Runs until the parent kills it.
        std::future::pending::<()>().await;
        #[allow(unreachable_code)]
        Ok(())
    })
}

/// One long poll on its own connection; returns when a 200 with a body arrives.
async fn long_poll(
    server: SocketAddr,
    source: Ipv4Addr,
    etag: String,
    parked: Arc<AtomicUsize>,
) -> anyhow::Result<Instant> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    let stream = sock.connect(server).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    loop {
        let req = hyper::Request::get("/bundles/authz")
            .header("host", "bench")
            .header("if-none-match", &etag)
            .header("prefer", "modes=snapshot,delta;wait=120")
            .body(Empty::<Bytes>::new())?;
        send.ready().await?;
        let fut = send.send_request(req);
        parked.fetch_add(1, Ordering::Relaxed);
        let resp = fut.await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status == 200 && !body.is_empty() {
            return Ok(Instant::now());
        }
        anyhow::ensure!(status == 304, "unexpected status {status}");
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(args.get(2).context("--serve CONFIG")?);
    }
    let clients: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let limit = raise_nofile();
    anyhow::ensure!(
        limit as usize > clients + 100,
        "RLIMIT_NOFILE is {limit}: too low for {clients} clients"
    );

    // A policy repository with one bundle, a key, and a server config.
    let tmp = tempfile::tempdir()?;
    let t = tmp.path();
    git(
        t,
        &["init", "--bare", "--quiet", "-b", "main", "origin.git"],
    )?;
    git(t, &["init", "--quiet", "-b", "main", "work"])?;
    let work = t.join("work");
    git(&work, &["remote", "add", "origin", "../origin.git"])?;
    std::fs::create_dir_all(work.join("authz"))?;
    std::fs::write(
        work.join("authz/policy.rego"),
        "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n",
    )?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "--quiet", "-m", "one"])?;
    git(&work, &["push", "--quiet", "origin", "HEAD:main"])?;
    let (private, _) = regent_bundle::signing::generate_key_pem();
    std::fs::write(t.join("key.pem"), private)?;
    std::fs::write(t.join("secret"), "bench-secret")?;
    let cfg = format!(
        "listen: 127.0.0.1:0\ndata_dir: {d}/data\ngit: {{repo: {d}/origin.git, poll_interval_seconds: 0}}\n\
         bundles: [{{name: authz, dir: authz, roots: [envoy/authz], entrypoints: [envoy/authz/allow]}}]\n\
         signing: {{keys: [{{kid: k1, private_key_file: {d}/key.pem}}], active_kid: k1}}\n\
         distribution: {{max_long_poll_seconds: 120}}\n\
         webhook: {{secret_file: {d}/secret, wait_seconds: 60}}\nlog: {{level: warn}}\n",
        d = t.display()
    );
    std::fs::write(t.join("server.yaml"), cfg)?;

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(t.join("server.yaml"))
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let result = run_clients(&mut child, pid, clients, t, &work);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn run_clients(
    child: &mut std::process::Child,
    pid: u32,
    clients: usize,
    t: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    use std::io::BufRead;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("LISTENING ")
        .context("server did not start")?
        .parse()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/bundles/authz");
        // Wait for the first publication.
        let deadline = Instant::now() + Duration::from_secs(120);
        let etag = loop {
            let r = http.get(&url).send().await?;
            if r.status() == 200 {
                break r.headers()["etag"].to_str()?.to_string();
            }
            anyhow::ensure!(Instant::now() < deadline, "first publication timed out");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let rss_idle = rss_kib(pid, "VmRSS:");

        let parked = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(clients);
        let connect_start = Instant::now();
        for i in 0..clients {
            // 127.0.1.0 .. : 250 clients per source address.
            let source = Ipv4Addr::new(127, 0, 1 + (i / 250 / 250) as u8, (i / 250 % 250) as u8 + 1);
            let etag = etag.clone();
            let parked = Arc::clone(&parked);
            tasks.push(tokio::spawn(long_poll(addr, source, etag, parked)));
            if i % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        // Wait until the server holds every long poll.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let page = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let waiting: usize = page
                .lines()
                .find_map(|l| l.strip_prefix("regent_long_polls_waiting "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if waiting >= clients {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {waiting} of {clients} long polls parked"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let parked_after = connect_start.elapsed();
        let rss_parked = rss_kib(pid, "VmRSS:");

        // Push a commit and call the webhook; the build runs, then every client is woken.
        std::fs::write(
            work.join("authz/extra.rego"),
            "package envoy.authz\n\nreason := \"bench\"\n",
        )?;
        git(work, &["add", "-A"])?;
        git(work, &["commit", "--quiet", "-m", "two"])?;
        git(work, &["push", "--quiet", "origin", "HEAD:main"])?;
        let secret = std::fs::read(t.join("secret"))?;
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = regent_bundle_server::server::auth::github_signature(&secret, body);
        let push = Instant::now();
        let hook = http
            .post(format!("http://{addr}/v1/hooks/git"))
            .header("x-hub-signature-256", sig)
            .body(body.to_vec())
            .send();
        let mut first: Option<Instant> = None;
        let mut last = push;
        let mut ok = 0usize;
        let hook = tokio::spawn(hook);
        for t in tasks {
            match t.await? {
                Ok(at) => {
                    ok += 1;
                    first = Some(first.map_or(at, |f| f.min(at)));
                    last = last.max(at);
                }
                Err(e) => eprintln!("client failed: {e:#}"),
            }
        }
        let hook_status = hook.await??.status();
        let rss_peak = rss_kib(pid, "VmHWM:");
        let first = first.unwrap_or(push);
        println!("clients: {clients} (received the new bundle: {ok}); webhook HTTP {hook_status}");
        println!("all long polls parked after {:.2} s", parked_after.as_secs_f64());
        println!(
            "server RSS: idle {:.1} MiB, with {clients} parked long polls {:.1} MiB, peak {:.1} MiB",
            rss_idle as f64 / 1024.0,
            rss_parked as f64 / 1024.0,
            rss_peak as f64 / 1024.0
        );
        println!(
            "push (webhook call) -> last client: {:.3} s; first client -> last client: {:.3} s",
            (last - push).as_secs_f64(),
            (last - first).as_secs_f64()
        );
        Ok(())
    })
}
