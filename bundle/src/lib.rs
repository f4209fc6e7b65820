//! Regent's bundle library: the OPA-compatible bundle format shared by the sidecar and the bundle server.
//!
//! - [`Bundle`]: build from a directory, read an untrusted `.tar.gz` safely ([`UnpackLimits`]) and,
//!   with [`Bundle::from_verified_tar_gz`], verify its signature before parsing any of it; write a
//!   deterministic `.tar.gz`, merged data and modules. Every data parse has a budget (depth 128,
//!   values and bytes proportional to the file's size, YAML aliases counted as they expand).
//! - [`signing`]: `.signatures.json` signed with Ed25519, RSA or ECDSA (JWS `EdDSA`, `RS*`, `PS*`, `ES*`), a [`signing::Keyring`] selected by `kid`,
//!   and the rollback check.
//! - [`canonical`]: OPA's canonical JSON used for hashing structured files.
//! - [`archive`]: safe `.tar.gz` reading and writing; [`manifest`]: the `.manifest` file.
//!
//! Loading bundles into regorus (OPA's activation checks) is `regent_policy::load`.

pub mod archive;
mod bundle;
pub mod canonical;
mod json;
pub mod jws_keys;
pub mod manifest;
pub mod signing;
mod yaml;

pub use archive::{read_tar_gz, unpack_to_dir, write_tar_gz, ReadError, UnpackError, UnpackLimits};
pub use bundle::{
    clean_path, file_kind, BuildOptions, Bundle, BundleError, FileKind, MANIFEST_FILE,
    SIGNATURES_FILE,
};
pub use manifest::{Manifest, ManifestError};
