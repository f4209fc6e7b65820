#![no_main]
//! Data file bytes straight into the budgeted parsers and the canonical hasher, where the
//! unpack_verify target's compressed inputs rarely reach: the first byte picks the file name
//! (`data.json`, `data.yaml`, `data.yml`), the rest is the file. Any panic is a bug, and so is any
//! input that takes long: run with `-timeout=2` (see seeds/README.md). Every refusal must be quick
//! whatever the input, since an unsigned bundle read with `sync.insecure_skip_verification`, and
//! every signed one, is parsed within these budgets.

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use regent_bundle::Bundle;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let name = ["authz/data.json", "authz/data.yaml", "authz/data.yml"][kind as usize % 3];
    let _ = regent_bundle::signing::file_digest(name, body, "SHA-256");
    let files = BTreeMap::from([(name.to_string(), body.to_vec())]);
    if let Ok(bundle) = Bundle::from_files(files) {
        let _ = bundle.data();
    }
});
