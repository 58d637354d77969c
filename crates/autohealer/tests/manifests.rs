//! The shipped manifests parse, carry the hardening they promise, hold a valid config,
//! and grant exactly the API calls the healer makes.

mod common;

use autohealer::Registries;
use autohealer::config::Config;
use std::collections::BTreeSet;

#[test]
fn every_manifest_parses_and_names_itself() {
    let docs = common::manifests();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|(_, d)| d["kind"].as_str()).collect();
    for k in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Secret", "DaemonSet"] {
        assert!(kinds.contains(k), "missing a {k}");
    }
    for (file, d) in &docs {
        assert!(d["apiVersion"].is_string() && d["metadata"]["name"].is_string(), "{file}: {d}");
        assert!(d["metadata"].get("namespace").is_none(), "{file}: namespaced objects take the namespace of kubectl apply -n");
    }
}

#[test]
fn the_daemonset_is_hardened_and_runs_on_control_planes() {
    let docs = common::manifests();
    let ds = &docs.iter().find(|(_, d)| d["kind"] == "DaemonSet").unwrap().1;
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"]["memory"].is_string());
    let terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"].to_string();
    let tolerations = pod["tolerations"].to_string();
    for label in ["node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"] {
        assert!(terms.contains(label) && tolerations.contains(label), "{label}");
    }
    let secret_in_configmap = docs.iter().filter(|(_, d)| d["kind"] == "ConfigMap").any(|(_, d)| {
        let text = d["data"]["config.yaml"].as_str().unwrap_or_default();
        text.lines().any(|l| {
            let l = l.trim_start();
            (l.starts_with("password:") || l.starts_with("application-credential-secret:")) && !l.contains("-file")
        })
    });
    assert!(!secret_in_configmap, "credentials live in the Secret, never in the ConfigMap");
}

#[test]
fn the_configmap_holds_a_valid_config() {
    let docs = common::manifests();
    let cm = &docs.iter().find(|(_, d)| d["kind"] == "ConfigMap").unwrap().1;
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    Config::load_str(text, &Registries::builtin()).unwrap_or_else(|e| panic!("manifests/config.yaml: {e}"));
}

/// The calls the code makes, by call site. The binary end-to-end tests check that the
/// calls the healer really made are all granted; this test checks nothing more is.
const NEEDED: &[(&str, &str, &str)] = &[
    ("", "nodes", "get"),                        // end_drain re-reads the node after a conflict
    ("", "nodes", "list"),                       // the node reflector; autohealer plan
    ("", "nodes", "watch"),                      // the node reflector
    ("", "nodes", "patch"),                      // ledger, cordon, uncordon, probe timestamps
    ("", "pods", "list"),                        // drain: pods on the node
    ("", "pods", "get"),                         // drain: waiting for evicted pods
    ("", "pods", "delete"),                      // drain.force-delete-after-timeout
    ("", "pods/eviction", "create"),             // drain
    ("events.k8s.io", "events", "create"),       // Events
    ("events.k8s.io", "events", "patch"),        // repeated Events
    ("coordination.k8s.io", "leases", "list"),   // leader Lease watch; Heartbeat
    ("coordination.k8s.io", "leases", "watch"),  // leader Lease watch; Heartbeat
    ("coordination.k8s.io", "leases", "get"),    // the fleet state, read by a new leader
    ("coordination.k8s.io", "leases", "create"), // leader election: the first replica
    ("coordination.k8s.io", "leases", "patch"),  // leader election (take, renew, release); fleet state
    ("", "configmaps", "list"),                  // pause and reload watch; evidence pruning
    ("", "configmaps", "watch"),                 // pause and reload watch
    ("", "configmaps", "create"),                // evidence
    ("", "configmaps", "delete"),                // evidence pruning
];

#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    let granted = common::granted();
    let needed: BTreeSet<(String, String, String)> = NEEDED.iter().map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(extra.is_empty(), "granted but never used: {extra:?}");
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
}

#[test]
fn alerts_and_dashboard_use_only_metrics_the_healer_exports() {
    use autohealer_core::metrics::*;
    let m = autohealer_core::Metrics::new();
    // Families are exported once they have a series; give each one.
    m.nodes.get_or_create(&RoleLabels { role: "worker".into() }).set(1);
    m.unhealthy_nodes.get_or_create(&CheckLabels { role: "worker".into(), check: "NodeCondition".into() }).set(0);
    m.repair("worker", "reboot", "started");
    m.repair_duration.get_or_create(&ActionLabels { role: "worker".into(), action: "reboot".into() }).observe(1.0);
    m.cloud_requests.get_or_create(&CloudLabels { service: "nova".into(), code: "202".into() }).inc();
    m.held.get_or_create(&HeldLabels { role: "worker".into(), gate: "rate".into() }).set(0);
    m.detected("worker", "medium");
    m.notification("slack", "sent");
    m.node_update(false);
    let exported: BTreeSet<String> =
        m.encode().lines().filter_map(|l| l.strip_prefix("# TYPE ").and_then(|t| t.split_whitespace().next()).map(String::from)).collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/monitoring");
    let mut seen = 0;
    for file in ["alerts.yaml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        } else {
            serde_saphyr::from_str::<serde_json::Value>(&text).unwrap();
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("autohealer_") {
            let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[i + name.len()..];
            let base =
                ["_total", "_bucket", "_sum", "_count"].iter().fold(name.clone(), |n, s| n.strip_suffix(s).map(String::from).unwrap_or(n));
            assert!(exported.contains(&base), "{file} uses {name}, which the healer does not export (exported: {exported:?})");
            seen += 1;
        }
    }
    assert!(seen >= 10);
}
