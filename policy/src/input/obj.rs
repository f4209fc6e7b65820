//! A small builder over `regorus::Object` that skips proto3 default values and members the policy
//! cannot read ([`InputNeeds`]), so the walk in `attributes.rs` reads like the list of fields it renders.

use std::collections::HashMap;

use regorus::value::Object;
use regorus::Value;

use super::needs::InputNeeds;

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

pub(crate) struct Obj<'n> {
    members: Object,
    needs: &'n InputNeeds,
}

fn key_str(key: &Value) -> &str {
    match key {
        Value::String(s) => s,
        _ => "",
    }
}

impl<'n> Obj<'n> {
    pub(crate) fn new(needs: &'n InputNeeds) -> Self {
        Obj {
            members: Object::new(),
            needs,
        }
    }

    /// What the policy reads under `key`; `None` when it reads nothing there, so the caller need not
    /// build the member at all.
    pub(crate) fn field(&self, key: &Value) -> Option<&'n InputNeeds> {
        self.needs.field(key_str(key))
    }

    /// Adds a member the caller already found wanted with [`Obj::field`] (it needed the nested
    /// needs to build the value), so the needs are not looked up twice.
    pub(crate) fn insert(&mut self, key: &Value, v: Value) {
        self.members.insert(key.clone(), v);
    }

    /// [`Obj::insert`] for a key that is not a literal (map keys), under the same condition.
    pub(crate) fn insert_owned(&mut self, key: &str, v: Value) {
        self.members.insert(Value::from(key), v);
    }

    /// Adds a member if the policy can read it.
    pub(crate) fn put(&mut self, key: &Value, v: Value) {
        if self.field(key).is_some() {
            self.insert(key, v);
        }
    }

    /// Puts a member built whole, cut down to what the policy reads of it.
    pub(crate) fn put_pruned(&mut self, key: &Value, v: Value) {
        if let Some(needs) = self.field(key) {
            self.insert(key, super::needs::prune(v, needs));
        }
    }

    pub(crate) fn put_str(&mut self, key: &Value, s: &str) {
        // Checked before the string is copied into a value: most fields are not read.
        if !s.is_empty() && self.field(key).is_some() {
            self.insert(key, Value::from(s));
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
        if !b.is_empty() && self.field(key).is_some() {
            self.insert(key, super::attributes::base64(b));
        }
    }

    pub(crate) fn put_map(&mut self, key: &Value, m: &HashMap<String, String>) {
        if let Some(needs) = self.field(key).filter(|_| !m.is_empty()) {
            let mut o = Obj::new(needs);
            o.put_entries(m, |v, _| Value::from(v.as_str()));
            self.insert(key, o.into_value());
        }
    }

    /// Adds the entries of `m` the policy can read, each built by `build` from its value and what
    /// is read of it. A policy names a few keys (headers, labels, filter names): those are looked
    /// up rather than every entry scanned.
    pub(crate) fn put_entries<V>(
        &mut self,
        m: &HashMap<String, V>,
        mut build: impl FnMut(&V, &'n InputNeeds) -> Value,
    ) {
        let needs = self.needs;
        match needs {
            InputNeeds::All => {
                for (k, v) in m {
                    self.insert_owned(k, build(v, needs));
                }
            }
            InputNeeds::Fields(wanted) => {
                for (k, n) in wanted {
                    if let Some(v) = m.get(k) {
                        self.insert_owned(k, build(v, n));
                    }
                }
            }
        }
    }

    /// The object as built, in regorus's mutable map form. `Value::from` would first copy it into
    /// a compact sorted slice and free the map: worth it for data that stays, not for an input
    /// read a few times and dropped at the next request.
    pub(crate) fn into_value(self) -> Value {
        Value::Object(regorus::Rc::new(self.members))
    }
}
