#![no_main]
//! Untrusted bytes through the whole read path a sidecar runs on a downloaded bundle: safe unpacking,
//! signature verification before any content is parsed (`Bundle::from_verified_tar_gz`), and the
//! unverified read (`sync.insecure_skip_verification`): manifest, modules and data within their
//! parse budgets. Any panic is a bug.

use libfuzzer_sys::fuzz_target;
use regent_bundle::signing::{verify, Keyring, SigningKey, VerifyOptions};
use regent_bundle::{Bundle, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    let limits = UnpackLimits {
        max_compressed_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        max_entries: 256,
        max_depth: 16,
    };
    let mut ring = Keyring::new();
    ring.insert("k", SigningKey::ed25519_from_bytes(&[7; 32]).verifying_key());
    let opts = VerifyOptions::default();
    let verified = Bundle::from_verified_tar_gz(data, &limits, &ring, &opts, None);
    if let Ok(bundle) = Bundle::from_tar_gz(data, &limits) {
        let _ = bundle.data();
        // The two reads must agree on the signature whenever both get that far.
        let plain = verify(&bundle, &ring, &opts);
        if let (Ok((_, a)), Ok(b)) = (&verified, &plain) {
            assert_eq!(a, b);
        }
        assert!(verified.is_err() || plain.is_ok());
    }
});
