//! Bad input: a corpus of broken configs, each rejected with the key path named, and
//! properties over the config loader and what the healer reads from Kubernetes
//! (Node objects, the ledger and history annotations): random or truncated input
//! never panics; it is rejected with a clear error or judged "unsure, do not repair".

use autohealer::Registries;
use autohealer::config::Config;
use autohealer_core::ledger::{Ledger, parse_history};
use autohealer_core::observe::{Observations, evaluate};
use proptest::prelude::*;

/// Every file in `tests/data/bad-configs/` starts with `# path: KEY.PATH` (and may
/// have `# says: TEXT` lines): loading it must fail at that path, saying that.
#[test]
fn every_broken_config_in_the_corpus_is_rejected_at_its_key() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bad-configs");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus shrank: {}", files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text.lines().find_map(|l| l.strip_prefix("# path: ")).unwrap_or_else(|| panic!("{}: no '# path:' line", f.display()));
        let says: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# says: ")).collect();
        let e = match Config::load_str(&text, &Registries::builtin()) {
            Ok(_) => panic!("{} was accepted", f.display()),
            Err(e) => e,
        };
        assert_eq!(e.path, want.trim(), "{}: {e}", f.display());
        for s in says {
            assert!(e.to_string().contains(s), "{}: the error does not say {s:?}: {e}", f.display());
        }
    }
}

/// Every file in `tests/data/secret-configs/` holds a secret (a password, token,
/// webhook URL, routing key) in a broken config and names it with `# secret: VALUE`
/// lines: the error names `# path:` (and `# says:`), and shows no secret, since
/// config errors reach logs, `validate` output and `ConfigRejected` Events.
#[test]
fn no_config_error_shows_a_secret_value() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/secret-configs");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus shrank: {}", files.len());
    let mut wrong = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text.lines().find_map(|l| l.strip_prefix("# path: ")).unwrap_or_else(|| panic!("{name}: no '# path:' line"));
        let secrets: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# secret: ")).collect();
        assert!(!secrets.is_empty(), "{name}: no '# secret:' line");
        let says: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# says: ")).collect();
        // The comment lines hold the secret too; a parser that echoes the source must not see them.
        let body: String = text.lines().filter(|l| !l.starts_with("# ")).map(|l| format!("{l}\n")).collect();
        let e = match Config::load_str(&body, &Registries::builtin()) {
            Ok(_) => {
                wrong.push(format!("{name}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        if e.path != want.trim() {
            wrong.push(format!("{name}: not at {want}: {e}"));
        }
        let shown = format!("{e} {e:?}");
        if let Some(s) = secrets.iter().find(|s| shown.contains(**s)) {
            wrong.push(format!("{name}: shows {s:?}: {e}"));
        }
        if let Some(s) = says.iter().find(|s| !e.to_string().contains(**s)) {
            wrong.push(format!("{name}: does not say {s:?}: {e}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `AUTOHEALER_*` variables carry what a Secret supplies: a bad value is named by its
/// variable and key, never shown.
#[test]
fn no_config_error_shows_an_environment_override() {
    use autohealer::config::EnvOverrides;
    let file = "cluster-name: c\nopenstack:\n  auth-url: https://k/v3\n  user-id: u\n";
    let mut wrong = Vec::new();
    for (var, value, secret, path) in [
        ("AUTOHEALER_OPENSTACK", "{password: 12345678}", "12345678", "openstack.password"),
        ("AUTOHEALER_OPENSTACK", "{password: \"unterminated-s3cr3t}", "unterminated-s3cr3t", "openstack"),
        ("AUTOHEALER_OPENSTACK", "{user-id: u, pasword: typo-s3cr3t}", "typo-s3cr3t", "openstack.pasword"),
        ("AUTOHEALER_DRY_RUN", "s3cr3t-not-a-bool", "s3cr3t-not-a-bool", "dry-run"),
        ("AUTOHEALER_HEALTHCHECK", "{master: [{params: {token: s3cr3t-env-token}}]}", "s3cr3t-env-token", "healthcheck.master[0]"),
    ] {
        let env = EnvOverrides::from_vars([(var.to_string(), value.to_string())]);
        let e = match Config::load_str_with(file, &Registries::builtin(), &env) {
            Ok(_) => {
                wrong.push(format!("{var}={value}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        let shown = format!("{e} {e:?}");
        if e.path != path {
            wrong.push(format!("{var}={value}: not at {path}: {e}"));
        }
        if shown.contains(secret) {
            wrong.push(format!("{var}={value}: shows the value: {e}"));
        }
        if !shown.contains(var) {
            wrong.push(format!("{var}={value}: does not name the variable: {e}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const VALID: &str = "cluster-name: c\nmonitor-interval: 30s\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 1m\nmax-unhealthy:\n  worker: 40%\nnotifications:\n  sinks:\n    - type: slack\n      url-env: X\nopenstack:\n  auth-url: https://k/v3\n  user-id: u\n  password: p\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_loads_or_names_where_it_is_wrong(text in ".{0,300}") {
        if let Err(e) = Config::load_str(&text, &Registries::builtin()) {
            prop_assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
        }
    }

    #[test]
    fn a_truncated_or_mangled_config_loads_or_names_where_it_is_wrong(cut in 0usize..VALID.len(), at in 0usize..VALID.len(), junk in "[ :\\-\\[\\]{}#'\"a-z0-9%]{0,8}") {
        let mut text = VALID[..cut].to_string();
        let at = at.min(text.len());
        text.insert_str(at, &junk);
        if let Err(e) = Config::load_str(&text, &Registries::builtin()) {
            prop_assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
        }
    }

    #[test]
    fn any_ledger_or_history_annotation_is_read_or_judged_unreadable(text in ".{0,200}", cut in 0usize..400) {
        let record = r#"{"action":"reboot","attempt":1,"started":"2026-01-01T00:00:00Z","firstStarted":"2026-01-01T00:00:00Z","reason":"r","cordoned":true,"by":"a"}"#;
        let truncated = &record[..cut.min(record.len())];
        for v in [text.as_str(), truncated] {
            match Ledger::parse(Some(v)) {
                Ledger::Unreadable(why) => prop_assert!(why.contains("autohealer.dev/repair")),
                Ledger::None | Ledger::Record(_) => {}
            }
            let _ = parse_history(Some(v));
        }
    }

    #[test]
    fn any_node_object_is_judged_without_panicking(node in node_json()) {
        let Ok(n) = serde_json::from_value::<autohealer_healthcheck::NodeView>(node) else { return Ok(()) };
        let loaded = Config::load_str(VALID, &Registries::builtin()).unwrap();
        let mut obs = Observations::default();
        let now = "2026-06-01T00:00:00Z".parse().unwrap();
        let (state, _) = evaluate(&n, &loaded.checks, &mut obs, now, &autohealer_core::observe::LeaseRenewals::default());
        let _ = autohealer_core::node::info(&n);
        prop_assert_eq!(state.name, n.metadata.name.unwrap_or_default());
    }
}

/// Node-shaped JSON with random conditions, annotations, labels and addresses.
fn node_json() -> impl Strategy<Value = serde_json::Value> {
    let s =
        || prop::sample::select(vec!["", "True", "False", "Unknown", "Ready", "x", "2026-01-01T00:00:00Z", "garbage", "{\"action\":1}"]);
    let cond = (s(), s(), s()).prop_map(|(t, st, at)| serde_json::json!({"type": t, "status": st, "lastTransitionTime": at}));
    let conds = prop::collection::vec(cond, 0..4);
    let annotations = prop::collection::btree_map(
        prop::sample::select(vec![
            "autohealer.dev/repair",
            "autohealer.dev/repair-history",
            "autohealer.dev/skip",
            "autohealer.dev/remediate",
            "autohealing.openstack.org/unhealthy-timestamp",
        ]),
        ".{0,40}",
        0..4,
    );
    let labels = prop::collection::btree_map(
        prop::sample::select(vec![
            "node-role.kubernetes.io/control-plane",
            "node-role.kubernetes.io/master",
            "topology.kubernetes.io/zone",
        ]),
        "[a-z]{0,5}",
        0..3,
    );
    (conds, annotations, labels, s(), ".{0,30}").prop_map(|(conds, annotations, labels, created, provider)| {
        serde_json::json!({
            "metadata": {"name": "n", "uid": "u", "annotations": annotations, "labels": labels, "creationTimestamp": if created.starts_with("20") { serde_json::json!(created) } else { serde_json::Value::Null }},
            "spec": {"providerID": provider},
            "status": {"conditions": conds, "addresses": [{"type": "InternalIP", "address": provider}], "nodeInfo": {"bootID": provider, "machineID": "", "systemUUID": provider, "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}},
        })
    })
}
