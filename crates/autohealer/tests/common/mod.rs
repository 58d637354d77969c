//! Reading the shipped manifests, for the tests that hold the code to them.

use serde_json::Value;
use std::collections::BTreeSet;

pub fn manifests() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests");
    let mut out = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            out.push((f.file_name().unwrap().to_string_lossy().to_string(), d));
        }
    }
    out
}

/// Every (apiGroup, resource, verb) the ClusterRole and Role grant.
pub fn granted() -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (_, d) in manifests() {
        if !matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in d["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        out.insert((g.as_str().unwrap().to_string(), r.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()));
                    }
                }
            }
        }
    }
    out
}

#[allow(dead_code)] // used by the binary tests, not by every test crate
/// The RBAC (group, resource, verb) of a call the fake apiserver recorded as
/// (verb, `plural[.group][/sub]`).
pub fn as_rbac(verb: &str, key: &str) -> (String, String, String) {
    let (res, sub) = key.split_once('/').map_or((key, None), |(r, s)| (r, Some(s)));
    let (plural, group) = res.split_once('.').map_or((res, ""), |(p, g)| (p, g));
    let resource = match sub {
        Some(s) => format!("{plural}/{s}"),
        None => plural.to_string(),
    };
    (group.to_string(), resource, verb.to_string())
}
