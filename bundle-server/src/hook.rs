//! `regent hook pre-receive`: the publish gate run by a git host before it accepts a push, so a
//! commit the server would refuse never lands on the tracked branch. Also the short text the
//! hooks print to the pusher (the webhook's `Accept: text/plain` answer uses it too).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::server::gate::{check_commit, Failure};
use crate::server::git::is_object_id;
use crate::server::state::{BuildReport, BuildResult};
use crate::server::ServeArgs;

/// Arguments of `regent hook`.
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    #[command(subcommand)]
    hook: Hook,
}

#[derive(Debug, clap::Subcommand)]
enum Hook {
    /// Gate the pushed commits of the tracked branch (reads git's `OLD NEW REF` lines on stdin);
    /// exits 1, naming what failed, to make git refuse the push.
    PreReceive(PreReceiveArgs),
}

/// Arguments of `regent hook pre-receive`.
#[derive(Debug, clap::Args)]
pub struct PreReceiveArgs {
    /// The configuration file of `regent serve` (its `git.branch` and `bundles` are used).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Print the gate's failures as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs `regent hook ...`; returns the exit code.
pub fn run(args: HookArgs) -> anyhow::Result<u8> {
    match args.hook {
        Hook::PreReceive(a) => {
            let stdin = std::io::stdin();
            let mut out = std::io::stderr();
            pre_receive(&a, stdin.lock(), &mut out)
        }
    }
}

/// One line git gives a pre-receive hook.
struct RefUpdate {
    new: String,
    refname: String,
}

fn parse_line(n: usize, line: &str) -> anyhow::Result<RefUpdate> {
    let mut parts = line.split_whitespace();
    let (Some(old), Some(new), Some(refname), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("stdin line {n}: expected \"OLD NEW REF\", got {line:?}");
    };
    for (what, id) in [("old", old), ("new", new)] {
        if !is_object_id(id) {
            anyhow::bail!("stdin line {n}: {what} value {id:?} is not an object id");
        }
    }
    Ok(RefUpdate {
        new: new.to_string(),
        refname: refname.to_string(),
    })
}

/// Gates every update of the tracked branch read from `input`, writing the outcome to `out`
/// (git shows a hook's output to the pusher). 0: accept the push; 1: refuse it.
pub fn pre_receive(
    args: &PreReceiveArgs,
    input: impl BufRead,
    out: &mut impl std::io::Write,
) -> anyhow::Result<u8> {
    // The server's own loading: the same bundles, roots and entrypoints, validated the same way.
    let cfg = ServeArgs {
        config: Some(args.config.clone()),
        ..ServeArgs::default()
    }
    .load()?;
    let tracked = format!("refs/heads/{}", cfg.git.branch);
    let mut refused = false;
    for (i, line) in input.lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let update = parse_line(i + 1, &line)?;
        // Other branches and tags are not published; deleting the branch publishes nothing
        // either (the server keeps serving what it has).
        if update.refname != tracked || update.new.bytes().all(|b| b == b'0') {
            continue;
        }
        let tree = tempfile::Builder::new()
            .prefix("regent-pre-receive-")
            .tempdir()
            .context("creating a temporary directory")?;
        export(&update.new, tree.path())?;
        let failures = check_commit(tree.path(), &update.new, &cfg.bundles);
        if args.json {
            let body = serde_json::json!({
                "ref": update.refname,
                "commit": update.new,
                "result": if failures.is_empty() { "passed" } else { "refused" },
                "failures": failures,
            });
            writeln!(out, "{body}")?;
        } else if failures.is_empty() {
            let names: Vec<&str> = cfg.bundles.iter().map(|b| b.name.as_str()).collect();
            writeln!(
                out,
                "regent: {} passes the publish gate (bundles {})",
                short(&update.new),
                names.join(", ")
            )?;
        } else {
            writeln!(
                out,
                "regent: push refused: commit {} fails the publish gate; {} is unchanged",
                short(&update.new),
                update.refname
            )?;
            for l in failure_lines(&failures) {
                writeln!(out, "  {l}")?;
            }
        }
        refused |= !failures.is_empty();
    }
    Ok(u8::from(refused))
}

/// Writes the tree of `commit` into `dest` with `git archive`, run in the repository the hook
/// runs in (git's environment points it at the pushed objects, still in quarantine).
fn export(commit: &str, dest: &Path) -> anyhow::Result<()> {
    let mut child = Command::new("git")
        .args(["archive", "--format=tar", commit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let stdout = child.stdout.take().context("no pipe from git archive")?;
    // Drained on its own thread so that git never blocks on a full stderr pipe.
    let stderr = child.stderr.take().context("no pipe from git archive")?;
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut buf);
        buf
    });
    // `unpack` refuses entries that would escape `dest` (absolute paths, `..`).
    let unpacked = tar::Archive::new(stdout).unpack(dest);
    let status = child.wait().context("waiting for git archive")?;
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("git archive {commit} failed: {}", stderr.trim());
    }
    unpacked.with_context(|| format!("unpacking the tree of {commit}"))
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// One line per failing test, one per other failure: `BUNDLE: what at FILE:LINE: why`.
pub fn failure_lines(failures: &[Failure]) -> Vec<String> {
    let mut lines = Vec::new();
    for f in failures {
        if f.tests.is_empty() {
            let at = match (&f.file, f.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" in {file}"),
                _ => String::new(),
            };
            lines.push(format!(
                "{}: {} failed{at}: {}",
                f.bundle,
                f.reason,
                one_line(&f.message)
            ));
        }
        for t in &f.tests {
            lines.push(format!(
                "{}: test {} failed at {}:{}: {}",
                f.bundle,
                t.name,
                t.file,
                t.line,
                one_line(&t.failure)
            ));
        }
    }
    lines
}

/// Compiler diagnostics span several lines; one line each keeps a failure list readable.
fn one_line(text: &str) -> String {
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let s = joined.join(" ");
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// The webhook's answer as text: what the build of the push did.
pub fn build_summary(
    report: Option<&BuildReport>,
    published_commit: Option<&str>,
    revisions: &std::collections::BTreeMap<String, String>,
) -> String {
    let serving = match published_commit {
        Some(c) => format!("still serving {}", short(c)),
        None => "nothing is served yet".to_string(),
    };
    let Some(r) = report else {
        return "regent: no build has run yet\n".to_string();
    };
    let commit = r.commit.as_deref().unwrap_or("(unknown commit)");
    let subject = r
        .commit_info
        .as_ref()
        .map(|i| format!(" \"{}\"", one_line(&i.subject)))
        .unwrap_or_default();
    match r.result {
        BuildResult::Published => {
            let mut t = format!("regent: published commit {}{subject}\n", short(commit));
            for (bundle, revision) in revisions {
                t.push_str(&format!("  bundle {bundle} revision {revision}\n"));
            }
            t
        }
        BuildResult::Rejected => {
            let mut t = format!(
                "regent: commit {}{subject} refused by the publish gate; {serving}\n",
                short(commit)
            );
            for l in failure_lines(&r.failures) {
                t.push_str(&format!("  {l}\n"));
            }
            t
        }
        BuildResult::Error => format!(
            "regent: building {} failed: {}; {serving}\n",
            short(commit),
            one_line(r.error.as_deref().unwrap_or("unknown error"))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::gate::FailedTest;

    #[test]
    fn git_lines_are_checked() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = parse_line(1, &format!("{z} {a} refs/heads/main")).unwrap();
        assert_eq!(
            (u.new.as_str(), u.refname.as_str()),
            (a.as_str(), "refs/heads/main")
        );
        let e = parse_line(3, "abc def").err().unwrap().to_string();
        assert!(e.contains("stdin line 3"), "{e}");
        let e = parse_line(2, &format!("{z} --help refs/heads/main"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("new value \"--help\""), "{e}");
    }

    #[test]
    fn failures_read_one_per_line_with_locations() {
        let failures = vec![
            Failure {
                bundle: "authz".into(),
                reason: "test",
                message: "1 of 2 tests failed".into(),
                file: Some("authz/p_test.rego".into()),
                line: Some(7),
                tests: vec![FailedTest {
                    package: "data.authz_test".into(),
                    name: "test_get".into(),
                    file: "authz/p_test.rego".into(),
                    line: 7,
                    failure: "result was false".into(),
                }],
            },
            Failure {
                bundle: "lib".into(),
                reason: "compile",
                message: "lib/x.rego:3:1: error\n  unexpected token".into(),
                file: Some("lib/x.rego".into()),
                line: Some(3),
                tests: Vec::new(),
            },
        ];
        assert_eq!(
            failure_lines(&failures),
            vec![
                "authz: test test_get failed at authz/p_test.rego:7: result was false",
                "lib: compile failed at lib/x.rego:3: lib/x.rego:3:1: error unexpected token",
            ]
        );
    }
}
