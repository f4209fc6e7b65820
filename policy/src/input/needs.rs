//! Which parts of the input document a policy can read, so a Check builds only those.
//!
//! Rego reaches the input only through the `input` root, so a scan of every module for `input`
//! references bounds what evaluation can see. Each reference contributes its longest static prefix
//! (`input.attributes.request.http.headers["x-user"]` → that header only; `input.parsed_path[0]` →
//! all of `parsed_path`; `input[k]` or a bare `input` → everything). Anything the scan cannot read
//! with certainty (a lexer error, `with input ...`) means the whole document, so pruning never
//! changes a decision: a part left out is a part no rule can name.

use std::collections::BTreeMap;

use regorus::unstable::{Lexer, TokenKind};
use regorus::value::Object;
use regorus::{Source, Value};

/// A tree of the input paths a policy reads. `All` at a node means the whole subtree is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputNeeds {
    /// The whole subtree.
    All,
    /// Only these members (an empty map: nothing at all).
    Fields(BTreeMap<String, InputNeeds>),
}

static ALL: InputNeeds = InputNeeds::All;

impl Default for InputNeeds {
    /// The whole document: what a caller that knows nothing about the policy must build.
    fn default() -> Self {
        InputNeeds::All
    }
}

impl InputNeeds {
    /// Nothing is read (a policy that never mentions `input`).
    pub fn nothing() -> Self {
        InputNeeds::Fields(BTreeMap::new())
    }

    /// Whether the whole subtree is needed.
    pub fn is_all(&self) -> bool {
        matches!(self, InputNeeds::All)
    }

    /// What is needed under member `name`; `None` when no rule can read it.
    pub fn field(&self, name: &str) -> Option<&InputNeeds> {
        match self {
            InputNeeds::All => Some(&ALL),
            InputNeeds::Fields(m) => m.get(name),
        }
    }

    /// Whether anything under member `name` is needed.
    pub fn wants(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    /// Marks `path` (and everything below it) as needed.
    pub fn add(&mut self, path: &[String]) {
        let mut node = self;
        for seg in path {
            match node {
                InputNeeds::All => return,
                InputNeeds::Fields(m) => {
                    node = m.entry(seg.clone()).or_insert_with(InputNeeds::nothing);
                }
            }
        }
        *node = InputNeeds::All;
    }

    /// The needed paths for logs, as Rego references (`input.parsed_path`,
    /// `input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"]`), comma
    /// separated; `input` alone for the whole document, empty when nothing is read.
    pub fn describe(&self) -> String {
        fn walk(n: &InputNeeds, prefix: &mut Vec<String>, out: &mut Vec<String>) {
            match n {
                InputNeeds::All => {
                    // rule_ref spells the path the way OPA prints references; only the root differs.
                    let r = crate::path::rule_ref(prefix);
                    out.push(format!("input{}", &r["data".len()..]));
                }
                InputNeeds::Fields(m) => {
                    for (k, v) in m {
                        prefix.push(k.clone());
                        walk(v, prefix, out);
                        prefix.pop();
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out.join(", ")
    }

    /// The input paths read by these Rego modules, as (file name, source) pairs.
    pub fn of_modules<'a>(modules: impl IntoIterator<Item = (&'a str, &'a str)>) -> InputNeeds {
        let mut needs = InputNeeds::nothing();
        for (file, src) in modules {
            match input_refs(file, src) {
                Some(refs) => refs.iter().for_each(|r| needs.add(r)),
                None => return InputNeeds::All,
            }
            if needs.is_all() {
                break;
            }
        }
        needs
    }
}

/// `v` cut down to `needs`: members not named are dropped; values that are not objects are kept
/// whole. For parts built in one piece (the parsed query and body) before the needs are applied.
pub(crate) fn prune(v: Value, needs: &InputNeeds) -> Value {
    let InputNeeds::Fields(wanted) = needs else {
        return v;
    };
    let Value::Object(members) = &v else {
        return v;
    };
    let mut out = Object::new();
    for (k, n) in wanted {
        let key = Value::from(k.as_str());
        if let Some(child) = members.get(&key) {
            out.insert(key, prune(child.clone(), n));
        }
    }
    Value::from(out)
}

/// Every `input` reference in one module as its static path, or `None` when the module cannot be
/// scanned with certainty.
fn input_refs(file: &str, src: &str) -> Option<Vec<Vec<String>>> {
    let source = Source::from_contents(file.to_string(), src.to_string()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut tokens: Vec<(TokenKind, String)> = Vec::new();
    loop {
        let token = lexer.next_token().ok()?;
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push((token.0.clone(), token.1.text().to_string()));
    }
    let is_sym = |i: usize, s: &str| {
        tokens
            .get(i)
            .is_some_and(|(k, t)| *k == TokenKind::Symbol && t == s)
    };
    let mut refs = Vec::new();
    for i in 0..tokens.len() {
        let (kind, text) = &tokens[i];
        // `x.input` is a member named input, not the root document.
        if *kind != TokenKind::Ident || text != "input" || (i > 0 && is_sym(i - 1, ".")) {
            continue;
        }
        // `with input... as` replaces part of the document; keep it whole rather than reason about it.
        if i > 0 && matches!(&tokens[i - 1], (TokenKind::Ident, t) if t == "with") {
            return None;
        }
        let mut path = Vec::new();
        let mut j = i + 1;
        loop {
            if is_sym(j, ".") {
                match tokens.get(j + 1) {
                    Some((TokenKind::Ident, name)) => {
                        path.push(name.clone());
                        j += 2;
                        continue;
                    }
                    _ => break,
                }
            }
            if is_sym(j, "[") && is_sym(j + 2, "]") {
                match tokens.get(j + 1).and_then(|(k, t)| string_literal(k, t)) {
                    Some(name) => {
                        path.push(name);
                        j += 3;
                        continue;
                    }
                    None => break,
                }
            }
            break;
        }
        refs.push(path);
    }
    Some(refs)
}

/// The value of a string token. regorus's spans leave the delimiters out: a raw string is its text,
/// a quoted one still has its escapes.
fn string_literal(kind: &TokenKind, text: &str) -> Option<String> {
    match kind {
        TokenKind::RawString => Some(text.to_string()),
        TokenKind::String => serde_json::from_str(&format!("\"{text}\"")).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(src: &str) -> InputNeeds {
        InputNeeds::of_modules([("p.rego", src)])
    }

    fn paths(n: &InputNeeds) -> Vec<String> {
        fn walk(n: &InputNeeds, prefix: String, out: &mut Vec<String>) {
            match n {
                InputNeeds::All => out.push(prefix),
                InputNeeds::Fields(m) => {
                    for (k, v) in m {
                        walk(v, format!("{prefix}/{k}"), out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(n, String::new(), &mut out);
        out
    }

    #[test]
    fn static_prefixes_are_collected_and_merged() {
        let n = needs(
            r#"package p
import rego.v1
m := input.attributes.request.http.method
h := input.attributes.request.http.headers["x-user"]
r := input.attributes.request.http.headers[`x-raw`]
s := input.parsed_path[0]
t := input.attributes.request.http.headers[name] if some name in {"a"}
u := data.input.x
# input.version in a comment is not a reference
v := "input.parsed_query"
"#,
        );
        assert_eq!(
            paths(&n),
            vec![
                "/attributes/request/http/headers",
                "/attributes/request/http/method",
                "/parsed_path",
            ]
        );
        assert!(n.wants("attributes") && !n.wants("version") && !n.wants("parsed_query"));
    }

    #[test]
    fn string_keys_are_read_as_their_values() {
        let n = needs("package p\na := input[\"attri\\u0062utes\"][`x\\y`]\n");
        assert_eq!(paths(&n), vec!["/attributes/x\\y"]);
    }

    #[test]
    fn dynamic_or_bare_input_means_everything() {
        for src in [
            "package p\nx := input\n",
            "package p\nx := input[k] if k := \"a\"\n",
            "package p\nimport input as i\nx := i.a\n",
            "package p\nx := object.get(input, [\"a\"], 1)\n",
            "package p\nx := y with input.a as 1 if y := 1\n",
        ] {
            assert!(needs(src).is_all(), "{src}");
        }
    }

    #[test]
    fn described_for_the_activation_log() {
        assert_eq!(InputNeeds::All.describe(), "input");
        assert_eq!(InputNeeds::nothing().describe(), "");
        let n = needs("package p\na := input.parsed_path\nb := input.attributes.request.http.headers[\"x-a\"]\n");
        assert_eq!(
            n.describe(),
            r#"input.attributes.request.http.headers["x-a"], input.parsed_path"#
        );
    }

    #[test]
    fn imports_of_input_paths_keep_their_subtree() {
        let n = needs("package p\nimport input.attributes.request.http\nm := http.method\n");
        assert_eq!(paths(&n), vec!["/attributes/request/http"]);
    }

    #[test]
    fn a_policy_without_input_needs_nothing_and_bad_source_needs_everything() {
        assert_eq!(needs("package p\nx := 1\n"), InputNeeds::nothing());
        assert!(needs("package p\nx := \"unterminated\n").is_all());
    }

    #[test]
    fn a_whole_subtree_absorbs_deeper_paths() {
        let n = needs("package p\na := input.attributes.source.principal\nb := input.attributes\n");
        assert_eq!(paths(&n), vec!["/attributes"]);
        assert!(n.field("attributes").is_some_and(InputNeeds::is_all));
    }
}
