//! The deployment files agree with the engine: the Kubernetes ConfigMap carries config.toml as
//! shipped, the kustomization lists every manifest, and the probes and ports name routes and the
//! port the engine has. (Their syntax is checked by `deploy/check.sh`: hadolint,
//! `docker-compose config`, kubernetes-validate.)

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_configmap_carries_config_toml_as_shipped() {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let (_, embedded) = configmap
        .split_once("  config.toml: |\n")
        .expect("a config.toml key");
    let unindented: String = embedded
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        unindented.trim_end(),
        read("config.toml").trim_end(),
        "deploy/kubernetes/configmap.yaml is out of step with config.toml: run deploy/kubernetes/sync-config.sh"
    );
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                kustomization.contains(&format!("  - {name}\n")),
                "{name} is not in kustomization.yaml"
            );
        }
    }
}

#[test]
fn probes_and_ports_name_what_the_engine_serves() {
    let statefulset = read("deploy/kubernetes/statefulset.yaml");
    let routes: Vec<&str> = hexdispatch::http::ENDPOINTS
        .iter()
        .map(|e| e.path)
        .collect();
    for path in ["/ready", "/health"] {
        assert!(
            statefulset.contains(&format!("path: {path}\n")),
            "{path} probe"
        );
        assert!(routes.contains(&path), "{path} is a route");
    }
    let shipped = hexdispatch::config::Settings::from_toml(&read("config.toml")).unwrap();
    assert_eq!(shipped.http.port, 8080);
    assert!(statefulset.contains("containerPort: 8080"));
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("EXPOSE 8080"));
    assert!(
        dockerfile.contains("\"healthcheck\""),
        "the image checks itself"
    );
    // The grace period covers the drain configured beside it.
    let grace: u64 = statefulset
        .split("terminationGracePeriodSeconds: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("terminationGracePeriodSeconds");
    assert!(
        statefulset.contains("HEXDISPATCH__HTTP__SHUTDOWN_TIMEOUT_S\n              value: \"20\"")
    );
    assert!(
        grace > 20 + 10,
        "grace {grace} s must exceed the 20 s drain with room"
    );
}
