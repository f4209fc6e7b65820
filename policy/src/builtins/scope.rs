//! Which Check a builtin call belongs to.
//!
//! One Check may evaluate its policy more than once: a round per wave of remote calls
//! (`http.send`, introspection: see `remote.rs`), and an interpreter re-check of a VM answer
//! (`policy.vm_recheck`); regorus also calls a builtin again for every rule that mentions it.
//! Builtins with effects that must happen once per Check (a passport's `jti` marked as seen)
//! key them on [`check_id`], which stays the same for all of one Check's evaluations.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static CURRENT: Cell<Option<u64>> = const { Cell::new(None) };
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A new Check's id: unique in this process.
pub fn new_check_id() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Marks this thread as evaluating for Check `id` until the guard is dropped.
pub fn enter(id: u64) -> ScopeGuard {
    let previous = CURRENT.with(|c| c.replace(Some(id)));
    ScopeGuard { previous }
}

/// Restores the enclosing scope when dropped.
pub struct ScopeGuard {
    previous: Option<u64>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// The Check being evaluated on this thread; `None` outside one (`regent test`, `regent eval`,
/// unit tests), where every call stands alone.
pub fn check_id() -> Option<u64> {
    CURRENT.with(|c| c.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_visible_inside_and_restored_after() {
        assert_eq!(check_id(), None);
        let outer = new_check_id();
        let inner = new_check_id();
        assert_ne!(outer, inner);
        {
            let _a = enter(outer);
            assert_eq!(check_id(), Some(outer));
            {
                let _b = enter(inner);
                assert_eq!(check_id(), Some(inner));
            }
            assert_eq!(check_id(), Some(outer));
        }
        assert_eq!(check_id(), None);
    }
}
