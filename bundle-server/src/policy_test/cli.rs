//! `regent test DIR`: runs the tests and reports them as text or JSON.
//!
//! Exit codes (OPA's `opa test`): 0 every test passed, 2 at least one failed, 1 the directory could
//! not be tested (compile error, unreadable file, bad `--run` pattern) or no test was found: a test
//! suite that silently runs nothing (a misnamed rule, a too narrow `--run`) must not look green.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{percent, run_tests_with, Coverage, TestError, TestOptions, TestReport};

/// Output format of `regent test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per test and a summary, for people.
    Text,
    /// One JSON document, for tools.
    Json,
}

/// Arguments of `regent test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Policy directory: every `.rego` (tests included) and `data.json`/`data.yaml` under it.
    pub dir: PathBuf,
    /// Run only the tests whose full name (`data.pkg.test_x`) matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub run: Option<String>,
    /// Report which lines of each module the tests evaluated.
    #[arg(long)]
    pub coverage: bool,
    /// Show `print` output of passing tests too (it is always shown for failing ones).
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Longest one test may run (`500ms`, `5s`, `1m`); a test over it fails.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs `regent test`; returns the exit code (0 all pass, 2 failures, 1 error or no tests).
pub fn run(args: TestArgs) -> anyhow::Result<u8> {
    let filter = args
        .run
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--run is not a valid regular expression")?;
    let opts = TestOptions {
        filter,
        coverage: args.coverage,
        timeout: args.timeout,
    };
    let outcome = run_tests_with(&args.dir, &opts);
    // Rendered in memory first: a closed stdout (`| head`) must not change the exit code.
    let mut buf = Vec::new();
    let code = match args.format {
        OutputFormat::Text => write_text(&mut buf, &args, outcome)?,
        OutputFormat::Json => write_json(&mut buf, &args, outcome)?,
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&buf).and_then(|()| out.flush());
    Ok(code)
}

fn empty_message(args: &TestArgs) -> String {
    match &args.run {
        Some(re) => format!("no test under {} matches --run {re:?}", args.dir.display()),
        None => format!(
            "no tests found under {} (tests are rules named test_*)",
            args.dir.display()
        ),
    }
}

fn exit_code(report: &TestReport) -> u8 {
    if report.results.is_empty() {
        1
    } else if report.failed() > 0 {
        2
    } else {
        0
    }
}

fn write_text(
    out: &mut impl Write,
    args: &TestArgs,
    outcome: Result<TestReport, TestError>,
) -> anyhow::Result<u8> {
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let what = if e.message.contains("--> ") {
                "compile error"
            } else {
                "cannot load"
            };
            anyhow::bail!(
                "{what} in {}{}\n{}",
                args.dir.display(),
                match (&e.file, e.line) {
                    (Some(f), Some(l)) => format!(" ({f}:{l})"),
                    (Some(f), None) => format!(" ({f})"),
                    _ => String::new(),
                },
                e.message
            );
        }
    };
    for r in &report.results {
        writeln!(
            out,
            "{} {} ({}:{}) {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.full_name(),
            r.file,
            r.line,
            fmt_duration(r.duration)
        )?;
        if let Some(f) = &r.failure {
            for line in f.lines() {
                writeln!(out, "    {line}")?;
            }
        }
        if !r.passed || args.verbose {
            for p in &r.prints {
                writeln!(out, "    print: {p}")?;
            }
        }
    }
    if let Some(cov) = &report.coverage {
        write_coverage(out, cov, args.verbose.then_some(args.dir.as_path()))?;
    }
    if report.results.is_empty() {
        writeln!(out, "{}", empty_message(args))?;
    } else {
        writeln!(
            out,
            "{} passed, {} failed",
            report.passed(),
            report.failed()
        )?;
    }
    Ok(exit_code(&report))
}

/// With `sources` (the tested directory, under `-v`), each line never evaluated is shown with its code.
fn write_coverage(
    out: &mut impl Write,
    cov: &Coverage,
    sources: Option<&std::path::Path>,
) -> std::io::Result<()> {
    writeln!(out, "coverage:")?;
    for f in &cov.files {
        let total = f.covered.len() + f.not_covered.len();
        write!(
            out,
            "  {}: {}/{} lines ({:.1}%)",
            f.file,
            f.covered.len(),
            total,
            f.percent()
        )?;
        if f.not_covered.is_empty() {
            writeln!(out)?;
        } else {
            writeln!(out, ", not covered: {}", line_ranges(&f.not_covered))?;
            let text = sources.and_then(|dir| std::fs::read_to_string(dir.join(&f.file)).ok());
            if let Some(text) = text {
                let lines: Vec<&str> = text.lines().collect();
                for n in &f.not_covered {
                    let code = (*n as usize)
                        .checked_sub(1)
                        .and_then(|i| lines.get(i))
                        .copied()
                        .unwrap_or_default();
                    writeln!(out, "    {n:>4} | {code}")?;
                }
            }
        }
    }
    let (covered, total) = cov.totals();
    writeln!(
        out,
        "  total: {covered}/{total} lines ({:.1}%)",
        percent(covered, total)
    )
}

/// `3, 5-7, 10` from sorted line numbers.
fn line_ranges(lines: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = lines[i];
        let mut end = start;
        while i + 1 < lines.len() && lines[i + 1] == end + 1 {
            i += 1;
            end = lines[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

fn write_json(
    out: &mut impl Write,
    args: &TestArgs,
    outcome: Result<TestReport, TestError>,
) -> anyhow::Result<u8> {
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let doc = json!({"error": {"file": e.file, "line": e.line, "message": e.message}});
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            return Ok(1);
        }
    };
    let results: Vec<_> = report
        .results
        .iter()
        .map(|r| {
            json!({
                "package": r.package,
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "passed": r.passed,
                "failure": r.failure,
                "prints": r.prints,
                "duration_ns": u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    let mut doc = json!({
        "results": results,
        "passed": report.passed(),
        "failed": report.failed(),
    });
    if report.results.is_empty() {
        doc["error"] = json!({"file": null, "line": null, "message": empty_message(args)});
    }
    if let Some(cov) = &report.coverage {
        let (covered, total) = cov.totals();
        doc["coverage"] = json!({
            "files": cov.files.iter().map(|f| json!({
                "file": f.file,
                "covered": f.covered,
                "not_covered": f.not_covered,
                "percent": f.percent(),
            })).collect::<Vec<_>>(),
            "covered_lines": covered,
            "total_lines": total,
            "percent": percent(covered, total),
        });
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    Ok(exit_code(&report))
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// `250ms`, `5s`, `2m`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 5s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 86_400.0) {
        return Err(format!("{s:?}: must be more than 0 and less than a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ranges_collapse_runs() {
        assert_eq!(line_ranges(&[3, 5, 6, 7, 10]), "3, 5-7, 10");
        assert_eq!(line_ranges(&[]), "");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
