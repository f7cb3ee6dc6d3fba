//! The deployment files agree with the engine: the Kubernetes ConfigMap carries config.toml as
//! shipped, the kustomization lists every manifest, and the probes and ports name routes and the
//! port the engine has, and every alerting rule reads metrics the engine exports and points to a
//! runbook entry. (Their syntax is checked by `deploy/check.sh`: hadolint, `docker-compose config`,
//! kubernetes-validate, promtool.)

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

/// Metric names declared in src/metrics.rs.
fn declared_metrics() -> Vec<String> {
    read("src/metrics.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

/// The anchor a Markdown heading gets: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_uses_declared_metrics_and_has_a_runbook_entry() {
    let rules = read("deploy/prometheus/alerts.yml");
    let declared = declared_metrics();
    let used: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("hexdispatch_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .fold(w.to_owned(), |w, s| {
                    w.strip_suffix(s).map_or(w.clone(), str::to_owned)
                })
        })
        .collect();
    assert!(used.len() >= 10, "the rules read the engine's metrics");
    for name in &used {
        assert!(
            declared.contains(name),
            "alerts.yml uses {name}, which the engine does not export"
        );
    }
    let operations = read("docs/OPERATIONS.md");
    let anchors: Vec<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    let runbooks: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook: \"docs/OPERATIONS.md#"))
        .filter_map(|l| l.strip_suffix('"'))
        .collect();
    assert!(alerts.len() >= 12, "{alerts:?}");
    assert_eq!(
        alerts.len(),
        runbooks.len(),
        "every alert names its runbook entry"
    );
    for runbook in runbooks {
        assert!(
            anchors.iter().any(|a| a == runbook),
            "docs/OPERATIONS.md has no entry #{runbook}"
        );
    }
    let tests = read("deploy/prometheus/alerts.test.yml");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alerts.test.yml does not test {alert}"
        );
    }
    assert!(
        read("deploy/prometheus/prometheus.yml").contains("- alerts.yml"),
        "Prometheus loads the rules"
    );
}
