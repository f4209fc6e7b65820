//! OPA's canonical JSON, used to hash structured bundle files (`.manifest`, `data.json`, `data.yaml`).
//!
//! OPA parses a structured file keeping every number as written (`json.Number`), then re-encodes it with
//! object keys sorted bytewise, no whitespace, and Go's `encoding/json` string escaping (HTML escaping
//! off). A bundle built or signed by another tool only verifies here if we reproduce that byte for byte.
//!
//! serde_json can only keep number spellings with its `arbitrary_precision` feature, which would switch
//! every JSON number in the whole workspace (the sidecar's hot path included) to string-backed numbers.
//! So this module has its own small parser that keeps number literals untouched.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A JSON document as OPA's hasher sees it: numbers are their source text, objects are sorted bytewise.
#[derive(Debug, Clone, PartialEq)]
pub enum CanonicalValue {
    Null,
    Bool(bool),
    /// The number exactly as written in the source.
    Number(String),
    String(String),
    Array(Vec<CanonicalValue>),
    /// Bytewise key order (Rust `String` ordering is bytewise, like Go's). Duplicate keys: last one wins, as in Go.
    Object(BTreeMap<String, CanonicalValue>),
}

/// A JSON syntax error with its byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {message}")]
pub struct CanonicalError {
    /// Byte offset into the input.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

/// Nesting deeper than this is refused, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 512;

/// Parses JSON text (a UTF-8 BOM is skipped, as OPA does).
pub fn parse(input: &[u8]) -> Result<CanonicalValue, CanonicalError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(v)
}

/// Canonical bytes of JSON text: what OPA hashes for `.manifest` and `data.json`.
pub fn canonicalize_json(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    Ok(to_canonical_string(&parse(input)?).into_bytes())
}

/// Converts a serde_json value (e.g. one read from YAML) to the canonical model; numbers are spelled as
/// serde_json prints them.
pub fn from_serde(v: &serde_json::Value) -> CanonicalValue {
    match v {
        serde_json::Value::Null => CanonicalValue::Null,
        serde_json::Value::Bool(b) => CanonicalValue::Bool(*b),
        serde_json::Value::Number(n) => CanonicalValue::Number(n.to_string()),
        serde_json::Value::String(s) => CanonicalValue::String(s.clone()),
        serde_json::Value::Array(a) => CanonicalValue::Array(a.iter().map(from_serde).collect()),
        serde_json::Value::Object(o) => {
            CanonicalValue::Object(o.iter().map(|(k, v)| (k.clone(), from_serde(v))).collect())
        }
    }
}

/// Serialises in OPA's canonical form.
pub fn to_canonical_string(v: &CanonicalValue) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &CanonicalValue) {
    match v {
        CanonicalValue::Null => out.push_str("null"),
        CanonicalValue::Bool(true) => out.push_str("true"),
        CanonicalValue::Bool(false) => out.push_str("false"),
        CanonicalValue::Number(n) => out.push_str(n),
        CanonicalValue::String(s) => write_go_string(out, s),
        CanonicalValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        CanonicalValue::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Go `encoding/json` string encoding with `SetEscapeHTML(false)` (Go >= 1.22, which writes `\b` and `\f`).
pub fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> CanonicalError {
        CanonicalError {
            offset: self.i,
            message: message.to_string(),
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn literal(
        &mut self,
        word: &[u8],
        v: CanonicalValue,
    ) -> Result<CanonicalValue, CanonicalError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<CanonicalValue, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'n') => self.literal(b"null", CanonicalValue::Null),
            Some(b't') => self.literal(b"true", CanonicalValue::Bool(true)),
            Some(b'f') => self.literal(b"false", CanonicalValue::Bool(false)),
            Some(b'"') => Ok(CanonicalValue::String(self.string()?)),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(CanonicalValue::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(CanonicalValue::Array(items));
                        }
                        _ => return Err(self.err("expected ',' or ']' in array")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut map = BTreeMap::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(CanonicalValue::Object(map));
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a string key in object"));
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("expected ':' after object key"));
                    }
                    self.i += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(CanonicalValue::Object(map));
                        }
                        _ => return Err(self.err("expected ',' or '}' in object")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<CanonicalValue, CanonicalError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digits in exponent"));
            }
        }
        // Only ASCII bytes were consumed, so this cannot fail.
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(CanonicalValue::Number(text))
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return Err(self.err("truncated \\u escape"));
        };
        let text = std::str::from_utf8(h).map_err(|_| self.err("invalid \\u escape"))?;
        let v = u32::from_str_radix(text, 16).map_err(|_| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    /// Parses a string. Invalid UTF-8 and lone surrogates become U+FFFD, as Go's decoder does.
    fn string(&mut self) -> Result<String, CanonicalError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let run_start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&self.s[run_start..self.i]));
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                } else {
                                    self.i = save;
                                    None
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(c.unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("invalid escape character")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonicalize_json(s.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_bytewise_and_keeps_number_spelling() {
        assert_eq!(
            canon(r#" { "b": 1.0, "a": [1e3, -0, 2.50], "B": null, "é": true } "#),
            r#"{"B":null,"a":[1e3,-0,2.50],"b":1.0,"é":true}"#
        );
    }

    #[test]
    fn go_string_escaping() {
        assert_eq!(
            canon(r#""<&>\u0001\b\f\n\r\t\/\u2028""#),
            "\"<&>\\u0001\\b\\f\\n\\r\\t/\\u2028\""
        );
        assert_eq!(canon(r#""\ud83d\ude00 \ud800x""#), "\"😀 \u{FFFD}x\"");
        assert_eq!(
            String::from_utf8(canonicalize_json(b"\"a\xffb\"").unwrap()).unwrap(),
            "\"a\u{FFFD}b\""
        );
    }

    #[test]
    fn duplicate_keys_last_wins_and_bom_is_skipped() {
        assert_eq!(canon("\u{feff}{\"a\":1,\"a\":2}"), r#"{"a":2}"#);
    }

    #[test]
    fn syntax_errors_have_offsets() {
        for bad in [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "1e",
            "\"x",
            "{\"a\" 1}",
            "nul",
            "1 2",
            "\"\u{1}\"",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} should be refused");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).unwrap_err().message.contains("deep"));
    }
}
