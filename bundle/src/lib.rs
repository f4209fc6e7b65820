//! Regent's bundle library: the OPA-compatible bundle format shared by the sidecar and the bundle server.
//!
//! - [`Bundle`]: build from a directory, read an untrusted `.tar.gz` safely ([`UnpackLimits`]), write a
//!   deterministic `.tar.gz`, merged data and modules.
//! - [`signing`]: `.signatures.json` with Ed25519 (JWS `EdDSA`), a [`signing::Keyring`] selected by `kid`,
//!   and the rollback check.
//! - [`canonical`]: OPA's canonical JSON used for hashing structured files.
//! - [`engine`]: loading bundles into the pinned regorus engine with OPA's activation checks.

pub mod archive;
mod bundle;
pub mod canonical;
mod json;
pub mod manifest;
pub mod signing;

pub use archive::{read_tar_gz, unpack_to_dir, UnpackError, UnpackLimits};
pub use bundle::{
    clean_path, file_kind, BuildOptions, Bundle, BundleError, FileKind, MANIFEST_FILE,
    SIGNATURES_FILE,
};
pub use manifest::{Manifest, ManifestError};
