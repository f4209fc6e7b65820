//! `regent serve`'s documented configuration table against the code, so neither can drift: the
//! key table of `docs/server.md` must list exactly the keys `ServerConfig::from_yaml` accepts, and
//! every default it gives must be the one in the serialized configuration the loader makes from a
//! minimal file. The other tables of configuration keys are held to what reads them: the git
//! config keys of the hooks (`docs/pre-receive.sh`, `docs/post-receive.sh`) and the chart values
//! of `docs/deploying.md` (`charts/regent/values.yaml`).
//!
//! The keys the code accepts are found by asking the real loader: every section refuses unknown
//! keys, and serde's refusal lists the fields it expected, so a probe key at each level yields that
//! level's fields, and a probe below a field tells a section (or a list of sections) from a value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regent_bundle_server::server::ServerConfig;
use serde_yaml::{Mapping, Value};

const PROBE: &str = "__docs_probe__";

/// The smallest file `regent serve` accepts; the defaults are read from what it loads to.
const MINIMAL: &str = "git: {repo: /srv/policy.git}
bundles: [{name: b, dir: .}]
signing: {keys: [{kid: k, private_key_file: /k.pem}], active_kid: k}
";

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
// Markdown tables.

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
        .position(|(_, l)| l.starts_with('#') && l.trim_start_matches('#').trim() == heading)
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

/// The keys a key cell lists, "`a.b`, `a.c`" or "`a.b` / `.c`" (`.c` is a sibling of the key
/// before it); the cell must hold nothing else.
fn keys_of(cell: &str, line: usize) -> Vec<String> {
    let spans = code_spans(cell);
    let mut rest = cell;
    for (i, s) in spans.iter().enumerate() {
        let quoted = format!("`{s}`");
        rest = rest.trim_start();
        if i > 0 {
            rest = rest
                .strip_prefix(',')
                .or_else(|| rest.strip_prefix('/'))
                .unwrap_or_else(|| panic!("line {line}: keys are separated by \", \" or \" / \""))
                .trim_start();
        }
        rest = rest
            .strip_prefix(&quoted)
            .unwrap_or_else(|| panic!("line {line}: a key cell holds only backticked keys"));
    }
    assert!(
        rest.trim().is_empty(),
        "line {line}: a key cell holds only backticked keys"
    );
    let mut out: Vec<String> = Vec::new();
    for s in spans {
        if let Some(sibling) = s.strip_prefix('.') {
            let prev = out
                .last()
                .unwrap_or_else(|| panic!("line {line}: `{s}` follows no key"));
            let parent = prev.rsplit_once('.').map_or("", |(p, _)| p);
            out.push(format!("{parent}.{sibling}"));
        } else {
            out.push(s);
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

fn to_text(doc: &Value) -> String {
    serde_yaml::to_string(doc).expect("YAML serializes")
}

/// What `regent serve` does with a file: parse, then validate.
fn load(doc: &Value) -> Result<ServerConfig, String> {
    let cfg = ServerConfig::from_yaml(&to_text(doc)).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The fields of the section at `path`, if a section is there: a probe key is refused with the
/// list of fields serde expected (before any missing field is noticed).
fn fields_at(path: &[Seg]) -> Option<Vec<String>> {
    let mut probe = Mapping::new();
    probe.insert(Value::from(PROBE), Value::Null);
    let err = ServerConfig::from_yaml(&to_text(&nest(path, Value::Mapping(probe))))
        .err()?
        .to_string();
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
/// keys holding a section or a list of sections (`git`, `bundles`).
fn walk(path: &mut Vec<Seg>, leaves: &mut BTreeSet<String>, sections: &mut BTreeSet<String>) {
    let fields = fields_at(path).unwrap_or_else(|| panic!("{} is no section", dotted(path)));
    for f in fields {
        path.push(Seg::Field(f));
        if fields_at(path).is_some() {
            sections.insert(dotted(path));
            walk(path, leaves, sections);
        } else {
            path.push(Seg::Element);
            let list_of_sections = fields_at(path).is_some();
            path.pop();
            if list_of_sections {
                sections.insert(dotted(path));
                path.push(Seg::Element);
                walk(path, leaves, sections);
                path.pop();
            } else {
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
    for k in ["listen", "git.repo", "bundles[].dir", "signing.keys[].kid"] {
        assert!(leaves.contains(k), "the walk missed {k}: {leaves:?}");
    }
    for k in ["git", "bundles", "signing.keys", "tls"] {
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
    line: usize,
    keys: Vec<String>,
    default: String,
}

fn documented_rows() -> Vec<Row> {
    table_after(&read("docs/server.md"), "Configuration", "key")
        .into_iter()
        .map(|(line, row)| Row {
            line,
            keys: keys_of(&row[0], line),
            default: row[1].clone(),
        })
        .collect()
}

#[test]
fn every_key_regent_serve_accepts_is_documented_and_every_documented_key_exists() {
    let code = code_keys();
    let mut documented = BTreeMap::new();
    for row in documented_rows() {
        for k in row.keys {
            if let Some(first) = documented.insert(k.clone(), row.line) {
                panic!(
                    "{k} is documented twice: docs/server.md:{first} and :{}",
                    row.line
                );
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
        "keys regent serve accepts that docs/server.md does not document: {missing:?}"
    );
    let unknown: Vec<_> = documented
        .iter()
        .filter(|(k, _)| !code.leaves.contains(*k) && !code.sections.contains(*k))
        .map(|(k, line)| format!("{k} (docs/server.md:{line})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented keys regent serve does not accept: {unknown:?}"
    );
    let mut doc: Value = serde_yaml::from_str(MINIMAL).expect("minimal YAML");
    set(
        &mut doc,
        &parse_path("fleet.nonexistent_key"),
        Some(Value::from(1)),
    );
    let err = load(&doc).unwrap_err();
    assert!(err.contains("unknown field `nonexistent_key`"), "{err}");
}

/// The minimal file plus what the sections a key lives in need to load (an optional section with
/// required fields, a list item).
fn baseline_for(key: &str) -> Value {
    let mut doc: Value = serde_yaml::from_str(MINIMAL).expect("minimal YAML");
    let extra = if key.starts_with("tls.") {
        Some(("tls", "{cert_file: /c.pem, key_file: /k.pem}"))
    } else if key.starts_with("auth.tokens[].") {
        Some(("auth", "{tokens: [{name: t, sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}]}"))
    } else {
        None
    };
    if let Some((section, yaml)) = extra {
        let v: Value = serde_yaml::from_str(yaml).expect("section YAML");
        set(&mut doc, &parse_path(section), Some(v));
    }
    doc
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

/// The value at `path` in the serialized configuration; `None` when absent.
fn lookup<'v>(v: &'v serde_json::Value, path: &[Seg]) -> Option<&'v serde_json::Value> {
    match path.split_first() {
        None => Some(v),
        Some((Seg::Field(f), rest)) => lookup(v.get(f)?, rest),
        Some((Seg::Element, rest)) => lookup(v.get(0)?, rest),
    }
}

enum Claim {
    Literal(String),
    Nothing,
    Required,
    Prose,
}

fn claim(cell: &str) -> Claim {
    let c = cell.trim();
    if c == "required" {
        return Claim::Required;
    }
    if c == "none" || c == "unset" || c.starts_with("none (") {
        return Claim::Nothing;
    }
    // One backticked literal, optionally followed by a parenthesised note: "`268435456` (256 MiB)".
    if let Some(rest) = c.strip_prefix('`') {
        if let Some(end) = rest.find('`') {
            let (lit, tail) = (&rest[..end], rest[end + 1..].trim());
            if tail.is_empty() || (tail.starts_with('(') && tail.ends_with(')')) {
                return Claim::Literal(lit.to_string());
            }
        }
    }
    Claim::Prose
}

#[test]
fn documented_defaults_are_the_serialized_defaults() {
    let minimal: Value = serde_yaml::from_str(MINIMAL).expect("minimal YAML");
    let loaded = load(&minimal).expect("the minimal file loads");
    let defaults = serde_json::to_value(&loaded).expect("the config serializes");
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in documented_rows() {
        for key in &row.keys {
            let path = parse_path(key);
            // Defaults are what the minimal file loads to; a required key is shown by leaving it
            // out of a file that has everything else its section needs.
            let actual = lookup(&defaults, &path);
            let outcome = match claim(&row.default) {
                Claim::Prose => continue,
                Claim::Literal(lit) => {
                    let want: serde_json::Value =
                        serde_yaml::from_str(&lit).expect("a YAML literal");
                    if actual == Some(&want) {
                        Ok(())
                    } else {
                        Err(format!("documented `{lit}`, the code's is {actual:?}"))
                    }
                }
                Claim::Nothing => match actual {
                    None | Some(serde_json::Value::Null) => Ok(()),
                    Some(v) => Err(format!("documented as none, the code's is {v}")),
                },
                Claim::Required => {
                    let mut doc = baseline_for(key);
                    load(&doc).unwrap_or_else(|e| panic!("the baseline for {key}: {e}"));
                    set(&mut doc, &path, None);
                    match load(&doc) {
                        Err(_) => Ok(()),
                        Ok(_) => Err("documented as required, but loads without it".into()),
                    }
                }
            };
            checked += 1;
            if let Err(why) = outcome {
                failures.push(format!("{key} (docs/server.md:{}): {why}", row.line));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "documented defaults that are not the code's:\n{}",
        failures.join("\n")
    );
    // A parser that silently skipped rows would pass, so the count is held up.
    assert!(checked >= 30, "only {checked} defaults were checked");
}

#[test]
fn the_git_config_keys_table_matches_what_the_hooks_read() {
    // Keys each hook script reads with `git config [--bool] regent.X` (comments left out).
    let mut read_by: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for hook in ["pre-receive", "post-receive"] {
        let script = read(&format!("docs/{hook}.sh"));
        for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let mut rest = line;
            while let Some(i) = rest.find("git config ") {
                rest = &rest[i + "git config ".len()..];
                let arg = rest
                    .split_whitespace()
                    .find(|w| !w.starts_with("--"))
                    .unwrap_or_default();
                let key: String = arg
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                if key.starts_with("regent.") {
                    read_by.entry(key).or_default().insert(hook);
                }
            }
        }
    }
    assert!(read_by.len() >= 4, "the hooks read only {read_by:?}");
    let mut documented: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (line, row) in table_after(
        &read("docs/server.md"),
        "Git hosting: what is refused where",
        "git config key",
    ) {
        let used_by: BTreeSet<&str> = match row[2].as_str() {
            "both" => ["pre-receive", "post-receive"].into(),
            "pre-receive" => ["pre-receive"].into(),
            "post-receive" => ["post-receive"].into(),
            other => panic!("docs/server.md:{line}: \"used by\" is {other:?}"),
        };
        for k in keys_of(&row[0], line) {
            documented.insert(k, used_by.clone());
        }
    }
    assert_eq!(
        documented, read_by,
        "docs/server.md's git config keys (left) against the keys docs/*-receive.sh read (right)"
    );
}

#[test]
fn the_chart_values_table_names_only_values_the_chart_has() {
    let values: Value =
        serde_yaml::from_str(&read("charts/regent/values.yaml")).expect("values.yaml");
    let mut named = 0;
    let mut unknown = Vec::new();
    for (line, row) in table_after(&read("docs/deploying.md"), "Important values", "key") {
        for key in keys_of(&row[0], line) {
            named += 1;
            let mut v = &values;
            for part in key.split('.') {
                match v.get(part) {
                    Some(child) => v = child,
                    None => {
                        unknown.push(format!("{key} (docs/deploying.md:{line})"));
                        break;
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "values documented in docs/deploying.md that charts/regent/values.yaml lacks: {unknown:?}"
    );
    assert!(named >= 30, "only {named} values were found");
}

#[test]
fn key_cells_are_read_as_written() {
    assert_eq!(
        keys_of("`tls.cert_file`, `tls.key_file`", 1),
        ["tls.cert_file", "tls.key_file"]
    );
    assert_eq!(
        keys_of("`server.signing.secretKey` / `.kid`", 1),
        ["server.signing.secretKey", "server.signing.kid"]
    );
    assert_eq!(cells("| `a` | x \\| y |"), ["`a`", "x | y"]);
}
