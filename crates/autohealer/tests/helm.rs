//! The Helm chart, rendered by real Helm (v4, the `helm-python-sdk` wheel, through
//! `.ci/helm_check.py --json`) for the default values and each
//! `charts/autohealer/examples/*.yaml`: every config.yaml it renders is one the real
//! binary's `autohealer validate` accepts, wired to the release. `.ci/helm_check.py`
//! itself checks lint, the schema, the objects and the RBAC; `.ci/run` runs both.
//! And `values.schema.json` knows exactly the config keys the healer knows.
//!
//! The Python with the SDK: `$HELM_TEST_PYTHON` (`.ci/run` sets it to its tools venv),
//! else `python3`. Without the SDK the rendering test says SKIPPED (and fails in CI).

use autohealer::Registries;
use autohealer::config::Config;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn python_with_helm() -> Option<String> {
    let python = std::env::var("HELM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_sdk = Command::new(&python).args(["-c", "import helm_python, yaml"]).output().is_ok_and(|o| o.status.success());
    match has_sdk {
        true => Some(python),
        false if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must render the chart with real Helm: {python} cannot import helm_python (.ci/run installs helm-python-sdk)")
        }
        false => {
            eprintln!(
                "SKIPPED: {python} has no helm-python-sdk (`python3 -m venv /tmp/autohealer-tools-venv && /tmp/autohealer-tools-venv/bin/pip install helm-python-sdk kubernetes-validate`, then HELM_TEST_PYTHON=/tmp/autohealer-tools-venv/bin/python)"
            );
            None
        }
    }
}

struct Render {
    label: String,
    values: Option<String>,
    release: String,
    namespace: String,
    objects: Vec<Value>,
}

impl Render {
    fn one(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "{}: one {kind}", self.label);
        found[0]
    }

    fn example(&self) -> Option<&str> {
        self.values.as_deref().and_then(|v| Path::new(v).file_name()).and_then(|f| f.to_str())
    }
}

fn renders(python: &str) -> Vec<Render> {
    let o = Command::new(python).arg(format!("{ROOT}/.ci/helm_check.py")).arg("--json").output().unwrap();
    assert!(o.status.success(), "helm_check.py --json: {}", String::from_utf8_lossy(&o.stderr));
    let all: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    all.into_iter()
        .map(|r| Render {
            label: r["label"].as_str().unwrap().into(),
            values: r["values"].as_str().map(String::from),
            release: r["release"].as_str().unwrap().into(),
            namespace: r["namespace"].as_str().unwrap().into(),
            objects: r["objects"].as_array().unwrap().clone(),
        })
        .collect()
}

/// `autohealer validate --config FILE` with the real binary: its exit status and stdout.
fn validate(file: &Path) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autohealer"));
    cmd.args(["validate", "--config"]).arg(file);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTOHEALER_")) {
        cmd.env_remove(k);
    }
    let o = cmd.output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn every_config_the_chart_renders_is_valid_and_wired_to_the_release() {
    let Some(python) = python_with_helm() else { return };
    let renders = renders(&python);
    let examples: BTreeSet<&str> = renders.iter().filter_map(|r| r.example()).collect();
    assert!(renders.iter().any(|r| r.values.is_none()) && examples.len() >= 2, "the defaults and the examples are rendered: {examples:?}");
    let dir = std::env::temp_dir().join(format!("autohealer-helm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, r) in renders.iter().enumerate() {
        let cm = r.one("ConfigMap");
        let text = cm["data"]["config.yaml"].as_str().unwrap_or_else(|| panic!("{}: no config.yaml", r.label));
        let file: PathBuf = dir.join(format!("config-{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        let (ok, out, err) = validate(&file);
        assert!(ok && out.contains("is valid"), "{}: autohealer validate refuses the rendered config: {err}\n{text}", r.label);

        // What the healer will do with it: its pause switch, Lease, evidence and admin
        // port are the release's, and the pod probes and exposes that port.
        let loaded = Config::load_str(text, &Registries::builtin()).unwrap();
        let c = &loaded.config;
        assert_eq!(
            c.pause_configmap.as_ref().map(ToString::to_string),
            Some(format!("{}/{}", r.namespace, cm["metadata"]["name"].as_str().unwrap())),
            "{}",
            r.label
        );
        assert_eq!(
            (c.leader_election.lease_name.as_str(), c.leader_election.lease_namespace.as_str()),
            (r.release.as_str(), r.namespace.as_str())
        );
        assert_eq!(c.evidence.namespace, r.namespace, "{}", r.label);
        let container = &r.one("DaemonSet")["spec"]["template"]["spec"]["containers"][0];
        let port = container["ports"][0]["containerPort"].as_u64().unwrap();
        assert_eq!(c.admin.listen.to_string(), format!("0.0.0.0:{port}"), "{}: the healer listens where the probes look", r.label);
        assert_eq!(container["args"][2], "/etc/autohealer/config/config.yaml");

        match r.example() {
            None => {
                assert!(out.contains("master: Endpoint (unhealthy after 3m), NodeCondition (unhealthy after 3m)"), "{}: {out}", r.label);
                assert!(out.contains("dry-run: false") && out.contains("notifications: none"), "{}: {out}", r.label);
                assert_eq!(port, 9102);
            }
            Some("nova-password.yaml") => {
                // The defaults set to null are gone: no application credential, no masters.
                assert!(out.contains("cluster-name: -") && out.contains("[monitoring disabled]"), "{}: {out}", r.label);
                assert!(out.contains("worker: NodeCondition (unhealthy after 10m)"), "{}: {out}", r.label);
                assert!(!text.contains("application-credential"), "{}: {text}", r.label);
                assert_eq!(port, 9200);
                assert_eq!(container["image"], "registry.example.com/platform/autohealer:0.1.0-rc1");
                assert_eq!(
                    r.one("DaemonSet")["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"],
                    "autohealer-nova-credentials"
                );
            }
            Some("magnum-tuned.yaml") => {
                assert!(out.contains("dry-run: true") && out.contains("monitor-interval: 15s"), "{}: {out}", r.label);
                assert!(out.contains("notifications: oncall (slack), severity high and above"), "{}: {out}", r.label);
                assert!(
                    out.contains("worker: NodeCondition (unhealthy after 5m), NodeCondition (unhealthy after 15m)"),
                    "{}: {out}",
                    r.label
                );
                // Kept from the user's leader-election and evidence, beside the chart's keys.
                assert_eq!(c.leader_election.lease_duration, std::time::Duration::from_secs(30));
                assert_eq!(c.evidence.keep_per_node, 5);
            }
            Some(other) => panic!("{other}: a new example; say here what it must render to"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str().and_then(|r| r.strip_prefix("#/definitions/")) {
        Some(name) => &schema["definitions"][name],
        None => node,
    }
}

#[test]
fn the_values_schema_knows_exactly_the_config_keys_the_healer_knows() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/charts/autohealer/values.schema.json")).unwrap()).unwrap();
    let config = &schema["properties"]["config"];
    let keys: BTreeSet<&str> = autohealer::config::key_paths(&Registries::builtin()).into_iter().collect();
    let groups: BTreeSet<String> = keys.iter().filter_map(|k| k.rsplit_once('.').map(|(g, _)| g.to_string())).collect();
    // Every key of the schema is one the healer reads (a misspelt one would pass Helm and
    // then stop the healer); every group refuses keys it does not list.
    let mut seen = BTreeSet::new();
    let mut stack = vec![(String::new(), config)];
    while let Some((path, node)) = stack.pop() {
        assert_eq!(node["additionalProperties"], false, "values.schema.json: config{path} must refuse unknown keys");
        for (k, sub) in node["properties"].as_object().unwrap() {
            let p = if path.is_empty() { k.clone() } else { format!("{}.{k}", &path[1..]) };
            if keys.contains(p.as_str()) {
                seen.insert(p);
            } else if groups.contains(&p) && *sub == false {
                // A group the chart sets whole (admin).
                seen.extend(keys.iter().filter(|k| k.starts_with(&format!("{p}."))).map(|k| k.to_string()));
            } else if groups.contains(&p) {
                stack.push((format!(".{p}"), resolve(&schema, sub)));
            } else {
                panic!("values.schema.json has config key {p}, which the healer does not know (autohealer config-reference)");
            }
        }
    }
    let missing: Vec<_> = keys.iter().filter(|k| !seen.contains(**k)).collect();
    assert!(missing.is_empty(), "values.schema.json lacks config keys the healer knows: {missing:?}");
}
