//! Builtins regorus knows by name but cannot run as OPA does, found before a policy is loaded.
//!
//! regorus accepts calls to some builtins it only stubs (0.14.1 made `http.send` undefined every
//! time): a policy relying on one would silently take its `default`. Rather than activate such a
//! policy, loading fails with the builtin and the place it is called. None is listed today:
//! `http.send` was, until Regent answered it (`builtins/remote.rs`). The scan is
//! lexical (regorus's own lexer, so comments and string contents are never matched): the name's
//! segments joined by `.` and followed by `(`, not preceded by `.` (`data.http.send(x)` is a
//! user function) and not in a module that binds the first segment with an `import` (`import
//! data.lib.http` makes `http.send` a user function too). A `with http.send as ...` in a test
//! is not a call and is not reported.

use regorus::unstable::{Lexer, TokenKind};
use regorus::Source;

/// A builtin Regent refuses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedBuiltin {
    /// Dotted name, e.g. `http.send`.
    pub name: &'static str,
    /// Why, for the load error: completes "`name` is not supported by Regent yet (...)".
    pub reason: &'static str,
}

/// The builtins a policy may not call. Add one here and every loader refuses it.
pub const UNSUPPORTED_BUILTINS: &[UnsupportedBuiltin] = &[];

/// Why `builtin` is refused (empty for a name not in [`UNSUPPORTED_BUILTINS`]).
pub fn reason(builtin: &str) -> &'static str {
    UNSUPPORTED_BUILTINS
        .iter()
        .find(|b| b.name == builtin)
        .map_or("", |b| b.reason)
}

/// One call of an unsupported builtin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedCall {
    /// The module's file name, as given to [`calls_in_module`].
    pub file: String,
    /// 1-based line of the call.
    pub line: u32,
    /// The builtin's name.
    pub builtin: &'static str,
}

/// Every call of an unsupported builtin in one module, in source order. A module the lexer
/// cannot read yields nothing here: regorus reports it when the module is added.
pub fn calls_in_module(file: &str, src: &str) -> Vec<UnsupportedCall> {
    calls_of(file, src, UNSUPPORTED_BUILTINS)
}

/// Every call of a builtin in `list` in one module, in source order.
fn calls_of(file: &str, src: &str, list: &[UnsupportedBuiltin]) -> Vec<UnsupportedCall> {
    let Ok(source) = Source::from_contents(file.to_string(), src.to_string()) else {
        return Vec::new();
    };
    let mut lexer = Lexer::new(&source);
    // (kind, text, line)
    let mut tokens: Vec<(TokenKind, String, u32)> = Vec::new();
    loop {
        let Ok(token) = lexer.next_token() else {
            return Vec::new();
        };
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push((token.0.clone(), token.1.text().to_string(), token.1.line));
    }
    let imported = import_bindings(&tokens);

    let mut calls = Vec::new();
    for builtin in list {
        let segments: Vec<&str> = builtin.name.split('.').collect();
        if imported.iter().any(|b| b == segments[0]) {
            continue;
        }
        for i in 0..tokens.len() {
            if i > 0 && is_symbol(&tokens[i - 1], ".") {
                continue;
            }
            if matches_call(&tokens[i..], &segments) {
                calls.push(UnsupportedCall {
                    file: file.to_string(),
                    line: tokens[i].2,
                    builtin: builtin.name,
                });
            }
        }
    }
    calls.sort_by_key(|c| c.line);
    calls
}

/// The first call of an unsupported builtin in any of these `(file, source)` modules.
pub fn first_call<'a>(
    modules: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<UnsupportedCall> {
    modules
        .into_iter()
        .find_map(|(file, src)| calls_in_module(file, src).into_iter().next())
}

fn is_symbol(token: &(TokenKind, String, u32), s: &str) -> bool {
    token.0 == TokenKind::Symbol && token.1 == s
}

fn is_ident(token: &(TokenKind, String, u32), s: &str) -> bool {
    token.0 == TokenKind::Ident && token.1 == s
}

/// `a . b ... (` at the start of `tokens` for segments `[a, b, ...]`.
fn matches_call(tokens: &[(TokenKind, String, u32)], segments: &[&str]) -> bool {
    let mut j = 0;
    for (n, seg) in segments.iter().enumerate() {
        if n > 0 {
            if !tokens.get(j).is_some_and(|t| is_symbol(t, ".")) {
                return false;
            }
            j += 1;
        }
        if !tokens.get(j).is_some_and(|t| is_ident(t, seg)) {
            return false;
        }
        j += 1;
    }
    tokens.get(j).is_some_and(|t| is_symbol(t, "("))
}

/// The names `import` statements bind: the alias after `as`, else the last segment. An import
/// statement is the rest of its line.
fn import_bindings(tokens: &[(TokenKind, String, u32)]) -> Vec<String> {
    let mut names = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !is_ident(t, "import") {
            continue;
        }
        let line: Vec<&(TokenKind, String, u32)> =
            tokens[i + 1..].iter().take_while(|u| u.2 == t.2).collect();
        let bound = match line.iter().position(|u| is_ident(u, "as")) {
            Some(p) => line.get(p + 1).map(|u| u.1.clone()),
            None => line
                .iter()
                .rev()
                .find(|u| u.0 == TokenKind::Ident)
                .map(|u| u.1.clone()),
        };
        names.extend(bound);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    // The scanner, tried on the builtin it was written for.
    const LIST: &[UnsupportedBuiltin] = &[UnsupportedBuiltin {
        name: "http.send",
        reason: "it would always be undefined",
    }];

    fn lines(src: &str) -> Vec<u32> {
        calls_of("p.rego", src, LIST)
            .iter()
            .map(|c| c.line)
            .collect()
    }

    #[test]
    fn calls_are_found_with_their_lines() {
        let src = r#"package p

import rego.v1

r := http.send({"method": "GET", "url": "http://x"})

s if {
	resp := http . send ( {"method": "GET", "url": input.url} )
	resp.status_code == 200
}
"#;
        assert_eq!(lines(src), vec![5, 8]);
        let c = &calls_of("authz/policy.rego", src, LIST)[0];
        assert_eq!(c.file, "authz/policy.rego");
        assert_eq!(c.builtin, "http.send");
    }

    #[test]
    fn comments_strings_refs_and_mocks_are_not_calls() {
        let src = r#"package p

import rego.v1

# r := http.send({})
a := "http.send(x)"
b := `http.send(y)`
c := data.http.send(1)
d := http.send
test_x if {
	true with http.send as mock
}
mock(_) := {}
"#;
        assert!(lines(src).is_empty(), "{:?}", lines(src));
    }

    #[test]
    fn an_import_named_http_shadows_the_builtin() {
        assert!(lines("package p\nimport data.lib.http\nx := http.send(1)\n").is_empty());
        assert!(lines("package p\nimport data.lib.client as http\nx := http.send(1)\n").is_empty());
        assert_eq!(
            lines("package p\nimport data.lib.http as client\nx := http.send(1)\n"),
            vec![3]
        );
    }

    #[test]
    fn nothing_is_refused_today() {
        assert!(calls_in_module("p.rego", "package p\ny := http.send({})\n").is_empty());
        assert!(first_call([("b.rego", "package b\n\ny := http.send({})\n")]).is_none());
        assert_eq!(reason("http.send"), "");
    }
}
