//! The config files the Helm chart renders (snapshots kept current by `charts/check.sh`), parsed
//! and validated by the binaries' own config code: a chart change that the bundle server, the
//! sidecar or the injector would refuse at start fails here, not in a cluster.

use std::path::{Path, PathBuf};

use regent_bundle_server::inject::template::InjectTemplate;
use regent_bundle_server::server::ServerConfig;
use regent_sidecar::config::SidecarConfig;

fn snapshots() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/test-values/rendered");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn read(path: &Path) -> Option<String> {
    path.exists().then(|| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

#[test]
fn every_rendered_config_is_accepted_by_its_binary() {
    let dirs = snapshots();
    assert!(
        dirs.len() >= 4,
        "expected the CI values snapshots, found {dirs:?}"
    );
    let (mut servers, mut sidecars, mut injectors) = (0, 0, 0);
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if let Some(text) = read(&dir.join("server.yaml")) {
            let cfg = ServerConfig::from_yaml(&text)
                .unwrap_or_else(|e| panic!("{name}/server.yaml: {e:#}"));
            cfg.validate()
                .unwrap_or_else(|e| panic!("{name}/server.yaml: {e}"));
            // The chart's Service, probes and NetworkPolicy use this port.
            assert_eq!(cfg.listen.port(), 8282, "{name}/server.yaml");
            assert!(cfg
                .signing
                .keys
                .iter()
                .any(|k| k.kid == cfg.signing.active_kid
                    && k.private_key_file.starts_with("/etc/regent/signing")));
            servers += 1;
        }
        if let Some(text) = read(&dir.join("sidecar.yaml")) {
            let cfg = SidecarConfig::from_yaml(&text)
                .unwrap_or_else(|e| panic!("{name}/sidecar.yaml: {e}"));
            // Envoy in the pod calls loopback; the kubelet probes the pod IP.
            assert!(cfg.grpc.addr.ip().is_loopback(), "{name}/sidecar.yaml");
            assert!(cfg.http.addr.ip().is_unspecified(), "{name}/sidecar.yaml");
            sidecars += 1;
        }
        if let Some(text) = read(&dir.join("inject.yaml")) {
            let tpl = InjectTemplate::from_yaml(&text)
                .unwrap_or_else(|e| panic!("{name}/inject.yaml: {e}"));
            assert_eq!(tpl.container_name(), "regent-sidecar");
            // Every mount of the injected container comes with its volume.
            let volumes: Vec<&str> = tpl.volume_names().collect();
            for mount in tpl.container["volumeMounts"].as_array().unwrap() {
                let m = mount["name"].as_str().unwrap();
                assert!(
                    volumes.contains(&m),
                    "{name}/inject.yaml: mount {m} has no volume"
                );
            }
            injectors += 1;
        }
    }
    assert!(
        servers >= 3 && sidecars >= 3 && injectors >= 2,
        "{servers} {sidecars} {injectors}"
    );
}
