//! A small builder over `regorus::Object` that skips proto3 default values, so the walk in
//! `attributes.rs` reads like the list of fields it renders.

use std::collections::HashMap;

use regorus::value::Object;
use regorus::Value;

pub(crate) struct Obj(Object);

impl Obj {
    pub(crate) fn new() -> Self {
        Obj(Object::new())
    }

    pub(crate) fn put(&mut self, key: &'static str, v: Value) {
        self.0.insert(Value::from(key), v);
    }

    pub(crate) fn put_owned(&mut self, key: &str, v: Value) {
        self.0.insert(Value::from(key), v);
    }

    pub(crate) fn put_str(&mut self, key: &'static str, s: &str) {
        if !s.is_empty() {
            self.put(key, Value::from(s));
        }
    }

    pub(crate) fn put_int(&mut self, key: &'static str, n: i64) {
        if n != 0 {
            self.put(key, Value::from(n));
        }
    }

    pub(crate) fn put_bool(&mut self, key: &'static str, b: bool) {
        if b {
            self.put(key, Value::Bool(true));
        }
    }

    pub(crate) fn put_bytes(&mut self, key: &'static str, b: &[u8]) {
        if !b.is_empty() {
            self.put(key, super::attributes::base64(b));
        }
    }

    pub(crate) fn put_map(&mut self, key: &'static str, m: &HashMap<String, String>) {
        if !m.is_empty() {
            self.put(key, super::attributes::string_map(m));
        }
    }

    pub(crate) fn into_value(self) -> Value {
        Value::from(self.0)
    }
}
