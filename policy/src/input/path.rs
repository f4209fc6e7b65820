//! `parsed_path` and `parsed_query`, plus the strict percent-decoding shared with form bodies.

use std::borrow::Cow;

use regorus::value::Object;
use regorus::Value;

use super::RequestParseError;

/// Splits the request path into segments.
///
/// Unlike OPA-Envoy, the path is split on `/` *before* each segment is percent-decoded, so an
/// encoded `%2F` stays inside its segment and cannot forge an extra one
/// (`/a%2Fb/c` -> `["a/b","c"]`). Leading slashes are all trimmed (`//admin/x` -> `["admin","x"]`),
/// `/` gives `[""]` and a trailing slash gives a trailing `""`, as in OPA-Envoy.
pub fn parse_path(path: &str) -> Result<Vec<Cow<'_, str>>, RequestParseError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.trim_start_matches('/')
        .split('/')
        .map(|seg| percent_decode(seg, false).map_err(|e| RequestParseError::Path(e.describe(seg))))
        .collect()
}

/// `parsed_path` as a Rego array.
pub(crate) fn parsed_path_value(segments: &[Cow<'_, str>]) -> Value {
    Value::from(
        segments
            .iter()
            .map(|s| Value::from(s.as_ref()))
            .collect::<Vec<_>>(),
    )
}

/// The raw query string of a path (after the first `?`), empty when there is none.
pub(crate) fn raw_query(path: &str) -> &str {
    path.split_once('?').map_or("", |(_, q)| q)
}

/// Parses `k=v&k=w` into `{k: [v, w]}` with Go's `url.ParseQuery` rules: `+` is a space, a bad
/// percent escape or a `;` separator is an error, empty pairs are skipped, a pair without `=`
/// has the value `""`. Values keep their order of appearance.
pub fn parse_query(query: &str) -> Result<Value, QueryError> {
    let mut out = Object::new();
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        if pair.contains(';') {
            return Err(QueryError::Semicolon);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true).map_err(|e| QueryError::Escape(e.describe(k)))?;
        let v = percent_decode(v, true).map_err(|e| QueryError::Escape(e.describe(v)))?;
        let key = Value::from(k.as_ref());
        match out.get_mut(&key) {
            Some(Value::Array(list)) => regorus::Rc::make_mut(list).push(Value::from(v.as_ref())),
            _ => {
                out.insert(key, Value::from(vec![Value::from(v.as_ref())]));
            }
        }
    }
    Ok(Value::from(out))
}

/// Why a query string or form body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Go (and so OPA) refuses `;` as a separator.
    #[error("invalid semicolon separator in query")]
    Semicolon,
    /// A `%` not followed by two hex digits, or an escape that does not decode to UTF-8.
    #[error("{0}")]
    Escape(String),
}

pub(crate) enum DecodeError {
    BadEscape,
    NotUtf8,
}

impl DecodeError {
    fn describe(&self, input: &str) -> String {
        match self {
            DecodeError::BadEscape => format!("invalid URL escape in {input:?}"),
            DecodeError::NotUtf8 => format!("escape sequence in {input:?} is not valid UTF-8"),
        }
    }
}

/// Strict percent-decoding: every `%` must start a two-digit hex escape. With `plus_is_space`
/// (query strings and forms) `+` decodes to a space; in paths it stays `+`. Borrows when there is
/// nothing to decode (most segments), so the common path allocates nothing here.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Result<Cow<'_, str>, DecodeError> {
    if !(s.contains('%') || (plus_is_space && s.contains('+'))) {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_digit(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_digit(*b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(DecodeError::BadEscape),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| DecodeError::NotUtf8)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
