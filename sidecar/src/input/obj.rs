//! A small builder over `regorus::Object` that skips proto3 default values, so the walk in
//! `attributes.rs` reads like the list of fields it renders.

use std::collections::HashMap;

use regorus::value::Object;
use regorus::Value;

/// A `&'static Value` for a literal object key, built once: cloning it is a reference-count
/// increment instead of an allocation per request.
macro_rules! key {
    ($s:literal) => {{
        static K: std::sync::LazyLock<regorus::Value> =
            std::sync::LazyLock::new(|| regorus::Value::from($s));
        &*K
    }};
}
pub(crate) use key;

pub(crate) struct Obj(Object);

impl Obj {
    pub(crate) fn new() -> Self {
        Obj(Object::new())
    }

    pub(crate) fn put(&mut self, key: &Value, v: Value) {
        self.0.insert(key.clone(), v);
    }

    pub(crate) fn put_owned(&mut self, key: &str, v: Value) {
        self.0.insert(Value::from(key), v);
    }

    pub(crate) fn put_str(&mut self, key: &Value, s: &str) {
        if !s.is_empty() {
            self.put(key, Value::from(s));
        }
    }

    pub(crate) fn put_int(&mut self, key: &Value, n: i64) {
        if n != 0 {
            self.put(key, Value::from(n));
        }
    }

    pub(crate) fn put_bool(&mut self, key: &Value, b: bool) {
        if b {
            self.put(key, Value::Bool(true));
        }
    }

    pub(crate) fn put_bytes(&mut self, key: &Value, b: &[u8]) {
        if !b.is_empty() {
            self.put(key, super::attributes::base64(b));
        }
    }

    pub(crate) fn put_map(&mut self, key: &Value, m: &HashMap<String, String>) {
        if !m.is_empty() {
            self.put(key, super::attributes::string_map(m));
        }
    }

    pub(crate) fn into_value(self) -> Value {
        Value::from(self.0)
    }
}
