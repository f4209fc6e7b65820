//! Archives: deterministic building, and hostile archives crafted byte by byte, each refused with its
//! own error and never a panic.

use std::io::Write;

use flate2::{write::GzEncoder, Compression};
use regent_bundle::{
    read_tar_gz, unpack_to_dir, BuildOptions, Bundle, BundleError, UnpackError, UnpackLimits,
};

/// One tar entry with raw name bytes (the tar crate's own path setter refuses `..`, so we bypass it).
fn entry(name: &[u8], kind: tar::EntryType, data: &[u8]) -> (tar::Header, Vec<u8>) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
        h.set_link_name("/etc/passwd").unwrap();
    }
    h.set_cksum();
    (h, data.to_vec())
}

fn tar_gz(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, d) in entries {
        b.append(h, d.as_slice()).unwrap();
    }
    gz(&b.into_inner().unwrap())
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn file(name: &str, data: &str) -> (tar::Header, Vec<u8>) {
    entry(name.as_bytes(), tar::EntryType::Regular, data.as_bytes())
}

fn refused(bytes: &[u8], limits: &UnpackLimits) -> UnpackError {
    read_tar_gz(bytes, limits).expect_err("archive must be refused")
}

#[test]
fn a_plain_archive_with_leading_slashes_reads() {
    let bytes = tar_gz(&[
        file("/.manifest", r#"{"revision":"r"}"#),
        file("/a/p.rego", "package a\n"),
    ]);
    let b = Bundle::from_tar_gz(&bytes, &UnpackLimits::default()).unwrap();
    assert_eq!(b.revision(), "r");
    assert_eq!(
        b.modules().collect::<Vec<_>>(),
        vec![("a/p.rego", "package a\n")]
    );
}

#[test]
fn unsafe_entries_are_refused() {
    let l = UnpackLimits::default();
    use tar::EntryType as T;
    for (name, kind, what) in [
        (&b"link"[..], T::Symlink, "symlink"),
        (b"hard", T::Link, "hard link"),
        (b"dev", T::Char, "device"),
        (b"blk", T::Block, "device"),
        (b"fifo", T::Fifo, "fifo"),
    ] {
        let err = refused(&tar_gz(&[entry(name, kind, b"")]), &l);
        assert!(
            matches!(&err, UnpackError::ForbiddenEntry { kind, .. } if *kind == what),
            "{err}"
        );
    }
    for bad in [
        &b"../escape"[..],
        b"a/../../x",
        b"//etc/passwd",
        b"a/./b",
        b"a//b",
    ] {
        let err = refused(&tar_gz(&[entry(bad, T::Regular, b"x")]), &l);
        assert!(
            matches!(err, UnpackError::UnsafePath(_)),
            "{:?}: {err}",
            String::from_utf8_lossy(bad)
        );
    }
    let err = refused(&tar_gz(&[entry(b"bad\xff.rego", T::Regular, b"x")]), &l);
    assert!(matches!(err, UnpackError::NonUtf8Name(_)), "{err}");
    let err = refused(&tar_gz(&[file("a.rego", "x"), file("/a.rego", "y")]), &l);
    assert!(
        matches!(&err, UnpackError::Duplicate(p) if p == "a.rego"),
        "{err}"
    );
}

#[test]
fn limits_are_enforced() {
    let small = UnpackLimits {
        max_compressed_bytes: 10_000,
        max_total_bytes: 64 * 1024,
        max_file_bytes: 1000,
        max_entries: 3,
        max_depth: 3,
    };
    let err = refused(&tar_gz(&[file("big.json", &"x".repeat(1001))]), &small);
    assert!(
        matches!(err, UnpackError::FileTooLarge { size: 1001, .. }),
        "{err}"
    );
    let many: Vec<_> = (0..4).map(|i| file(&format!("f{i}"), "")).collect();
    assert!(matches!(
        refused(&tar_gz(&many), &small),
        UnpackError::TooManyEntries { limit: 3 }
    ));
    assert!(matches!(
        refused(&tar_gz(&[file("a/b/c/d", "")]), &small),
        UnpackError::TooDeep { .. }
    ));
    // A gzip bomb: a few KB that inflate past the total limit; refused while streaming.
    let bomb = tar_gz(&[entry(
        b"bomb.json",
        tar::EntryType::Regular,
        &vec![b' '; 1 << 20],
    )]);
    assert!(bomb.len() < 10_000);
    let bomb_limits = UnpackLimits {
        max_file_bytes: 1 << 30,
        ..small
    };
    assert!(matches!(
        refused(&bomb, &bomb_limits),
        UnpackError::TotalTooLarge { .. }
    ));
    let err = refused(&vec![0u8; 10_001], &small);
    assert!(
        matches!(err, UnpackError::CompressedTooLarge { size: 10_001, .. }),
        "{err}"
    );
}

#[test]
fn malformed_archives_are_errors_not_panics() {
    let l = UnpackLimits::default();
    let good = tar_gz(&[file("a/p.rego", "package a\n"), file("a/data.json", "{}")]);
    for cut in [1, 10, good.len() / 2, good.len() - 4] {
        assert!(read_tar_gz(&good[..cut], &l).is_err(), "truncated at {cut}");
    }
    assert!(matches!(
        refused(b"definitely not gzip", &l),
        UnpackError::Malformed(_)
    ));
    // Valid gzip around a tar whose file data is cut short.
    let mut t = tar::Builder::new(Vec::new());
    let (h, _) = file("x", &"y".repeat(600));
    t.append(&h, &b"y".repeat(600)[..]).unwrap();
    let raw = t.into_inner().unwrap();
    assert!(read_tar_gz(&gz(&raw[..700]), &l).is_err());
}

#[test]
fn bundle_level_errors_after_unpacking() {
    let l = UnpackLimits::default();
    let bytes = tar_gz(&[
        file(".manifest", r#"{"roots":["a"]}"#),
        file("b/p.rego", "package b\n"),
    ]);
    assert!(matches!(
        Bundle::from_tar_gz(&bytes, &l),
        Err(BundleError::PackageOutsideRoots { .. })
    ));
    let bytes = tar_gz(&[file("p.rego", "package p\nallow if {\n")]);
    let err = Bundle::from_tar_gz(&bytes, &l).unwrap_err().to_string();
    assert!(err.contains("p.rego:"), "{err}");
}

#[test]
fn unpack_to_dir_stays_inside() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tar_gz(&[file("a/b/data.json", "{}"), file("p.rego", "package p\n")]);
    let written = unpack_to_dir(&bytes, dir.path(), &UnpackLimits::default()).unwrap();
    assert_eq!(
        written,
        vec!["a/b/data.json".to_string(), "p.rego".to_string()]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a/b/data.json")).unwrap(),
        "{}"
    );
    // Existing files are never overwritten or followed.
    assert!(matches!(
        unpack_to_dir(&bytes, dir.path(), &UnpackLimits::default()),
        Err(UnpackError::Write { .. })
    ));
}

fn write_tree(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
}

#[test]
fn build_from_dir_is_deterministic_and_excludes_tests() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("envoy/authz/policy.rego", "package envoy.authz\n\ndefault allow := false\nallow if input.user == data.envoy.authz.admin\n"),
            ("envoy/authz/policy_test.rego", "package envoy.authz\ntest_x if true\n"),
            ("envoy/authz/data.json", r#"{"admin": "alice"}"#),
            ("README.md", "ignored"),
            (".git/config", "ignored"),
        ],
    );
    let opts = BuildOptions {
        revision: Some("abc123".into()),
        ..Default::default()
    };
    let a = Bundle::from_dir(dir.path(), &opts)
        .unwrap()
        .to_tar_gz()
        .unwrap();
    // Different mtimes must not matter.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        dir.path().join("envoy/authz/data.json"),
        r#"{"admin": "alice"}"#,
    )
    .unwrap();
    let b = Bundle::from_dir(dir.path(), &opts)
        .unwrap()
        .to_tar_gz()
        .unwrap();
    assert_eq!(a, b, "same tree, same bytes");

    let back = Bundle::from_tar_gz(&a, &UnpackLimits::default()).unwrap();
    let names: Vec<_> = back.files().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        names,
        vec![
            ".manifest",
            "envoy/authz/data.json",
            "envoy/authz/policy.rego"
        ]
    );
    assert_eq!(back.revision(), "abc123");
    assert_eq!(back.manifest().rego_version, Some(1));

    let with_tests = Bundle::from_dir(
        dir.path(),
        &BuildOptions {
            include_tests: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(with_tests.modules().count(), 2);
}
