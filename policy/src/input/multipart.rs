//! A `multipart/form-data` parser for a fully buffered body (Envoy sends the whole, or the first
//! part of the, body in one CheckRequest, so a streaming parser buys nothing here).
//!
//! Parts with a JSON content type are parsed as JSON; other parts become strings; parts without a
//! `name` in their `form-data` Content-Disposition are skipped. The result is `{name: [value..]}`.

use memchr::memmem;
use regorus::value::Object;
use regorus::Value;

use super::body::push_value;

/// Parses `body` split by `boundary`. Errors describe the first structural problem found.
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Value, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut out = Object::new();
    // The first delimiter may follow a preamble; later ones are preceded by a line break.
    let mut pos = find_delimiter(body, 0, delim, true)
        .ok_or_else(|| "no opening boundary line".to_string())?;
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(Value::from(out));
        }
        let header_start = pos + line_end(rest).ok_or("boundary line is not terminated")?;
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let (consumed, headers) = match httparse::parse_headers(&body[header_start..], &mut storage)
        {
            Ok(httparse::Status::Complete((n, h))) => (n, h),
            Ok(httparse::Status::Partial) => return Err("part headers are not terminated".into()),
            Err(e) => return Err(format!("bad part header: {e}")),
        };
        let content_start = header_start + consumed;
        let (content_end, next) = find_delimiter(body, content_start, delim, false)
            .map(|next| (next - delim.len(), next))
            .ok_or("missing closing boundary")?;
        // Strip the line break that belongs to the delimiter.
        let mut content = &body[content_start..content_end];
        content = content.strip_suffix(b"\n").unwrap_or(content);
        content = content.strip_suffix(b"\r").unwrap_or(content);

        let mut name = None;
        let mut is_json = false;
        for h in headers.iter() {
            if h.name.eq_ignore_ascii_case("content-disposition") {
                let v =
                    std::str::from_utf8(h.value).map_err(|_| "non-UTF-8 Content-Disposition")?;
                name = form_name(v);
            } else if h.name.eq_ignore_ascii_case("content-type") {
                is_json = String::from_utf8_lossy(h.value)
                    .to_ascii_lowercase()
                    .contains("application/json");
            }
        }
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let text = std::str::from_utf8(content)
                .map_err(|_| format!("part {name:?} is not valid UTF-8"))?;
            let v = if is_json {
                Value::from_json_str(text)
                    .map_err(|e| format!("part {name:?} is not valid JSON: {e}"))?
            } else {
                Value::from(text)
            };
            push_value(&mut out, &name, v);
        }
        pos = next;
    }
}

/// Finds the next delimiter line at or after `from` and returns the index just past it. A match
/// counts only at the start of a line (or of the body, for the first one) and when followed by
/// `--`, optional whitespace and a line break, so a boundary-like prefix in content is skipped.
fn find_delimiter(body: &[u8], from: usize, delim: &[u8], first: bool) -> Option<usize> {
    let mut at = from;
    while at <= body.len() {
        let i = at + memmem::find(&body[at..], delim)?;
        let line_start = i == 0 || body[i - 1] == b'\n' || (first && i == from);
        let after = &body[i + delim.len()..];
        let well_formed = after.starts_with(b"--") || line_end(after).is_some();
        if line_start && well_formed {
            return Some(i + delim.len());
        }
        at = i + 1;
    }
    None
}

/// Length of optional linear whitespace plus a CRLF or LF at the start of `s`.
fn line_end(s: &[u8]) -> Option<usize> {
    let ws = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    let s2 = &s[ws..];
    if s2.starts_with(b"\r\n") {
        Some(ws + 2)
    } else if s2.starts_with(b"\n") {
        Some(ws + 1)
    } else {
        None
    }
}

/// The `name` parameter of a `form-data` Content-Disposition (quoted or token form).
fn form_name(disposition: &str) -> Option<String> {
    let mut parts = disposition.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("form-data") {
        return None;
    }
    for p in parts {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("name") {
            let v = v.trim();
            return Some(
                match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(q) => q.replace("\\\"", "\"").replace("\\\\", "\\"),
                    None => v.to_string(),
                },
            );
        }
    }
    None
}
