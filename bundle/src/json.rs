//! Reading JSON data files straight into the policy engine's values.
//!
//! serde_json does the parsing (so the accepted syntax, number conversion, depth limit and error
//! messages are serde_json's, as everywhere else in Regent); only the building of `regorus::Value`s
//! is done here rather than by regorus's own visitor, for large data files:
//! - strings repeated across the document (object keys, enumerations such as roles) are allocated
//!   once and shared: a cache of recently seen strings, one per slot of a small table indexed by a
//!   fast hash, answers most of them without an allocation. A table that stays in the processor's
//!   cache matters more than remembering every string: a hash set of every string seen, tried
//!   first, spent an eighth of the parse looking up the unique ids of a large directory. The
//!   table's size is fixed, so crafted strings that collide can only cost sharing, never memory;
//! - an object's entries are gathered first and its map built in one pass: inserting them one by
//!   one searched the map from its root for every key, which for a map of a million entries (the
//!   users of a directory, say) was a quarter of the whole parse. Each nesting level keeps one
//!   scratch vector, so gathering a small object costs no allocation, and a large one hands its
//!   vector to the map builder, which sorts it in place rather than copying it.
//!
//! The values are equal to what `regorus::Value::from_json_str` builds from the same text.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::BuildHasher;

use regorus::Value;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Strings longer than this are not shared: long strings are rarely repeated.
const MAX_SHARED_LEN: usize = 64;
/// Objects with at most this many entries are built by insertion, which is as fast for a few keys
/// and needs no temporary vector; arrays up to this size are copied out of their level's scratch
/// vector.
const SMALL_OBJECT: usize = 16;
/// Slots of the string cache (a power of two). A string that keeps coming back (a key every
/// record has, a role) is evicted only when another string lands on its slot, and comes back at
/// its next use.
const SHARED_SLOTS: usize = 1 << 13;

type Rc = regorus::Rc<str>;

/// Deepest nesting accepted: serde_json's recursion limit, which refuses deeper input as it reads
/// (cheaply, at the first bracket past it). regorus refuses the same depth when loading.
pub(crate) const MAX_DEPTH: usize = 128;

/// Parses JSON text into a regorus value.
pub(crate) fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut builder = Builder {
        strings: vec![None; SHARED_SLOTS],
        object_levels: Vec::new(),
        array_levels: Vec::new(),
        depth: 0,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = (&mut builder).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct Builder {
    /// Recently seen strings, by hash (see [`SHARED_SLOTS`]).
    strings: Vec<Option<Rc>>,
    /// Scratch vectors for the entries of the objects being read, one per nesting level.
    object_levels: Vec<Vec<(Value, Value)>>,
    /// The same for the items of arrays.
    array_levels: Vec<Vec<Value>>,
    /// Nesting level of the object being read.
    depth: usize,
}

impl Builder {
    fn string(&mut self, s: &str) -> Value {
        if s.len() > MAX_SHARED_LEN {
            return Value::String(s.into());
        }
        let slot = (rustc_hash::FxBuildHasher.hash_one(s) as usize) & (SHARED_SLOTS - 1);
        let Some(cached) = self.strings.get_mut(slot) else {
            return Value::String(s.into());
        };
        if let Some(shared) = cached.as_ref().filter(|c| c.as_ref() == s) {
            return Value::String(shared.clone());
        }
        let rc: Rc = s.into();
        *cached = Some(rc.clone());
        Value::String(rc)
    }
}

impl<'de> DeserializeSeed<'de> for &mut Builder {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Builder {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // As regorus: a non-finite number has no place in a document (serde_json never yields one).
        if !v.is_finite() {
            return Err(E::custom(format!(
                "invalid non-finite number in input: {v}"
            )));
        }
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(self.string(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.depth;
        let mut items = take_level(&mut self.array_levels, depth);
        self.depth += 1;
        let gathered = (|| {
            while let Some(v) = seq.next_element_seed(&mut *self)? {
                items.push(v);
            }
            Ok(())
        })();
        self.depth = depth;
        gathered?;
        // The array keeps its vector for good: give it exactly the room it needs (a vector grown
        // push by push holds up to twice that, in every one of a million small arrays).
        let exact = if items.len() <= SMALL_OBJECT {
            let mut exact = Vec::with_capacity(items.len());
            exact.append(&mut items);
            put_back(&mut self.array_levels, depth, items);
            exact
        } else {
            items.shrink_to_fit();
            items
        };
        Ok(Value::from(exact))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.depth;
        let mut entries = take_level(&mut self.object_levels, depth);
        self.depth += 1;
        let gathered = (|| {
            while let Some(k) = map.next_key_seed(KeySeed(&mut *self))? {
                let v = map.next_value_seed(&mut *self)?;
                entries.push((k, v));
            }
            Ok(())
        })();
        self.depth = depth;
        gathered?;
        if entries.is_empty() {
            put_back(&mut self.object_levels, depth, entries);
            return Ok(Value::new_object());
        }
        // A repeated key: the last one wins, as in serde_json and regorus. Both ways keep it:
        // insertion replaces, and the bulk build sorts stably and keeps the last of equal keys.
        let map: BTreeMap<Value, Value> = if entries.len() <= SMALL_OBJECT {
            let mut m = BTreeMap::new();
            for (k, v) in entries.drain(..) {
                m.insert(k, v);
            }
            put_back(&mut self.object_levels, depth, entries);
            m
        } else {
            // Built in the vector's own memory; the level gets a fresh one next time.
            entries.into_iter().collect()
        };
        Ok(Value::from(map))
    }
}

/// Takes a level's scratch vector (empty, with the room earlier objects or arrays there needed).
fn take_level<T>(levels: &mut [Vec<T>], depth: usize) -> Vec<T> {
    levels
        .get_mut(depth)
        .map(std::mem::take)
        .unwrap_or_default()
}

/// Returns a level's (empty) scratch vector for the next object or array at that level.
fn put_back<T>(levels: &mut Vec<Vec<T>>, depth: usize, scratch: Vec<T>) {
    if depth >= levels.len() {
        levels.resize_with(depth + 1, Vec::new);
    }
    if let Some(slot) = levels.get_mut(depth) {
        *slot = scratch;
    }
}

/// Object keys: always strings in JSON.
struct KeySeed<'a>(&'a mut Builder);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(self.0.string(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(text: &str) {
        let ours = parse(text).map_err(|e| e.to_string());
        let theirs = Value::from_json_str(text).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
    }

    #[test]
    fn values_equal_regorus_own_parse() {
        for text in [
            r#"{"b":{"d":1,"c":[{"z":0,"y":{"q":1,"p":2}}]},"a":null,"e":{}}"#,
            r#"{"a":1,"a":{"y":1},"k":[true,false,null,"", "x", "x"]}"#,
            r#"[1e300,-1E-300,0.1,1.0,-0,2.50,123456789012345678901234567890,18446744073709551615,-9223372036854775808,1e+3]"#,
            r#""\ud83d\ude00 \u00e9 \n \"""#,
            r#"{"long":"0123456789012345678901234567890123456789012345678901234567890123456789"}"#,
            "  [ ]  ",
            "{\"a\":1,}",
            "[1,2",
            "\"\\ud800\"",
            "1e400",
            "{} x",
            "",
        ] {
            same(text);
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        same(&deep);
        // Objects past the small-object size, built in bulk: keys out of order, a key repeated
        // (the last wins), nested objects of both sizes inside, and an error half way through.
        let entry = |i: u32| {
            format!(
                r#""k{}":{{"i":{i},"o":{{"x":[{i}],"y":{{}}}}}}"#,
                (i * 7919) % 40
            )
        };
        let big = (0..60).map(entry).collect::<Vec<_>>().join(",");
        same(&format!("{{{big}}}"));
        same(&format!(r#"{{"a":{{{big}}},"b":[{{{big}}}],"c":1}}"#));
        same(&format!("{{{big},\"z\":}}"));
        // Arrays past that size too, holding arrays of both sizes, and one cut short.
        let long = (0..40)
            .map(|i| format!("[{i},[{i}]]"))
            .collect::<Vec<_>>()
            .join(",");
        same(&format!("[{long}, [{long}], {{\"a\": [{long}]}}]"));
        same(&format!("[{long}, [{long}]"));
    }

    #[test]
    fn repeated_strings_are_shared() {
        let v = parse(r#"[{"role":"admin"},{"role":"admin"}]"#).unwrap();
        let (Value::String(a), Value::String(b)) = (&v[0]["role"], &v[1]["role"]) else {
            panic!("{v}");
        };
        assert!(regorus::Rc::ptr_eq(a, b));
    }
}
