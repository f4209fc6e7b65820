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

/// A JSON document as OPA's hasher sees it: numbers are their source text, objects are sorted bytewise.
#[derive(Debug, Clone, PartialEq)]
pub enum CanonicalValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// The number exactly as written in the source.
    Number(String),
    /// A string.
    String(String),
    /// An array, in order.
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
///
/// Byte-identical to `to_canonical_bytes(&parse(input)?)`, but written straight from the input without
/// building a tree: strings and numbers are copied (escaped where Go escapes) as they are read, and an
/// object's members are only reordered, in place, when they were not already in canonical order. For
/// multi-megabyte data files this avoids millions of small allocations (the tree costs several times
/// the input size in memory).
pub fn canonicalize_json(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut w = Streamer {
        p: Parser { s: input, i: 0 },
        out: Vec::with_capacity(input.len()),
        members: Vec::new(),
        // One check of the whole input (fast) spares one per string.
        valid_utf8: std::str::from_utf8(input).is_ok(),
    };
    w.p.ws();
    w.value(0)?;
    w.p.ws();
    if w.p.i != w.p.s.len() {
        return Err(w.p.err("trailing characters after the JSON value"));
    }
    Ok(w.out)
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
pub fn to_canonical_bytes(v: &CanonicalValue) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut Vec<u8>, v: &CanonicalValue) {
    match v {
        CanonicalValue::Null => out.extend_from_slice(b"null"),
        CanonicalValue::Bool(true) => out.extend_from_slice(b"true"),
        CanonicalValue::Bool(false) => out.extend_from_slice(b"false"),
        CanonicalValue::Number(n) => out.extend_from_slice(n.as_bytes()),
        CanonicalValue::String(s) => write_go_string(out, s),
        CanonicalValue::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        CanonicalValue::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_go_string(out, k);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A quoted string in Go's `encoding/json` escaping (see [`push_go_char`]).
fn write_go_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    s.chars().for_each(|c| push_go_char(out, c));
    out.push(b'"');
}

/// Appends one character in Go's `encoding/json` string escaping with `SetEscapeHTML(false)`
/// (Go >= 1.22, which writes `\b` and `\f`).
fn push_go_char(out: &mut Vec<u8>, c: char) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        c if (c as u32) < 0x20 => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = c as usize;
            out.extend_from_slice(b"\\u00");
            out.push(HEX[n >> 4]);
            out.push(HEX[n & 0xf]);
        }
        '\u{2028}' => out.extend_from_slice(b"\\u2028"),
        '\u{2029}' => out.extend_from_slice(b"\\u2029"),
        c => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Appends a run of raw string bytes (no quote, backslash or control byte in it) in canonical form.
/// Invalid UTF-8 becomes U+FFFD exactly as `String::from_utf8_lossy` does on the same run, which is
/// what the tree parser does. `valid_utf8`: the run is known to be valid UTF-8.
fn push_run(out: &mut Vec<u8>, run: &[u8], valid_utf8: bool) {
    if valid_utf8 && !run.contains(&0xE2) {
        out.extend_from_slice(run);
        return;
    }
    match std::str::from_utf8(run) {
        // U+2028 and U+2029 (E2 80 A8/A9) are the only characters such a run can hold that Go escapes.
        Ok(_) if !run.contains(&0xE2) => out.extend_from_slice(run),
        Ok(s) => s.chars().for_each(|c| push_go_char(out, c)),
        Err(_) => String::from_utf8_lossy(run)
            .chars()
            .for_each(|c| push_go_char(out, c)),
    }
}

/// Decodes a canonical string body (between the quotes) back to its bytes, for key comparison.
fn unescape_canonical(body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        // The writer only produces the escapes below, so `body[i + 1]` exists.
        let e = body.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'u' => {
                let hex = body.get(i..i + 4).unwrap_or(b"fffd");
                i += 4;
                let n = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(n.encode_utf8(&mut buf).as_bytes());
            }
            other => out.push(other),
        }
    }
}

/// Bytes that end a run of plain string content: quote, backslash and control characters.
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// One object member already written to the output: `start..key_end` is the quoted key,
/// `start..end` the whole `"key":value`.
#[derive(Clone, Copy)]
struct Member {
    start: usize,
    key_end: usize,
    end: usize,
}

/// The streaming canonicaliser behind [`canonicalize_json`]. It accepts and refuses exactly what
/// [`parse`] does (same checks, in the same order, so the same error offsets).
struct Streamer<'a> {
    p: Parser<'a>,
    out: Vec<u8>,
    /// Members of the objects being written, innermost last (one shared stack: no allocation per object).
    members: Vec<Member>,
    /// The whole input is valid UTF-8, so every string run in it is too (runs end at ASCII bytes).
    valid_utf8: bool,
}

impl Streamer<'_> {
    fn value(&mut self, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(self.p.err("nesting too deep"));
        }
        match self.p.peek() {
            None => Err(self.p.err("unexpected end of input")),
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'"') => self.string(),
            Some(b'[') => {
                self.echo(b'[');
                self.p.ws();
                if self.echo(b']') {
                    return Ok(());
                }
                loop {
                    self.p.ws();
                    self.value(depth + 1)?;
                    self.p.ws();
                    if self.echo(b']') {
                        return Ok(());
                    }
                    if !self.echo(b',') {
                        return Err(self.p.err("expected ',' or ']' in array"));
                    }
                }
            }
            Some(b'{') => self.object(depth),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.p.i;
                self.p.number_end()?;
                self.out.extend_from_slice(&self.p.s[start..self.p.i]);
                Ok(())
            }
            Some(_) => Err(self.p.err("unexpected character")),
        }
    }

    /// Copies the next input byte to the output if it is `b`; says whether it was.
    fn echo(&mut self, b: u8) -> bool {
        if self.p.peek() != Some(b) {
            return false;
        }
        self.p.i += 1;
        self.out.push(b);
        true
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), CanonicalError> {
        if self.p.s[self.p.i..].starts_with(word) {
            self.p.i += word.len();
            self.out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.p.err("invalid literal"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), CanonicalError> {
        self.echo(b'{');
        let body = self.out.len();
        let base = self.members.len();
        let mut in_order = true;
        self.p.ws();
        if self.echo(b'}') {
            return Ok(());
        }
        loop {
            self.p.ws();
            if self.p.peek() != Some(b'"') {
                return Err(self.p.err("expected a string key in object"));
            }
            let start = self.out.len();
            self.string()?;
            let key_end = self.out.len();
            self.p.ws();
            if !self.echo(b':') {
                return Err(self.p.err("expected ':' after object key"));
            }
            self.p.ws();
            self.value(depth + 1)?;
            let m = Member {
                start,
                key_end,
                end: self.out.len(),
            };
            if in_order && self.members.len() > base {
                let prev = self.members[self.members.len() - 1];
                in_order = self.key_cmp(prev, m) == std::cmp::Ordering::Less;
            }
            self.members.push(m);
            self.p.ws();
            if self.echo(b',') {
                continue;
            }
            if self.p.peek() != Some(b'}') {
                return Err(self.p.err("expected ',' or '}' in object"));
            }
            // Consumed but written after the members are in order.
            self.p.i += 1;
            break;
        }
        if !in_order {
            self.reorder(body, base);
        }
        self.members.truncate(base);
        self.out.push(b'}');
        Ok(())
    }

    /// Rewrites the members of the object whose body starts at `body` sorted by key, keeping the last
    /// of duplicate keys (Go's decoder lets the last one win).
    fn reorder(&mut self, body: usize, base: usize) {
        let mut order: Vec<Member> = self.members[base..].to_vec();
        // Stable: among equal keys the later member stays later, so `dedup` below keeps the last.
        order.sort_by(|a, b| self.key_cmp(*a, *b));
        let mut kept: Vec<Member> = Vec::with_capacity(order.len());
        for m in order {
            match kept.last_mut() {
                Some(last) if self.key_cmp(*last, m) == std::cmp::Ordering::Equal => *last = m,
                _ => kept.push(m),
            }
        }
        let mut sorted = Vec::with_capacity(self.out.len() - body);
        for (i, m) in kept.iter().enumerate() {
            if i > 0 {
                sorted.push(b',');
            }
            sorted.extend_from_slice(&self.out[m.start..m.end]);
        }
        self.out.truncate(body);
        self.out.extend_from_slice(&sorted);
    }

    /// Compares two written keys by their decoded bytes (the canonical order), not their escaped form.
    fn key_cmp(&self, a: Member, b: Member) -> std::cmp::Ordering {
        let ka = &self.out[a.start + 1..a.key_end - 1];
        let kb = &self.out[b.start + 1..b.key_end - 1];
        if !ka.contains(&b'\\') && !kb.contains(&b'\\') {
            return ka.cmp(kb);
        }
        let mut da = Vec::new();
        let mut db = Vec::new();
        unescape_canonical(ka, &mut da);
        unescape_canonical(kb, &mut db);
        da.cmp(&db)
    }

    /// Reads a string and writes it in canonical form, decoding escapes exactly as [`Parser::string`].
    fn string(&mut self) -> Result<(), CanonicalError> {
        self.p.i += 1; // opening quote
        self.out.push(b'"');
        loop {
            let run_start = self.p.i;
            let rest = &self.p.s[run_start..];
            let len = rest
                .iter()
                .position(|&b| STRING_STOP[b as usize])
                .unwrap_or(rest.len());
            self.p.i += len;
            push_run(
                &mut self.out,
                &self.p.s[run_start..self.p.i],
                self.valid_utf8,
            );
            match self.p.peek() {
                None => return Err(self.p.err("unterminated string")),
                Some(b'"') => {
                    self.p.i += 1;
                    self.out.push(b'"');
                    return Ok(());
                }
                Some(b'\\') => {
                    let c = self.p.escape()?;
                    push_go_char(&mut self.out, c);
                }
                Some(_) => return Err(self.p.err("control character in string")),
            }
        }
    }
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
        self.number_end()?;
        // Only ASCII bytes were consumed, so this cannot fail.
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(CanonicalValue::Number(text))
    }

    /// Moves past a number, checking its syntax.
    fn number_end(&mut self) -> Result<(), CanonicalError> {
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
        Ok(())
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

    /// Decodes the escape at a backslash. Lone surrogates become U+FFFD, as Go's decoder does.
    fn escape(&mut self) -> Result<char, CanonicalError> {
        self.i += 1; // backslash
        let Some(e) = self.peek() else {
            return Err(self.err("unterminated escape"));
        };
        self.i += 1;
        Ok(match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let c = if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
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
                c.unwrap_or('\u{FFFD}')
            }
            _ => return Err(self.err("invalid escape character")),
        })
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
                Some(b'\\') => out.push(self.escape()?),
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

    /// The tree the streaming writer replaces, kept as the reference it must match byte for byte.
    fn tree(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
        Ok(to_canonical_bytes(&parse(input)?))
    }

    #[test]
    fn streaming_matches_the_tree_on_tricky_inputs() {
        let cases: &[&[u8]] = &[
            br#"{"b":{"d":1,"c":[{"z":0,"y":{"q":1,"p":2}}]},"a":null}"#,
            // Duplicates, in and out of order, nested: the last one wins wherever it sits.
            br#"{"a":1,"b":2,"a":{"y":1,"x":2},"c":0,"b":[3]}"#,
            br#"{"k":{"b":1,"a":2},"k":{"d":3,"c":4,"d":5}}"#,
            // Escaped keys sort by their decoded bytes: "\n" (0x0a) < "A" < "\\" (0x5c) < "]",
            // though the escaped "\n" starts with a backslash.
            br#"{"]":1,"\\":2,"A":3,"\n":4,"\u0001":5,"\"":6,"\u2028":7,"\/":8,"\u00e9":9,"e\u0301":10}"#,
            br#"{"\u2029":1,"\u2028":2,"\u2028":3}"#,
            // Unicode escapes, surrogate pairs, lone surrogates, invalid UTF-8, raw U+2028.
            b"{\"s\":\"\\ud83d\\ude00 \\ud800x \\udc00 \\ud800\\u0041 \xff\xfe \xe2\x80\xa8 \xe2\x80\"}",
            b"[\"\xe2\x80\xa9\",\"\xc3\",\"<&>\\u001f\\b\\f\\t\\/\x7f\"]",
            // Numbers keep their spelling, whatever their size.
            br#"[1e400,-1E-400,0.1,1.0,-0,2.50,123456789012345678901234567890,1e+3,1E-7]"#,
            "\u{feff} {\n\t\"z\" : [ ] , \"y\" : { } ,\r\n \"x\" : \"\" } ".as_bytes(),
            b"true",
            b"\"only a string\"",
            // Errors: same refusal, same offset.
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"[1,2",
            b"{\"a\":01}",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"a\x01\"",
            b"{\"b\":1,\"a\":2} x",
            b"",
        ];
        for case in cases {
            assert_eq!(
                canonicalize_json(case),
                tree(case),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert_eq!(canonicalize_json(deep.as_bytes()), tree(deep.as_bytes()));
    }

    proptest::proptest! {
        #[test]
        fn streaming_matches_the_tree_on_any_bytes(bytes in proptest::collection::vec(
            proptest::sample::select(b"{}[],:\"\\ \nabuAZ019.-e+\xe2\x80\xa8\xff".to_vec()), 0..64)) {
            proptest::prop_assert_eq!(canonicalize_json(&bytes), tree(&bytes));
        }

        #[test]
        fn streaming_matches_the_tree_on_shuffled_objects(
            entries in proptest::collection::vec(("[a-c\\\\\n\u{2028}é\"]{0,3}", -5i64..5), 0..12),
            nested in proptest::collection::vec(("[ab\"]{0,2}", 0u8..3), 0..6),
        ) {
            let inner: Vec<String> = nested
                .iter()
                .map(|(k, v)| format!("{}: {v}", serde_json::Value::from(k.as_str())))
                .collect();
            let mut members: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} :{v}", serde_json::Value::from(k.as_str())))
                .collect();
            members.push(format!("\"obj\": {{ {} }}", inner.join(" , ")));
            let text = format!("{{{}}}", members.join(","));
            proptest::prop_assert_eq!(canonicalize_json(text.as_bytes()), tree(text.as_bytes()));
        }
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
