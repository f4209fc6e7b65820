//! Frees the data of retired policies on a background thread, never on a request.
//!
//! A policy's data document is shared (reference-counted) by the policy, its engine and every
//! thread's evaluator. After a swap, whichever of them lets go last frees the whole document, and
//! for tens of megabytes of data that takes a good fraction of a second: if it were a request
//! thread rebuilding its evaluator for the new policy, that request would stall. So each policy's
//! document is also held here, and this thread frees it once nobody else holds it any more.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use regorus::Value;

/// Locks `m` even if a thread panicked while holding it: the list stays consistent between
/// statements, and freeing must go on rather than fail on it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often held documents are checked for being unused.
const PERIOD: Duration = Duration::from_millis(500);

struct Held {
    docs: Mutex<Vec<Value>>,
    wake: Condvar,
}

fn held() -> &'static Held {
    static HELD: OnceLock<&'static Held> = OnceLock::new();
    HELD.get_or_init(|| {
        let held: &'static Held = Box::leak(Box::new(Held {
            docs: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("regent-retire".into())
            .spawn(move || run(held));
        if let Err(e) = spawned {
            // Without the thread documents are simply freed by their last user, as before.
            tracing::warn!(error = %e, "cannot start the thread that frees retired policy data");
        }
        held
    })
}

fn run(held: &'static Held) {
    let mut docs = lock(&held.docs);
    loop {
        docs = match held.wake.wait_timeout(docs, PERIOD) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        let (unused, kept): (Vec<Value>, Vec<Value>) =
            std::mem::take(&mut *docs).into_iter().partition(only_here);
        *docs = kept;
        if !unused.is_empty() {
            // Free outside the lock so a policy being compiled meanwhile is not held up.
            drop(docs);
            drop(unused);
            docs = lock(&held.docs);
        }
    }
}

/// True when this handle is the document's last one.
fn only_here(doc: &Value) -> bool {
    match doc {
        Value::Object(o) => std::sync::Arc::strong_count(o) == 1,
        Value::Array(a) => std::sync::Arc::strong_count(a) == 1,
        Value::Set(s) => std::sync::Arc::strong_count(s) == 1,
        // Scalars are cheap to free anywhere.
        _ => true,
    }
}

/// Holds a policy's data document until nothing else does, then frees it on the background thread.
pub fn hold_until_unused(doc: Value) {
    if only_here(&doc) {
        return;
    }
    let held = held();
    let mut docs = lock(&held.docs);
    docs.push(doc);
    held.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_freed_here_once_its_users_let_go() {
        let doc = Value::from_json_str(r#"{"users":{"alice":{"role":"admin"}}}"#).unwrap();
        let Value::Object(root) = &doc else {
            panic!("not an object")
        };
        let weak = std::sync::Arc::downgrade(root);
        hold_until_unused(doc.clone());
        drop(doc);
        // Bounded wait: a few periods at most.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "document was never freed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
