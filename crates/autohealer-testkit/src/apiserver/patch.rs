//! Patch semantics of the real apiserver: strategic merge patch with merge keys for
//! the lists the healer touches, and server-side apply's field ownership, which is
//! what makes two Lease holders conflict instead of silently overwriting each other.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// Lists merged element-by-element in a strategic merge patch, by path and merge key:
/// only those with a `patchStrategy:"merge"` tag, as staging/src/k8s.io/api/core/v1/types.go does.
/// Every other list (`spec.taints` and `spec.tolerations` among them: `+listType=atomic`,
/// no patch strategy) is replaced whole, so a patch that sends one taint drops the others.
const MERGE_KEYS: &[(&str, &str)] = &[
    ("status.conditions", "type"),
    ("status.addresses", "type"),
    ("metadata.ownerReferences", "uid"),
    ("spec.containers", "name"),
    ("spec.initContainers", "name"),
    ("spec.volumes", "name"),
];

/// Primitive lists that a strategic merge patch merges as sets.
const MERGE_SETS: &[&str] = &["metadata.finalizers"];

pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    smp(target, patch, "")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn smp(target: &mut Value, patch: &Value, path: &str) -> Result<(), String> {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = pmap.clone();
        m.remove("$patch");
        *target = Value::Object(m);
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tmap = target.as_object_mut().expect("made an object above");
    for (k, pv) in pmap {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tmap.get_mut(field), pv.as_array()) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        let child = join(path, k);
        if pv.is_null() {
            tmap.remove(k);
            continue;
        }
        if let Some(arr) = pv.as_array() {
            if let Some((_, key)) = MERGE_KEYS.iter().find(|(p, _)| *p == child) {
                let cur = tmap.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                merge_list(cur.as_array_mut().expect("array"), arr, key, &child)?;
                continue;
            }
            if MERGE_SETS.contains(&child.as_str()) {
                let cur = tmap.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                if let Some(list) = cur.as_array_mut() {
                    for v in arr {
                        if !list.contains(v) {
                            list.push(v.clone());
                        }
                    }
                }
                continue;
            }
            tmap.insert(k.clone(), pv.clone());
            continue;
        }
        if pv.is_object() {
            let cur = tmap.entry(k.clone()).or_insert(Value::Null);
            smp(cur, pv, &child)?;
            continue;
        }
        tmap.insert(k.clone(), pv.clone());
    }
    Ok(())
}

fn merge_list(cur: &mut Vec<Value>, patch: &[Value], key: &str, path: &str) -> Result<(), String> {
    for item in patch {
        let Some(kv) = item.get(key) else {
            return Err(format!("map: {item} does not contain declared merge key: {key} (in {path})"));
        };
        let pos = cur.iter().position(|e| e.get(key) == Some(kv));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                cur.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => smp(&mut cur[i], item, path)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                smp(&mut fresh, item, path)?;
                cur.push(fresh);
            }
        }
    }
    Ok(())
}

/// A leaf field path such as `["spec", "holderIdentity"]`.
pub type FieldPath = Vec<String>;

/// Fields that belong to the object's identity, never to a field manager.
fn ignored(path: &[String]) -> bool {
    match path {
        [a] => a == "apiVersion" || a == "kind",
        [m, f, ..] if m == "metadata" => {
            matches!(f.as_str(), "name" | "namespace" | "resourceVersion" | "managedFields" | "uid" | "creationTimestamp" | "generation")
        }
        _ => false,
    }
}

pub fn leaf_paths(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out.retain(|p| !ignored(p));
    out
}

fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(k.clone());
                walk(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Null => {}
        _ if !prefix.is_empty() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// One `metadata.managedFields` entry, with its fields as a set of leaf paths.
#[derive(Debug, Clone)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<FieldPath>,
}

pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    let list = obj.pointer("/metadata/managedFields").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                fields_from_v1(f, &mut Vec::new(), &mut fields);
            }
            ManagedEntry { manager: s("manager"), operation: s("operation"), api_version: s("apiVersion"), time: s("time"), fields }
        })
        .collect()
}

fn fields_from_v1(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<FieldPath>) {
    let Some(m) = v.as_object() else { return };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, c) in children {
        prefix.push(k[2..].to_string());
        fields_from_v1(c, prefix, out);
        prefix.pop();
    }
}

fn fields_to_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for seg in path {
            cur = cur
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_to_v1(&e.fields),
            })
        })
        .collect();
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Records an Update-operation write by `manager`: it now owns what it changed, and
/// nobody owns what it removed.
pub fn record_update(old: &Value, new: &mut Value, manager: &str, api_version: &str, now: &str) {
    let mut entries = read_managed(old);
    let after = leaf_paths(new);
    let changed: BTreeSet<FieldPath> = after.iter().filter(|p| get_path(old, p) != get_path(new, p)).cloned().collect();
    for e in &mut entries {
        e.fields.retain(|p| after.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.manager == manager && e.operation == "Update") {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

/// A server-side apply conflict: the fields another manager owns with a different value.
#[derive(Debug)]
pub struct ApplyConflict(pub Vec<(String, String)>);

impl ApplyConflict {
    pub fn message(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(m, f)| format!("conflict with \"{m}\": {f}")).collect();
        format!("Apply failed with {} conflict{}: {}", self.0.len(), if self.0.len() == 1 { "" } else { "s" }, parts.join(", "))
    }
}

/// Applies `applied` as `manager` onto `current` (or a new object when `None`).
pub fn apply(current: Option<&Value>, applied: &Value, manager: &str, force: bool, now: &str) -> Result<Value, ApplyConflict> {
    let mut obj = current.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut entries = current.map(read_managed).unwrap_or_default();
    let paths = leaf_paths(applied);
    let mut conflicts = Vec::new();
    for p in &paths {
        if get_path(&obj, p) == get_path(applied, p) {
            continue;
        }
        for e in entries.iter().filter(|e| e.manager != manager && e.fields.contains(p)) {
            conflicts.push((e.manager.clone(), format!(".{}", p.join("."))));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyConflict(conflicts));
    }
    for e in entries.iter_mut().filter(|e| e.manager != manager) {
        if force {
            e.fields.retain(|p| !paths.contains(p));
        }
    }
    let previous: BTreeSet<FieldPath> =
        entries.iter().filter(|e| e.manager == manager && e.operation == "Apply").flat_map(|e| e.fields.iter().cloned()).collect();
    let owned_by_others: BTreeSet<FieldPath> =
        entries.iter().filter(|e| !(e.manager == manager && e.operation == "Apply")).flat_map(|e| e.fields.iter().cloned()).collect();
    for p in previous.difference(&paths) {
        if !owned_by_others.contains(p) {
            remove_path(&mut obj, p);
        }
    }
    json_patch::merge(&mut obj, applied);
    entries.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    for e in entries.iter_mut() {
        if e.manager == manager {
            e.fields.retain(|p| !paths.contains(p));
        }
    }
    entries.push(ManagedEntry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: applied.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
        time: now.to_string(),
        fields: paths,
    });
    write_managed(&mut obj, &entries);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_merge_by_type() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}});
        strategic_merge(&mut node, &json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletDown"}]}}))
            .unwrap();
        let conds = node["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0], json!({"type": "Ready", "status": "False", "reason": "KubeletDown"}));
        assert_eq!(conds[1]["type"], "DiskPressure");
    }

    #[test]
    fn taints_are_replaced_whole_and_conditions_take_the_delete_directive() {
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        strategic_merge(&mut node, &json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}})).unwrap();
        assert_eq!(node["spec"]["taints"], json!([{"key": "b", "effect": "NoExecute"}]));
        let mut node = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "True"}]}});
        strategic_merge(&mut node, &json!({"status": {"conditions": [{"type": "X", "$patch": "delete"}]}})).unwrap();
        assert_eq!(node["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
    }

    #[test]
    fn apply_conflicts_with_other_owner_unless_forced() {
        let a = apply(None, &json!({"apiVersion": "v1", "spec": {"holder": "a"}}), "ma", false, "t").unwrap();
        let err = apply(Some(&a), &json!({"spec": {"holder": "b"}}), "mb", false, "t").unwrap_err();
        assert!(err.message().contains("conflict with \"ma\": .spec.holder"), "{}", err.message());
        // Same value: no conflict, shared ownership.
        assert!(apply(Some(&a), &json!({"spec": {"holder": "a"}}), "mb", false, "t").is_ok());
        let b = apply(Some(&a), &json!({"spec": {"holder": "b"}}), "mb", true, "t").unwrap();
        assert_eq!(b["spec"]["holder"], "b");
        let owners = read_managed(&b);
        assert!(owners.iter().all(|e| e.manager == "mb" || e.fields.is_empty()));
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let a = apply(None, &json!({"spec": {"holder": "a", "renew": "1"}}), "ma", false, "t").unwrap();
        let mut b = a.clone();
        b["spec"]["holder"] = Value::Null;
        b["spec"].as_object_mut().unwrap().remove("holder");
        record_update(&a, &mut b, "mb", "v1", "t");
        let after = apply(Some(&b), &json!({"spec": {"holder": "b"}}), "mb", false, "t").unwrap();
        assert_eq!(after["spec"]["holder"], "b");
    }
}
