#![no_main]
//! Untrusted bytes through the whole read path a sidecar runs on a downloaded bundle: safe unpacking,
//! bundle validation (manifest, modules, data) and signature verification. Any panic is a bug.

use libfuzzer_sys::fuzz_target;
use regent_bundle::signing::{verify, Keyring, VerifyOptions};
use regent_bundle::{Bundle, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    let limits = UnpackLimits {
        max_compressed_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        max_entries: 256,
        max_depth: 16,
    };
    if let Ok(bundle) = Bundle::from_tar_gz(data, &limits) {
        let _ = bundle.data();
        let mut ring = Keyring::new();
        ring.insert("k", regent_bundle::signing::SigningKey::from_bytes(&[7; 32]).verifying_key());
        let _ = verify(&bundle, &ring, &VerifyOptions::default());
    }
});
