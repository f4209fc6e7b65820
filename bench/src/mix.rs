//! Request mixes for `load`: which CheckRequests are sent, in what order, and what each answer must be.

use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::{bindings, edge_jwt, rbac_mix, RBAC_EXPECTED};

/// Builds request number `serial` of the never-seen share (each call a request not sent before).
pub type FreshFn = Box<dyn Fn(u64) -> (CheckRequest, bool) + Send + Sync>;

/// A cycle of fixed requests with their expected decisions (`true`: allowed), and optionally a share
/// of requests never sent before: one in `every`.
pub struct Mix {
    /// What `load` prints about the mix.
    pub name: &'static str,
    fixed: Vec<(CheckRequest, bool)>,
    fresh: Option<(u64, FreshFn)>,
    serial: AtomicU64,
}

impl Mix {
    /// A mix of `fixed` requests only.
    pub fn fixed(name: &'static str, fixed: Vec<(CheckRequest, bool)>) -> Mix {
        assert!(!fixed.is_empty());
        Mix {
            name,
            fixed,
            fresh: None,
            serial: AtomicU64::new(0),
        }
    }

    /// `fixed`, with request `k` built by `fresh` instead whenever `k % every == every - 1`.
    pub fn with_fresh(mut self, every: u64, fresh: FreshFn) -> Mix {
        assert!(every >= 2);
        self.fresh = Some((every, fresh));
        self
    }

    /// The mix `load --expect NAME` sends: `rbac`, `allow` (the RBAC requests, all to be allowed: the
    /// NOP floor), `edge_jwt`, `edge_jwt_remote`
    /// (the same mix, against bench/policies/edge_jwt_remote), `bindings`.
    pub fn named(name: &str) -> anyhow::Result<Mix> {
        Ok(match name {
            "rbac" => Mix::fixed("rbac", rbac_mix().into_iter().zip(RBAC_EXPECTED).collect()),
            "allow" => Mix::fixed("allow", rbac_mix().into_iter().map(|r| (r, true)).collect()),
            "edge_jwt" => edge_jwt::mix(),
            // Same requests and answers; the policy verifies with a remote key set.
            "edge_jwt_remote" => edge_jwt::mix(),
            "bindings" => bindings::mix(),
            other => anyhow::bail!("no request mix named {other}"),
        })
    }

    /// Request `k` of the sequence and whether it must be allowed. Fixed requests cycle in order;
    /// fresh ones are numbered across all callers (one shared counter), so no two are the same.
    pub fn get(&self, k: u64) -> (CheckRequest, bool) {
        match &self.fresh {
            Some((every, fresh)) if k % every == every - 1 => {
                fresh(self.serial.fetch_add(1, Ordering::Relaxed))
            }
            Some((every, _)) => {
                self.fixed[((k - k / every) % self.fixed.len() as u64) as usize].clone()
            }
            None => self.fixed[(k % self.fixed.len() as u64) as usize].clone(),
        }
    }

    /// One line about the mix, for `load`'s stderr.
    pub fn describe(&self) -> String {
        let allowed = self.fixed.iter().filter(|(_, a)| *a).count();
        let mut s = format!(
            "mix {}: {} fixed requests ({} to be allowed)",
            self.name,
            self.fixed.len(),
            allowed
        );
        if let Some((every, _)) = &self.fresh {
            s += &format!(", plus 1 in {every} never seen before");
        }
        s
    }
}
