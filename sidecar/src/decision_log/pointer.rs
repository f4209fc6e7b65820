//! JSON pointers (RFC 6901) applied to decision log events: on the rendered JSON tree, for the
//! policy's `system.log` rules, and on the policy's own values, so the static
//! `decision_logs.mask` needs no tree at all.

use serde_json::{Map, Value as Json};

/// The unescaped segments of a pointer (`/a~1b/c` → `["a/b", "c"]`); `None` unless it starts
/// with `/`.
pub(super) fn segments(pointer: &str) -> Option<Vec<String>> {
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// Sets the value at a JSON pointer, creating missing parent objects; returns whether it was set
/// (not when a parent is a scalar, or an array index is out of range).
pub(super) fn upsert_pointer(doc: &mut Json, pointer: &str, value: Json) -> bool {
    let Some(parts) = segments(pointer) else {
        return false;
    };
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut at = doc;
    for part in parents {
        at = match at {
            Json::Object(m) => m
                .entry(part.clone())
                .or_insert_with(|| Json::Object(Map::new())),
            Json::Array(a) => match part.parse::<usize>() {
                Ok(i) if i < a.len() => &mut a[i],
                _ => return false,
            },
            _ => return false,
        };
    }
    match at {
        Json::Object(m) => {
            m.insert(last.clone(), value);
            true
        }
        Json::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a[i] = value;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Removes the value at a JSON pointer; returns whether something was removed.
pub(super) fn remove_pointer(doc: &mut Json, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(parent)
    };
    match target {
        Some(Json::Object(m)) => m.remove(&last).is_some(),
        Some(Json::Array(a)) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Removes the value at `parts` below `v`; returns whether something was removed. The policy's
/// values are shared with the Check that made them: only the objects and arrays on the way to a
/// removed value are copied, and nothing when the pointer does not resolve (the common case: most
/// requests carry no cookie).
pub(super) fn remove_value(v: &mut regorus::Value, parts: &[String]) -> bool {
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    if !resolves(v, parts) {
        return false;
    }
    let mut at = v;
    for part in parents {
        at = match at {
            regorus::Value::Object(_) => match at.as_object_mut() {
                Ok(m) => match m.get_mut(&regorus::Value::from(part.as_str())) {
                    Some(child) => child,
                    None => return false,
                },
                Err(_) => return false,
            },
            regorus::Value::Array(_) => match (at.as_array_mut(), part.parse::<usize>()) {
                (Ok(a), Ok(i)) => match a.get_mut(i) {
                    Some(child) => child,
                    None => return false,
                },
                _ => return false,
            },
            _ => return false,
        };
    }
    match at {
        regorus::Value::Object(_) => at
            .as_object_mut()
            .is_ok_and(|m| m.remove(&regorus::Value::from(last.as_str())).is_some()),
        regorus::Value::Array(_) => match (at.as_array_mut(), last.parse::<usize>()) {
            (Ok(a), Ok(i)) if i < a.len() => {
                let mut at = 0;
                a.retain(|_| {
                    at += 1;
                    at != i + 1
                });
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether `parts` leads to a value below `v`, without copying anything.
fn resolves(v: &regorus::Value, parts: &[String]) -> bool {
    let mut at = v;
    for part in parts {
        at = match at {
            regorus::Value::Object(m) => match m.get(&regorus::Value::from(part.as_str())) {
                Some(child) => child,
                None => return false,
            },
            regorus::Value::Array(a) => match part.parse::<usize>() {
                Ok(i) if i < a.len() => &a[i],
                _ => return false,
            },
            _ => return false,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upserts_set_fields_and_create_parents() {
        let mut doc = json!({"input": {"l": [1, 2], "s": "x"}});
        assert!(upsert_pointer(
            &mut doc,
            "/input/user/name",
            json!("redacted")
        ));
        assert!(upsert_pointer(&mut doc, "/input/l/1", json!(0)));
        assert!(!upsert_pointer(&mut doc, "/input/l/5", json!(0)));
        assert!(!upsert_pointer(&mut doc, "/input/s/deeper", json!(0)));
        assert_eq!(
            doc,
            json!({"input": {"l": [1, 0], "s": "x", "user": {"name": "redacted"}}})
        );
    }

    #[test]
    fn pointers_remove_fields() {
        let mut doc = json!({"input": {"h": {"authorization": "x", "a/b": 1}, "l": [1, 2]}});
        assert!(remove_pointer(&mut doc, "/input/h/authorization"));
        assert!(remove_pointer(&mut doc, "/input/h/a~1b"));
        assert!(remove_pointer(&mut doc, "/input/l/0"));
        assert!(!remove_pointer(&mut doc, "/input/missing/x"));
        assert_eq!(doc, json!({"input": {"h": {}, "l": [2]}}));
    }

    #[test]
    fn values_lose_pointed_fields_and_shared_copies_keep_them() {
        let original = regorus::Value::from_json_str(
            r#"{"h": {"authorization": "x", "a/b": 1}, "l": [1, 2]}"#,
        )
        .expect("json");
        let mut v = original.clone();
        let seg = |p: &str| segments(p).expect("pointer");
        assert!(remove_value(&mut v, &seg("/h/authorization")));
        assert!(remove_value(&mut v, &seg("/h/a~1b")));
        assert!(remove_value(&mut v, &seg("/l/0")));
        assert!(!remove_value(&mut v, &seg("/missing/x")));
        assert!(!remove_value(&mut v, &seg("/l/7")));
        assert_eq!(
            serde_json::to_value(&v).expect("json"),
            json!({"h": {}, "l": [2]})
        );
        assert_eq!(
            serde_json::to_value(&original).expect("json"),
            json!({"h": {"authorization": "x", "a/b": 1}, "l": [1, 2]}),
            "the Check's own value is not changed"
        );
    }
}
