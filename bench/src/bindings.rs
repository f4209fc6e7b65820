//! Fixtures of the bindings policy (`bench/policies/bindings`): 5,000 role bindings
//! `{"user", "role", "resource"}` in a data array, scanned with `some b in data.bindings` for one
//! matching the request's subject, path prefix and method: the naive shape of a first policy, with
//! no index by user.
//!
//! The bindings are a pure function of their position ([`binding`]), so the `fixtures` binary
//! writes `bench/policies/bindings/data.json` from them and [`mix`] computes each request's expected
//! decision from the same list.

use serde_json::json;

use crate::check_request;
use crate::mix::Mix;

/// Bindings in data.
pub const BINDINGS: usize = 5_000;
/// Users (five bindings each, spread over the list).
const USERS: usize = 1_000;
/// Projects.
const PROJECTS: usize = 400;
/// Requests in the mix.
const REQUESTS: usize = 40;

/// Methods each role grants (data.roles).
const ROLES: [(&str, &[&str]); 3] = [
    ("viewer", &["GET", "HEAD"]),
    ("editor", &["GET", "HEAD", "POST", "PUT", "PATCH"]),
    ("owner", &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
];

/// One binding.
pub struct Binding {
    /// Who.
    pub user: String,
    /// With which role.
    pub role: &'static str,
    /// On what.
    pub resource: String,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Binding `i`: user `i % 1000` (so a user's bindings are spread over the whole list), a role
/// (half viewer, a third editor, the rest owner) on one project's path prefix.
pub fn binding(i: usize) -> Binding {
    let h = splitmix(i as u64);
    let role = match h % 6 {
        0..=2 => "viewer",
        3 | 4 => "editor",
        _ => "owner",
    };
    Binding {
        user: format!("user-{:04}", i % USERS),
        role,
        resource: format!("/api/v1/projects/p-{:03}/", (h >> 8) % PROJECTS as u64),
    }
}

/// `bench/policies/bindings/data.json` (one binding per line, ~300 KB).
pub fn data_json() -> String {
    let roles: serde_json::Map<String, serde_json::Value> = ROLES
        .iter()
        .map(|(r, m)| (r.to_string(), json!(m)))
        .collect();
    let mut s = format!(
        "{{\n  \"roles\": {},\n  \"bindings\": [\n",
        serde_json::Value::Object(roles)
    );
    for i in 0..BINDINGS {
        let b = binding(i);
        s += &format!(
            "    {}{}\n",
            json!({"user": b.user, "role": b.role, "resource": b.resource}),
            if i + 1 < BINDINGS { "," } else { "" }
        );
    }
    s += "  ]\n}\n";
    s
}

/// What the policy answers: some binding of `user` whose resource prefixes `path` grants `method`.
fn allowed(bindings: &[Binding], user: &str, method: &str, path: &str) -> bool {
    bindings.iter().any(|b| {
        b.user == user
            && path.starts_with(&b.resource)
            && ROLES
                .iter()
                .any(|(r, methods)| *r == b.role && methods.contains(&method))
    })
}

/// The bindings request mix: `REQUESTS` requests by users that have bindings (reads, writes and
/// deletes on their projects, reads on a project of nobody's) and by an unknown user; the expected
/// decisions come from the same bindings.
pub fn mix() -> Mix {
    let bindings: Vec<Binding> = (0..BINDINGS).map(binding).collect();
    let fixed = (0..REQUESTS)
        .map(|j| {
            let b = &bindings[(j * 997 + 123) % BINDINGS];
            let (method, resource, user) = match j % 8 {
                0..=2 => ("GET", b.resource.clone(), b.user.clone()),
                3 => ("POST", b.resource.clone(), b.user.clone()),
                4 => ("PUT", b.resource.clone(), b.user.clone()),
                5 => ("DELETE", b.resource.clone(), b.user.clone()),
                6 => ("GET", "/api/v1/projects/p-999/".into(), b.user.clone()),
                _ => ("GET", b.resource.clone(), "user-9999".into()),
            };
            let path = format!("{resource}documents/d-{j}");
            let ok = allowed(&bindings, &user, method, &path);
            (check_request(method, &path, &user), ok)
        })
        .collect();
    Mix::fixed("bindings", fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_allows_and_denies() {
        let m = mix();
        let allowed = (0..REQUESTS as u64).filter(|&k| m.get(k).1).count();
        assert!(
            allowed > REQUESTS / 4 && allowed < REQUESTS * 3 / 4,
            "{allowed}"
        );
    }

    #[test]
    fn the_committed_bindings_are_the_generated_ones() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/bindings/data.json");
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == data_json(),
            "{path} is stale: run `cargo run --release -p regent-bench --bin fixtures bench/policies`"
        );
    }
}
