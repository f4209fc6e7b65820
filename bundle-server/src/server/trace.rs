//! Spans of a build: a root span `bundle.build` per build from a push or a poll, with children
//! `git.fetch`, then for each bundle `bundle.compile` (build, compile, entrypoints), `bundle.gate`
//! (the policy tests) and `bundle.sign`, and `bundle.publish` once the commit passed. A fetch
//! that finds the commit already gated ends the build span with result `unchanged`.
//!
//! The per-bundle steps run on the gate's blocking thread, with the build's context attached
//! ([`regent_telemetry::spans`]); `regent check` and the git hooks run the same gate without one,
//! and make no spans.

/// Name of the span of one build.
pub const BUILD_SPAN: &str = "bundle.build";
/// Name of the span of fetching the branch.
pub const FETCH_SPAN: &str = "git.fetch";
/// Name of the span of building, compiling and checking the entrypoints of one bundle.
pub const COMPILE_SPAN: &str = "bundle.compile";
/// Name of the span of one bundle's policy tests.
pub const GATE_SPAN: &str = "bundle.gate";
/// Name of the span of signing one bundle.
pub const SIGN_SPAN: &str = "bundle.sign";
/// Name of the span of persisting and serving the commit's bundles.
pub const PUBLISH_SPAN: &str = "bundle.publish";

/// Attribute keys of the build spans.
pub mod attr {
    /// The commit built (also the bundles' revision).
    pub const COMMIT: &str = "regent.commit";
    /// The revision published (the commit).
    pub const REVISION: &str = "regent.bundle.revision";
    /// Outcome: `published`, `rejected`, `error`, `unchanged` (build); `ok`, `error` (fetch);
    /// `ok`, `failed` (compile, gate, sign); `ok` (publish).
    pub const RESULT: &str = "regent.result";
    /// A bundle's name (`bundles[].name`), on the per-bundle steps.
    pub const BUNDLE: &str = "regent.bundle";
    /// The publish gate's reason of a step's first failure (`build`, `compile`, `test`, ...).
    pub const REASON: &str = "regent.reason";
    /// The repository, with credentials hidden.
    pub const REPO: &str = "regent.git.repo";
    /// The branch published.
    pub const BRANCH: &str = "regent.git.branch";
    /// The key id that signed.
    pub const SIGNING_KID: &str = "regent.signing.kid";
    /// Bytes of a signed bundle.
    pub const BYTES: &str = "regent.bundle.bytes";
    /// Number of bundles published.
    pub const BUNDLES: &str = "regent.bundles";
}
