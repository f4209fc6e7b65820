//! Request headers from both places Envoy may put them: the `headers` map, and the `header_map`
//! list used when Envoy's `encode_raw_headers` is on (OPA-Envoy reads only the former, so its body
//! parsing silently stops working with raw headers).

use std::borrow::Cow;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use regorus::value::Object;
use regorus::Value;

use super::needs::InputNeeds;

/// A read-only view of one request's headers.
pub(crate) struct Headers<'a> {
    http: &'a HttpRequest,
}

impl<'a> Headers<'a> {
    pub(crate) fn new(http: &'a HttpRequest) -> Self {
        Headers { http }
    }

    fn raw_entries(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        self.http
            .header_map
            .iter()
            .flat_map(|m| m.headers.iter())
            .map(|hv| {
                // raw_value carries the bytes when encode_raw_headers is on; `value` otherwise.
                let v = if hv.raw_value.is_empty() {
                    Cow::Borrowed(hv.value.as_str())
                } else {
                    String::from_utf8_lossy(&hv.raw_value)
                };
                (hv.key.as_str(), v)
            })
    }

    pub(crate) fn has_header_map(&self) -> bool {
        self.http
            .header_map
            .as_ref()
            .is_some_and(|m| !m.headers.is_empty())
    }

    /// The value of header `name` (lower-case). The `headers` map wins; otherwise every
    /// `header_map` entry with that key, joined with `,` as Envoy joins repeated headers in the map.
    pub(crate) fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        if let Some(v) = self.http.headers.get(name) {
            return Some(Cow::Borrowed(v.as_str()));
        }
        let mut found: Option<Cow<'a, str>> = None;
        for (k, v) in self.raw_entries() {
            if k.eq_ignore_ascii_case(name) {
                found = Some(match found {
                    None => v,
                    Some(prev) => Cow::Owned(format!("{prev},{v}")),
                });
            }
        }
        found
    }

    /// The merged `headers` object for `attributes.request.http.headers`: the `headers` map plus
    /// every `header_map` key (lower-cased) it does not already hold, repeated keys joined with `,`.
    /// Only the headers in `needs` are included.
    pub(crate) fn merged_value(&self, needs: &InputNeeds) -> Value {
        let mut o = Object::new();
        for (k, v) in &self.http.headers {
            if needs.wants(k) {
                o.insert(Value::from(k.as_str()), Value::from(v.as_str()));
            }
        }
        for (k, v) in self.raw_entries() {
            let lower = k.to_ascii_lowercase();
            if self.http.headers.contains_key(&lower) || !needs.wants(&lower) {
                continue;
            }
            let key = Value::from(lower);
            let joined = match o.get(&key) {
                Some(Value::String(prev)) => format!("{prev},{v}"),
                _ => v.into_owned(),
            };
            o.insert(key, Value::from(joined));
        }
        Value::from(o)
    }
}
