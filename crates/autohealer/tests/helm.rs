//! The Helm chart, rendered by a small renderer of the template subset it uses
//! (`.Values.*`, `.Release.Name`, `.Release.Namespace`, `toYaml ... | nindent N`, and
//! `{{-` trimming), since `helm template` is not available offline. The rendered chart
//! must parse, hold a valid config, and grant exactly what `manifests/rbac.yaml` grants.

mod common;

use autohealer::config::Config;
use autohealer_healthcheck::Registry;
use serde_json::Value;
use std::collections::BTreeSet;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/autohealer");

fn lookup<'a>(values: &'a Value, path: &str) -> &'a Value {
    let path = path.strip_prefix(".Values.").unwrap_or_else(|| panic!("unsupported reference {path}"));
    path.split('.').fold(values, |v, k| &v[k])
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => panic!("a template refers to a value that is not set"),
        other => other.to_string(),
    }
}

fn render(template: &str, values: &Value, name: &str, namespace: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("an unclosed {{");
        let mut expr = &after[..end];
        if let Some(e) = expr.strip_prefix('-') {
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            expr = e;
        }
        let trim_after = expr.ends_with('-');
        let expr = expr.trim_end_matches('-').trim();
        let text = match expr {
            ".Release.Name" => name.to_string(),
            ".Release.Namespace" => namespace.to_string(),
            e if e.starts_with("toYaml ") => {
                let (what, indent) = e["toYaml ".len()..].split_once("| nindent ").expect("toYaml ... | nindent N");
                let n: usize = indent.trim().parse().unwrap();
                let yaml = serde_saphyr::to_string(lookup(values, what.trim())).unwrap();
                yaml.trim_end().lines().map(|l| format!("\n{}{l}", " ".repeat(n))).collect()
            }
            e => scalar(lookup(values, e)),
        };
        out.push_str(&text);
        rest = &after[end + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    out
}

fn rendered() -> Vec<Value> {
    let values: Value = serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap()).unwrap();
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(format!("{CHART}/templates")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        let text = render(&std::fs::read_to_string(&f).unwrap(), &values, "autohealer", "kube-system");
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
}

#[test]
fn the_chart_renders_to_what_the_plain_manifests_install() {
    let docs = rendered();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "DaemonSet"] {
        assert!(kinds.contains(k), "the chart renders no {k}");
    }
    let mut granted = BTreeSet::new();
    for d in docs.iter().filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role"))) {
        for rule in d["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        granted.insert((g.as_str().unwrap().to_string(), r.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()));
                    }
                }
            }
        }
    }
    assert_eq!(granted, common::granted(), "the chart's RBAC and manifests/rbac.yaml grant the same");

    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let loaded = Config::load_str(text, &Registry::with_builtins()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(loaded.config.pause_configmap, "kube-system/autohealer-config");
    assert_eq!(loaded.checks.master.len(), 2);

    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/example/autohealer:0.1.0");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["ports"][0]["containerPort"], 9102);
}
