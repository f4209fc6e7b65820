//! The sidecar's documented configuration tables against the code, so neither can drift: the key
//! table of `docs/sidecar.md` plus the section tables it points to (`sync:` in `docs/sync.md`,
//! `identity:` in `docs/identity.md`) must list exactly the keys
//! `SidecarConfig::from_yaml` accepts, and every literal default they give must be the one the
//! loader uses. The other tables that name sidecar keys (the flags of `docs/sidecar.md`, the OPA
//! mapping of `docs/opa-compatibility.md`) may name only keys that exist.
//!
//! The keys the code accepts are found by asking the real loader: every section refuses unknown
//! keys, and serde's refusal lists the fields it expected, so a probe key at each level yields that
//! level's fields, and a probe below a field tells a section (or a list of sections) from a value.
//!
//! Also here, since it is cheap: every relative link in `README.md`, `CONTRIBUTING.md` and
//! `docs/*.md` must point to an existing file and, with `#anchor`, to an existing heading.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regent_sidecar::config::SidecarConfig;
use serde_yaml::{Mapping, Value};

const PROBE: &str = "__docs_probe__";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Markdown: headings, tables, links.

/// Lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// Splits a table row into its cells; `\|` inside a cell is not a separator.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// The first table after the heading `heading` (exact text, without the `#`s) whose header's
/// first cell is `first_column` (case-insensitive): its body rows, as cells, with line numbers.
fn table_after(text: &str, heading: &str, first_column: &str) -> Vec<(usize, Vec<String>)> {
    let lines = prose_lines(text);
    let start = lines
        .iter()
        .position(|(_, l)| l.trim_start_matches('#').trim() == heading && l.starts_with('#'))
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    let mut rows = Vec::new();
    let mut in_table = false;
    for (n, line) in &lines[start + 1..] {
        if line.starts_with('#') && !in_table {
            break;
        }
        if !line.trim_start().starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        let row = cells(line);
        if !in_table {
            if row[0].eq_ignore_ascii_case(first_column) {
                in_table = true;
            }
            continue;
        }
        if row
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        rows.push((*n, row));
    }
    assert!(
        !rows.is_empty(),
        "no table with a {first_column:?} column after heading {heading:?}"
    );
    rows
}

/// The backticked spans of a cell, in order.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The keys a key cell lists: "`a.b`, `a.c`" gives both; the cell must hold nothing else.
fn keys_of(cell: &str, line: usize) -> Vec<String> {
    let spans = code_spans(cell);
    let rebuilt = spans
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        rebuilt, cell,
        "line {line}: a key cell holds backticked keys separated by \", \""
    );
    spans
}

/// GitHub's anchor for a heading: lowercased, punctuation other than `-` and `_` dropped, spaces
/// to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a Markdown file (duplicates get GitHub's `-1`, `-2` suffixes).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of inline links `[text](target)` outside code.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        // Inline code may hold `](` that is no link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("``");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The code's keys, from the loader.

#[derive(Debug, Clone)]
enum Seg {
    Field(String),
    Element,
}

/// YAML nesting `leaf` at `path` (an `Element` is the first item of a list).
fn nest(path: &[Seg], leaf: Value) -> Value {
    match path.split_first() {
        None => leaf,
        Some((Seg::Field(name), rest)) => {
            let mut m = Mapping::new();
            m.insert(Value::from(name.as_str()), nest(rest, leaf));
            Value::Mapping(m)
        }
        Some((Seg::Element, rest)) => Value::Sequence(vec![nest(rest, leaf)]),
    }
}

fn load(doc: &Value) -> Result<SidecarConfig, String> {
    let text = serde_yaml::to_string(doc).expect("YAML serializes");
    SidecarConfig::from_yaml(&text).map_err(|e| e.to_string())
}

/// The fields of the section at `path`, if a section is there: a probe key is refused with the
/// list of fields serde expected.
fn fields_at(path: &[Seg]) -> Option<Vec<String>> {
    let mut probe = Mapping::new();
    probe.insert(Value::from(PROBE), Value::Null);
    let err = load(&nest(path, Value::Mapping(probe))).err()?;
    let marker = format!("unknown field `{PROBE}`");
    let after = &err[err.find(&marker)? + marker.len()..];
    let listed = after.split(" at line ").next().unwrap_or(after);
    if listed.contains("there are no fields") {
        return Some(Vec::new());
    }
    Some(code_spans(listed))
}

fn dotted(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(f);
            }
            Seg::Element => s.push_str("[]"),
        }
    }
    s
}

/// Walks the configuration as the loader sees it: `leaves` are keys holding a value, `sections`
/// keys holding a section or a list of sections (`sync.bundles`, `grpc.tls`).
fn walk(path: &mut Vec<Seg>, leaves: &mut BTreeSet<String>, sections: &mut BTreeSet<String>) {
    let fields = fields_at(path).unwrap_or_else(|| panic!("{} is no section", dotted(path)));
    for f in fields {
        path.push(Seg::Field(f));
        if fields_at(path).is_some() {
            sections.insert(dotted(path));
            walk(path, leaves, sections);
        } else {
            path.push(Seg::Element);
            if fields_at(path).is_some() {
                path.pop();
                sections.insert(dotted(path));
                path.push(Seg::Element);
                walk(path, leaves, sections);
                path.pop();
            } else {
                path.pop();
                leaves.insert(dotted(path));
            }
        }
        path.pop();
    }
}

struct CodeKeys {
    leaves: BTreeSet<String>,
    sections: BTreeSet<String>,
}

fn code_keys() -> CodeKeys {
    let mut leaves = BTreeSet::new();
    let mut sections = BTreeSet::new();
    walk(&mut Vec::new(), &mut leaves, &mut sections);
    // The walk must have found the shape it is expected to; an empty walk would pass vacuously.
    for k in ["grpc.addr", "policy.path", "sync.http.max_bundle_bytes"] {
        assert!(leaves.contains(k), "the walk missed {k}: {leaves:?}");
    }
    for k in ["grpc.tls", "sync.bundles", "sync.status"] {
        assert!(
            sections.contains(k),
            "the walk missed section {k}: {sections:?}"
        );
    }
    CodeKeys { leaves, sections }
}

fn parse_path(key: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in key.split('.') {
        if let Some(name) = part.strip_suffix("[]") {
            out.push(Seg::Field(name.to_string()));
            out.push(Seg::Element);
        } else {
            out.push(Seg::Field(part.to_string()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The documented keys.

struct Row {
    /// `docs/...:line`, for messages.
    at: String,
    keys: Vec<String>,
    default: String,
}

/// Sections of the sidecar's configuration documented on their own page: the row of
/// `docs/sidecar.md`'s table that points there, and the page's table heading.
const SECTION_PAGES: &[(&str, &str, &str)] = &[
    (
        "sync",
        "sync.md",
        "Configuration (`sync:` in the sidecar YAML)",
    ),
    (
        "identity",
        "identity.md",
        "Configuration (`identity:` in the sidecar YAML)",
    ),
    (
        "remote_calls",
        "remote-calls.md",
        "Configuration (`remote_calls:` in the sidecar YAML)",
    ),
];

/// The key table of `docs/sidecar.md` and the tables of the section pages it points to
/// ([`SECTION_PAGES`]), keys made full.
fn documented_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let sidecar = read("docs/sidecar.md");
    let mut pointers = BTreeSet::new();
    for (n, row) in table_after(&sidecar, "Configuration", "key") {
        let keys = keys_of(&row[0], n);
        if let Some((section, page, _)) = SECTION_PAGES
            .iter()
            .find(|(section, _, _)| keys == [format!("{section}.*")])
        {
            assert!(
                row[2].contains(page),
                "docs/sidecar.md:{n}: the `{section}.*` row points to {page}"
            );
            pointers.insert(*section);
            continue;
        }
        rows.push(Row {
            at: format!("docs/sidecar.md:{n}"),
            keys,
            default: row[1].clone(),
        });
    }
    for (section, page, heading) in SECTION_PAGES {
        assert!(
            pointers.contains(section),
            "docs/sidecar.md's table has a `{section}.*` row pointing to docs/{page}"
        );
        let text = read(&format!("docs/{page}"));
        for (n, row) in table_after(&text, heading, "key") {
            rows.push(Row {
                at: format!("docs/{page}:{n}"),
                keys: keys_of(&row[0], n)
                    .into_iter()
                    .map(|k| format!("{section}.{k}"))
                    .collect(),
                default: row[1].clone(),
            });
        }
    }
    rows
}

#[test]
fn every_key_the_sidecar_accepts_is_documented_and_every_documented_key_exists() {
    let code = code_keys();
    let rows = documented_rows();
    let mut documented = BTreeMap::new();
    for row in &rows {
        for k in &row.keys {
            if let Some(first) = documented.insert(k.clone(), row.at.clone()) {
                panic!("{k} is documented twice: {first} and {}", row.at);
            }
        }
    }
    let missing: Vec<_> = code
        .leaves
        .iter()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys the sidecar accepts that docs/sidecar.md and its section pages do not document: {missing:?}"
    );
    let unknown: Vec<_> = documented
        .iter()
        .filter(|(k, _)| !code.leaves.contains(*k) && !code.sections.contains(*k))
        .map(|(k, at)| format!("{k} ({at})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented keys the sidecar does not accept: {unknown:?}"
    );
    // And each is accepted by the loader in a file (the probe found it; this is the direct proof
    // that the spelling in the docs is the one the loader takes, for a few of each kind).
    for k in [
        "grpc.addr",
        "sync.polling.min_delay_seconds",
        "runtime.worker_threads",
    ] {
        assert!(documented.contains_key(k));
    }
    let err = load(&nest(&parse_path("grpc.nonexistent_key"), Value::from(1))).unwrap_err();
    assert!(err.contains("unknown field `nonexistent_key`"), "{err}");
}

/// The configuration each key is set in for the defaults check: the sections a key lives in that
/// need other keys to load (a list item's required fields, a section with required fields).
fn baseline_for(key: &str) -> Value {
    let yaml = if key.starts_with("grpc.tls.") {
        "grpc: {tls: {cert_file: /c.pem, key_file: /k.pem}}"
    } else if key.starts_with("sync.bundles[].") {
        "sync: {insecure_skip_verification: true, bundles: [{name: b, url: 'http://127.0.0.1/b'}]}"
    } else if key == "sync.keys[].public_key" {
        // A key needs one of its two sources: this one gets the other.
        "sync: {keys: [{kid: k, public_key_file: /k.pem}]}"
    } else if key.starts_with("sync.keys[].") {
        "sync: {keys: [{kid: k, public_key: PEM}]}"
    } else if key == "identity.jwks[].jwks_url" {
        // A key set needs one of its two sources: this one gets the other.
        "identity: {jwks: [{issuer: 'https://idp', discovery_url: 'http://127.0.0.1/d'}]}"
    } else if key.starts_with("identity.jwks[].") {
        "identity: {jwks: [{issuer: 'https://idp', jwks_url: 'http://127.0.0.1/k'}]}"
    } else if key == "remote_calls.introspection[].client_id"
        || key == "remote_calls.introspection[].client_secret_file"
    {
        // An endpoint needs one client authentication: these get the other.
        "remote_calls: {introspection: [{name: i, url: 'http://127.0.0.1/i', \
         client_cert_file: /c.pem, client_key_file: /k.pem}]}"
    } else if key.starts_with("remote_calls.introspection[].") {
        "remote_calls: {introspection: [{name: i, url: 'http://127.0.0.1/i', \
         client_id: c, client_secret_file: /s}]}"
    } else if key.starts_with("decision_logs.otlp.") {
        "decision_logs: {otlp: {exporter: otlp_grpc, endpoint: 'http://127.0.0.1:4317'}}"
    } else if key.starts_with("decision_logs.upload.spool.") {
        "decision_logs: {upload: {url: 'http://127.0.0.1/logs', spool: {dir: /spool}}}"
    } else if key.starts_with("decision_logs.upload.") {
        "decision_logs: {upload: {url: 'http://127.0.0.1/logs'}}"
    } else if key.starts_with("sync.status.") {
        "sync: {status: {url: 'http://127.0.0.1/s'}}"
    } else {
        "{}"
    };
    serde_yaml::from_str(yaml).expect("baseline YAML")
}

/// Sets (or with `None`, removes) `key` in `doc`, creating sections; list items are the first.
fn set(doc: &mut Value, path: &[Seg], value: Option<Value>) {
    let (head, rest) = path.split_first().expect("non-empty path");
    match head {
        Seg::Element => {
            let Value::Sequence(items) = doc else {
                panic!("not a list")
            };
            if items.is_empty() {
                items.push(Value::Mapping(Mapping::new()));
            }
            set(&mut items[0], rest, value);
        }
        Seg::Field(name) => {
            let Value::Mapping(m) = doc else {
                panic!("not a section")
            };
            let k = Value::from(name.as_str());
            if rest.is_empty() {
                match value {
                    Some(v) => {
                        m.insert(k, v);
                    }
                    None => {
                        m.remove(&k);
                    }
                }
                return;
            }
            let child = m.entry(k).or_insert_with(|| match rest[0] {
                Seg::Element => Value::Sequence(Vec::new()),
                Seg::Field(_) => Value::Mapping(Mapping::new()),
            });
            set(child, rest, value);
        }
    }
}

/// What a default cell claims: a literal value, nothing (`none...`), a required key, or prose the
/// code cannot check (`any of the key's type`, a reference to another key).
enum Claim {
    Literal(String),
    Nothing,
    Required,
    Prose,
}

fn claim(cell: &str, keys: &BTreeSet<String>) -> Claim {
    let c = cell.trim();
    if c == "required" {
        return Claim::Required;
    }
    if c == "none" || c.starts_with("none (") || c == "no sync" {
        return Claim::Nothing;
    }
    // One backticked literal, optionally followed by a parenthesised note: "`268435456` (256 MiB)".
    if let Some(rest) = c.strip_prefix('`') {
        if let Some(end) = rest.find('`') {
            let (lit, tail) = (&rest[..end], rest[end + 1..].trim());
            // A default given as another key (`polling.long_poll_timeout_seconds`) is prose.
            let is_key = keys
                .iter()
                .any(|k| k == lit || k.ends_with(&format!(".{lit}")));
            if (tail.is_empty() || (tail.starts_with('(') && tail.ends_with(')'))) && !is_key {
                return Claim::Literal(lit.to_string());
            }
        }
    }
    Claim::Prose
}

#[test]
fn documented_defaults_are_the_loaders() {
    let code = code_keys();
    let all: BTreeSet<String> = code.leaves.union(&code.sections).cloned().collect();
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in documented_rows() {
        for key in &row.keys {
            let path = parse_path(key);
            let base = baseline_for(key);
            let expected = format!("{:?}", load(&base).expect("the baseline loads"));
            let outcome = match claim(&row.default, &all) {
                Claim::Prose => continue,
                Claim::Literal(lit) => {
                    let v: Value = serde_yaml::from_str(&lit).expect("a YAML literal");
                    let mut doc = base.clone();
                    set(&mut doc, &path, Some(v));
                    match load(&doc) {
                        Ok(cfg) if format!("{cfg:?}") == expected => Ok(()),
                        Ok(_) => Err(format!(
                            "setting it to `{lit}` changes the configuration: not the default"
                        )),
                        Err(e) => Err(format!("`{lit}` is refused: {e}")),
                    }
                }
                Claim::Nothing => {
                    let mut without = base.clone();
                    set(&mut without, &path, None);
                    let parent = &path[..path.len() - 1];
                    if load(&without).is_err() && matches!(parent.last(), Some(Seg::Field(_))) {
                        // A key its section cannot do without (`grpc.tls.cert_file`): "none"
                        // means the whole section is absent by default.
                        let mut doc = Value::Mapping(Mapping::new());
                        set(&mut doc, parent, Some(Value::Null));
                        match load(&doc) {
                            Ok(cfg)
                                if format!("{cfg:?}")
                                    == format!("{:?}", SidecarConfig::default()) =>
                            {
                                Ok(())
                            }
                            _ => Err(format!(
                                "documented as none, but neither it nor {} can be left unset",
                                dotted(parent)
                            )),
                        }
                    } else {
                        let mut doc = base.clone();
                        set(&mut doc, &path, Some(Value::Null));
                        match load(&doc) {
                            Ok(cfg) if format!("{cfg:?}") == expected => Ok(()),
                            Ok(_) => {
                                Err("`null` changes the configuration: not unset by default".into())
                            }
                            Err(e) => Err(format!("`null` is refused: {e}")),
                        }
                    }
                }
                Claim::Required => {
                    let mut doc = base.clone();
                    set(&mut doc, &path, None);
                    match load(&doc) {
                        Err(_) => Ok(()),
                        Ok(_) => Err("documented as required, but loads without it".into()),
                    }
                }
            };
            checked += 1;
            if let Err(why) = outcome {
                failures.push(format!("{key} ({}): {why}", row.at));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "documented defaults that are not the code's:\n{}",
        failures.join("\n")
    );
    // Most rows give a default the code can confirm; a parser that silently skipped them would
    // pass, so the count is held up.
    assert!(checked >= 50, "only {checked} defaults were checked");
}

/// Dotted keys of the sidecar's sections named in a cell (`grpc.addr`, `sync.http.ca_file`).
fn named_keys(cell: &str) -> Vec<String> {
    const TOP: [&str; 8] = [
        "grpc.",
        "http.",
        "policy.",
        "decision_logs.",
        "fail_mode.",
        "log.",
        "sync.",
        "runtime.",
    ];
    code_spans(cell)
        .into_iter()
        .filter(|s| TOP.iter().any(|t| s.starts_with(t)))
        .map(|s| s.split([':', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn other_tables_name_only_keys_that_exist() {
    let code = code_keys();
    let exists = |k: &str| {
        let k = k.trim_end_matches(".*").trim_end_matches("[]");
        code.leaves.contains(k) || code.sections.contains(k)
    };
    let mut named = 0;
    let mut unknown = Vec::new();
    let sidecar = read("docs/sidecar.md");
    for (n, row) in table_after(&sidecar, "Run", "flag") {
        for k in code_spans(&row[1]) {
            named += 1;
            if !exists(&k) {
                unknown.push(format!("docs/sidecar.md:{n}: {k}"));
            }
        }
    }
    let opa = read("docs/opa-compatibility.md");
    for (n, row) in table_after(&opa, "Using an OPA configuration file", "OPA key") {
        for k in named_keys(&row[1]) {
            named += 1;
            if !exists(&k) {
                unknown.push(format!("docs/opa-compatibility.md:{n}: {k}"));
            }
        }
    }
    assert!(unknown.is_empty(), "keys that do not exist: {unknown:?}");
    assert!(named >= 30, "only {named} keys were found in those tables");
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let root = repo();
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (n, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a file has a directory").join(path)
            };
            if !dest.exists() {
                broken.push(format!("{name}:{n}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).contains(anchor) {
                    broken.push(format!("{name}:{n}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 80, "only {checked} links were checked");
}

#[test]
fn the_markdown_helpers_read_what_github_renders() {
    assert_eq!(
        slug("Configuration (`sync:` in the sidecar YAML)"),
        "configuration-sync-in-the-sidecar-yaml"
    );
    assert_eq!(
        slug("Git hosting: what is refused where"),
        "git-hosting-what-is-refused-where"
    );
    assert_eq!(slug("`make e2e`"), "make-e2e");
    let a = anchors("# A\n## Metrics\n```\n# not a heading\n```\n## Metrics\n");
    assert_eq!(
        a,
        ["a", "metrics", "metrics-1"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        cells("| `a`, `b` | x \\| y | z |"),
        ["`a`, `b`", "x | y", "z"]
    );
    assert_eq!(
        link_targets("see [x](a.md#b) and `[y](not-a-link)` and [z](c.md)"),
        [(1, "a.md#b".to_string()), (1, "c.md".to_string())]
    );
}
