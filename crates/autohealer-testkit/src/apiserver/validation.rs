//! What a real kube-apiserver refuses before it stores a write: the typed decoding of
//! the body (unknown and duplicate fields, wrong types) under the request's
//! `fieldValidation`, and the validation of each type the healer writes (object
//! metadata, Node taints, Leases, ConfigMaps, Events). A fake that stored whatever it
//! was sent would let a healer pass tests with writes a real server answers with 400
//! or 422.

use super::resources::Resource;
use super::store::ApiError;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// `metav1.FieldValidation*`: what the server does with unknown and duplicate fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a `Warning` header for each: the default when a request names
    /// none, as `fieldValidation()` in staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go does.
    #[default]
    Warn,
    /// Refused, naming every such field.
    Strict,
}

impl FieldValidation {
    /// The `fieldValidation` query parameter; an unknown value is refused as
    /// `ValidatePatchOptions` in staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go does.
    pub fn parse(value: Option<&str>, options_kind: &str) -> Result<Self, ApiError> {
        match value {
            None | Some("") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(invalid(
                "meta.k8s.io",
                options_kind,
                "",
                vec![FieldError::not_supported("fieldValidation", other, &["Ignore", "Strict", "Warn"])],
            )),
        }
    }
}

/// One `field.Error`, printed as `field.Error.Error()` and `ErrorBody()` do in
/// staging/src/k8s.io/apimachinery/pkg/util/validation/field/errors.go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The `metav1.CauseType`, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    pub field: String,
    /// The bad value as Go's `%q`/`%v` prints it, `None` for the types that omit it.
    pub value: Option<String>,
    pub detail: String,
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueRequired", field: field.into(), value: None, detail: detail.into() }
    }

    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueInvalid", field: field.into(), value: Some(quote(value)), detail: detail.into() }
    }

    /// An invalid number, printed bare as Go prints an int.
    pub fn invalid_int(field: impl Into<String>, value: i64, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueInvalid", field: field.into(), value: Some(value.to_string()), detail: detail.into() }
    }

    /// An invalid value printed verbatim (a Go `%#v`).
    pub fn invalid_raw(field: impl Into<String>, value: String, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueInvalid", field: field.into(), value: Some(value), detail: detail.into() }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueForbidden", field: field.into(), value: None, detail: detail.into() }
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self { reason: "FieldValueTooLong", field: field.into(), value: None, detail: format!("must have at most {max} bytes") }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, valid: &[&str]) -> Self {
        let valid: Vec<String> = valid.iter().map(|v| quote(v)).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            value: Some(quote(value)),
            detail: format!("supported values: {}", valid.join(", ")),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: String, detail: impl Into<String>) -> Self {
        Self { reason: "FieldValueDuplicate", field: field.into(), value: Some(value), detail: detail.into() }
    }

    fn type_string(&self) -> &'static str {
        match self.reason {
            "FieldValueRequired" => "Required value",
            "FieldValueForbidden" => "Forbidden",
            "FieldValueTooLong" => "Too long",
            "FieldValueNotSupported" => "Unsupported value",
            "FieldValueDuplicate" => "Duplicate value",
            _ => "Invalid value",
        }
    }

    pub fn body(&self) -> String {
        let mut s = match &self.value {
            Some(v) => format!("{}: {v}", self.type_string()),
            None => self.type_string().to_string(),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// `apierrors.NewInvalid`: 422 with one cause per error, the message the errors'
/// aggregate (one error bare, several in brackets, repeats dropped), as
/// staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go does.
pub fn invalid(group: &str, kind: &str, name: &str, errs: Vec<FieldError>) -> ApiError {
    let mut seen = BTreeSet::new();
    let errs: Vec<FieldError> = errs.into_iter().filter(|e| seen.insert(e.to_string())).collect();
    let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
    let message = match errs.as_slice() {
        [] => format!("{qualified} {} is invalid", quote(name)),
        [one] => format!("{qualified} {} is invalid: {one}", quote(name)),
        many => {
            let parts: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("{qualified} {} is invalid: [{}]", quote(name), parts.join(", "))
        }
    };
    let causes: Vec<Value> = errs.iter().map(|e| json!({"reason": e.reason, "message": e.body(), "field": e.field})).collect();
    let mut details = Map::new();
    if !name.is_empty() {
        details.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        details.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        details.insert("kind".into(), json!(kind));
    }
    details.insert("causes".into(), Value::Array(causes));
    ApiError::new(422, "Invalid", message).with_details(Value::Object(details))
}

/// An object's validation errors as the 422 its type's strategy answers.
pub fn refuse(res: &Resource, name: &str, errs: Vec<FieldError>) -> Result<(), ApiError> {
    if errs.is_empty() { Ok(()) } else { Err(invalid(res.group, res.kind, name, errs)) }
}

// ---- Typed decoding: unknown fields, wrong types ----

/// The object as the server's typed decoder leaves it (unknown fields dropped), and
/// the unknown fields' paths. A body whose fields have the wrong type is refused
/// whatever the directive. A null is Go's zero value for any field, so it is neither
/// checked nor reported (the typed round trip cannot tell a known null from an
/// unknown one), and is left as it was: the real server prints some zero values
/// (`metav1.Time`) as null too.
pub fn decode_typed(res: &Resource, obj: &Value) -> Result<(Value, Vec<String>), String> {
    decode_typed_owned(res, obj.clone()).map_err(|(e, _)| e)
}

/// [`decode_typed`] of an object the caller gives up (handed back with the error).
pub fn decode_typed_owned(res: &Resource, obj: Value) -> Result<(Value, Vec<String>), (String, Value)> {
    let typed = if has_nulls(&obj) {
        let mut without_nulls = obj.clone();
        strip_nulls(&mut without_nulls);
        roundtrip(res, &without_nulls)
    } else {
        roundtrip(res, &obj)
    };
    let typed = match typed {
        Ok(t) => t,
        Err(e) => return Err((e, obj)),
    };
    let mut clean = obj;
    let mut unknown = Vec::new();
    prune(&mut clean, &typed, &mut Vec::new(), &mut unknown);
    Ok((clean, unknown))
}

fn has_nulls(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().any(has_nulls),
        Value::Array(a) => a.iter().any(has_nulls),
        _ => false,
    }
}

/// Through the k8s-openapi type, which (like Go's decoder) ignores what it does not
/// know and refuses a value of the wrong type.
fn roundtrip(res: &Resource, v: &Value) -> Result<Value, String> {
    use k8s_openapi::api;
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
        // Deserialized from the borrowed value: the same decoder as `from_value`, no copy.
        let t = T::deserialize(v).map_err(|e| e.to_string())?;
        serde_json::to_value(t).map_err(|e| e.to_string())
    }
    match (res.group, res.kind) {
        ("", "Node") => through::<api::core::v1::Node>(v),
        ("", "Pod") => through::<api::core::v1::Pod>(v),
        ("", "Namespace") => through::<api::core::v1::Namespace>(v),
        ("", "ConfigMap") => through::<api::core::v1::ConfigMap>(v),
        ("", "Event") => through::<api::core::v1::Event>(v),
        ("events.k8s.io", "Event") => through::<api::events::v1::Event>(v),
        ("coordination.k8s.io", "Lease") => through::<api::coordination::v1::Lease>(v),
        ("policy", "PodDisruptionBudget") => through::<api::policy::v1::PodDisruptionBudget>(v),
        _ => Ok(v.clone()),
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// One step of the path `prune` is at: a key, or an index in a list.
enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[0].c`, the form the unknown fields are reported in.
fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn prune(v: &mut Value, typed: &Value, path: &mut Vec<Seg>, unknown: &mut Vec<String>) {
    match (v, typed) {
        (Value::Object(m), Value::Object(t)) => {
            // Reported in key order, nested ones where they stand; removed afterwards.
            let mut gone = Vec::new();
            for (k, c) in m.iter_mut() {
                match t.get(k) {
                    Some(tc) if c.is_object() || c.is_array() => {
                        path.push(Seg::Key(k.clone()));
                        prune(c, tc, path, unknown);
                        path.pop();
                    }
                    Some(_) => {}
                    None if c.is_null() => {}
                    None => {
                        path.push(Seg::Key(k.clone()));
                        unknown.push(path_text(path));
                        path.pop();
                        gone.push(k.clone());
                    }
                }
            }
            for k in gone {
                m.remove(&k);
            }
        }
        (Value::Array(a), Value::Array(t)) => {
            for (i, (e, te)) in a.iter_mut().zip(t).enumerate() {
                if e.is_object() || e.is_array() {
                    path.push(Seg::Index(i));
                    prune(e, te, path, unknown);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// `kjson.UnmarshalStrict`'s duplicate-field check on a raw JSON body: the paths of
/// keys that appear twice in one object (the last one wins, as in Go).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Walk { path: String::new(), out: &mut out }.deserialize(&mut de);
    out
}

struct Walk<'a> {
    path: String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let seed = Walk { path: format!("{}[{i}]", self.path), out: &mut *self.out };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let child = if self.path.is_empty() { k.clone() } else { format!("{}.{k}", self.path) };
            if !seen.insert(k) {
                self.out.push(child.clone());
            }
            map.next_value_seed(Walk { path: child, out: &mut *self.out })?;
        }
        Ok(())
    }
}

// ---- Formats, as staging/src/k8s.io/apimachinery/pkg/api/validate/content/kube.go does ----

const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `TotalAnnotationSizeLimitB` of staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// `core.MaxSecretSize`, the limit on a ConfigMap's data too.
pub const MAX_CONFIG_MAP_SIZE: usize = 1024 * 1024;
/// `NoteLengthLimit` of pkg/apis/core/validation/events.go.
pub const EVENT_NOTE_LIMIT: usize = 1024;
const EVENT_FIELD_LIMIT: usize = 128;

fn label_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 bytes".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if !s.split('.').all(label_ok) {
        errs.push(SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// `IsLabelKey` (what Go calls a qualified name).
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(is_dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {LABEL_KEY_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 bytes".to_string());
    }
    if !label_name_ok(name) {
        errs.push(format!("name part {LABEL_KEY_MSG}"));
    }
    errs
}

pub fn is_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 bytes".to_string());
    }
    if !s.is_empty() && !label_name_ok(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Labels, annotations and finalizers, checked on every create and update of every
/// type, as `validateObjectMetaAccessorWithOptsCommon` in
/// staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go does.
pub fn object_meta(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = obj.get("metadata");
    for (k, v) in string_map(meta.and_then(|m| m.get("labels"))) {
        errs.extend(is_qualified_name(&k).into_iter().map(|m| FieldError::invalid("metadata.labels", &k, m)));
        errs.extend(is_label_value(&v).into_iter().map(|m| FieldError::invalid("metadata.labels", &v, m)));
    }
    let annotations = string_map(meta.and_then(|m| m.get("annotations")));
    for k in annotations.keys() {
        errs.extend(is_qualified_name(&k.to_lowercase()).into_iter().map(|m| FieldError::invalid("metadata.annotations", k, m)));
    }
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long("metadata.annotations", TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    for f in finalizers(obj) {
        errs.extend(is_qualified_name(&f).into_iter().map(|m| FieldError::invalid("metadata.finalizers", &f, m)));
    }
    errs
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// What `ValidateObjectMetaAccessorUpdate` adds on an update: a deleted object takes
/// no new finalizers (they would hold it forever).
pub fn object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = object_meta(new);
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let before: BTreeSet<String> = finalizers(old).into_iter().collect();
        let extra: BTreeSet<String> = finalizers(new).into_iter().filter(|f| !before.contains(f)).collect();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| quote(f)).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
    errs
}

/// The rules of one type beyond its metadata, on create (`old` is `None`) or update.
pub fn type_rules(res: &Resource, new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match (res.group, res.kind) {
        ("", "Node") => node_taints(new),
        ("coordination.k8s.io", "Lease") => lease_spec(new),
        ("", "ConfigMap") => config_map(new),
        ("events.k8s.io", "Event") => {
            let ev = EventView::events_v1(new);
            match old {
                None => event_create(&ev),
                Some(o) => event_update(&ev, &EventView::events_v1(o)),
            }
        }
        ("", "Event") => legacy_event(&EventView::core_v1(new)),
        _ => Vec::new(),
    }
}

/// `validateNodeTaints` in pkg/apis/core/validation/validation.go: label-like keys and
/// values, a known effect, and one taint per key and effect.
fn node_taints(node: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, t) in taints.iter().enumerate() {
        let at = format!("spec.taints[{i}]");
        let key = str_at(t, "/key");
        let value = str_at(t, "/value");
        let effect = str_at(t, "/effect");
        errs.extend(is_qualified_name(key).into_iter().map(|m| FieldError::invalid(format!("{at}.key"), key, m)));
        let bad_value = is_label_value(value);
        if !bad_value.is_empty() {
            errs.push(FieldError::invalid(format!("{at}.value"), value, bad_value.join(";")));
        }
        if effect.is_empty() {
            errs.push(FieldError::required(format!("{at}.effect"), ""));
        } else if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            errs.push(FieldError::not_supported(format!("{at}.effect"), effect, &["NoExecute", "NoSchedule", "PreferNoSchedule"]));
        }
        if !seen.insert((key.to_string(), effect.to_string())) {
            errs.push(FieldError::duplicate(
                at,
                format!("core.Taint{{Key:{}, Value:{}, Effect:{}}}", quote(key), quote(value), quote(effect)),
                "taints must be unique by key and effect pair",
            ));
        }
    }
    errs
}

/// `ValidateLeaseSpec` in pkg/apis/coordination/validation/validation.go.
fn lease_spec(lease: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = lease.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(FieldError::invalid_int("spec.leaseDurationSeconds", d, "must be greater than 0"));
    }
    if let Some(t) = spec.get("leaseTransitions").and_then(Value::as_i64)
        && t < 0
    {
        errs.push(FieldError::invalid_int("spec.leaseTransitions", t, "must be greater than or equal to 0"));
    }
    let strategy = spec.get("strategy").and_then(Value::as_str);
    if let Some(s) = strategy {
        if !s.contains('/') {
            if s != "OldestEmulationVersion" {
                errs.push(FieldError::not_supported("spec.strategy.strategy", s, &["OldestEmulationVersion"]));
            }
        } else {
            errs.extend(is_qualified_name(s).into_iter().map(|m| FieldError::invalid("spec.strategy.strategy", s, m)));
        }
    }
    if spec.get("preferredHolder").and_then(Value::as_str).is_some_and(|p| !p.is_empty()) && strategy.is_none_or(str::is_empty) {
        errs.push(FieldError::forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"));
    }
    errs
}

/// `ValidateConfigMap` in pkg/apis/core/validation/validation.go: config keys, no key
/// in both `data` and `binaryData`, and 1 MiB in all.
fn config_map(cm: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let key_ok =
        |k: &str| !k.is_empty() && k.len() <= 253 && k.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let mut total = 0;
    let data = cm.get("data").and_then(Value::as_object);
    let binary = cm.get("binaryData").and_then(Value::as_object);
    for (field, map) in [("data", data), ("binaryData", binary)] {
        for (k, v) in map.into_iter().flatten() {
            if !key_ok(k) || k == "." || k == ".." || k.starts_with("..") {
                errs.push(FieldError::invalid(field, k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            }
            if field == "binaryData" && data.is_some_and(|d| d.contains_key(k)) {
                errs.push(FieldError::invalid(field, k, "duplicate of key present in data"));
            }
            // binaryData travels base64-encoded; its size is that of the bytes.
            total += if field == "data" { v.as_str().unwrap_or_default().len() } else { v.as_str().unwrap_or_default().len() / 4 * 3 };
        }
    }
    if total > MAX_CONFIG_MAP_SIZE {
        errs.push(FieldError::too_long("", MAX_CONFIG_MAP_SIZE));
    }
    errs
}

/// An Event in the fields of the internal `core.Event` that pkg/apis/core/validation/events.go
/// checks, read from either API's spelling.
#[derive(Debug, Clone, PartialEq)]
struct EventView {
    namespace: String,
    involved_namespace: String,
    involved: Value,
    event_time: Option<jiff::Timestamp>,
    reporting_controller: String,
    reporting_instance: String,
    action: String,
    reason: String,
    message: String,
    type_: String,
    first_timestamp: Option<jiff::Timestamp>,
    last_timestamp: Option<jiff::Timestamp>,
    count: i64,
    source: Value,
    series: Option<(i64, Option<jiff::Timestamp>)>,
    related: Value,
}

/// A time as Go's `metav1.Time`/`MicroTime` holds it: unset when missing or empty,
/// microseconds at most.
fn time_at(v: &Value, key: &str) -> Option<jiff::Timestamp> {
    let s = v.get(key)?.as_str().filter(|s| !s.is_empty())?;
    let t: jiff::Timestamp = s.parse().ok()?;
    jiff::Timestamp::from_microsecond(t.as_microsecond()).ok()
}

fn source_set(s: &Value) -> bool {
    ["component", "host"].iter().any(|k| s.get(k).and_then(Value::as_str).is_some_and(|v| !v.is_empty()))
}

impl EventView {
    fn events_v1(e: &Value) -> Self {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let regarding = e.get("regarding").cloned().unwrap_or_else(|| json!({}));
        Self {
            namespace: str_at(e, "/metadata/namespace").to_string(),
            involved_namespace: str_at(&regarding, "/namespace").to_string(),
            involved: regarding,
            event_time: time_at(e, "eventTime"),
            reporting_controller: s("reportingController"),
            reporting_instance: s("reportingInstance"),
            action: s("action"),
            reason: s("reason"),
            message: s("note"),
            type_: s("type"),
            first_timestamp: time_at(e, "deprecatedFirstTimestamp"),
            last_timestamp: time_at(e, "deprecatedLastTimestamp"),
            count: e.get("deprecatedCount").and_then(Value::as_i64).unwrap_or(0),
            source: e.get("deprecatedSource").cloned().unwrap_or_else(|| json!({})),
            series: e
                .get("series")
                .filter(|s| s.is_object())
                .map(|s| (s.get("count").and_then(Value::as_i64).unwrap_or(0), time_at(s, "lastObservedTime"))),
            related: e.get("related").cloned().unwrap_or(Value::Null),
        }
    }

    fn core_v1(e: &Value) -> Self {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let involved = e.get("involvedObject").cloned().unwrap_or_else(|| json!({}));
        Self {
            namespace: str_at(e, "/metadata/namespace").to_string(),
            involved_namespace: str_at(&involved, "/namespace").to_string(),
            involved,
            event_time: time_at(e, "eventTime"),
            reporting_controller: s("reportingComponent"),
            reporting_instance: s("reportingInstance"),
            action: s("action"),
            reason: s("reason"),
            message: s("message"),
            type_: s("type"),
            first_timestamp: time_at(e, "firstTimestamp"),
            last_timestamp: time_at(e, "lastTimestamp"),
            count: e.get("count").and_then(Value::as_i64).unwrap_or(0),
            source: e.get("source").cloned().unwrap_or_else(|| json!({})),
            series: e
                .get("series")
                .filter(|s| s.is_object())
                .map(|s| (s.get("count").and_then(Value::as_i64).unwrap_or(0), time_at(s, "lastObservedTime"))),
            related: e.get("related").cloned().unwrap_or(Value::Null),
        }
    }
}

/// `legacyValidateEvent` in pkg/apis/core/validation/events.go: what every Event,
/// of either API, must be. The field names are the internal type's, as the real
/// server prints them.
fn legacy_event(e: &EventView) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns_mismatch = || FieldError::invalid("involvedObject.namespace", &e.involved_namespace, "does not match event.namespace");
    if e.event_time.is_none() {
        if e.involved_namespace.is_empty() {
            if !e.namespace.is_empty() && e.namespace != "default" {
                errs.push(ns_mismatch());
            }
        } else if e.namespace != e.involved_namespace {
            errs.push(ns_mismatch());
        }
    } else {
        if e.involved_namespace.is_empty() && e.namespace != "default" && e.namespace != "kube-system" {
            errs.push(ns_mismatch());
        }
        if e.reporting_controller.is_empty() {
            errs.push(FieldError::required("reportingController", ""));
        }
        errs.extend(
            is_qualified_name(&e.reporting_controller)
                .into_iter()
                .map(|m| FieldError::invalid("reportingController", &e.reporting_controller, m)),
        );
        for (field, value) in [("reportingInstance", &e.reporting_instance), ("action", &e.action), ("reason", &e.reason)] {
            if value.is_empty() {
                errs.push(FieldError::required(field, ""));
            }
            if value.len() > EVENT_FIELD_LIMIT {
                errs.push(FieldError::invalid(field, "", format!("can have at most {EVENT_FIELD_LIMIT} characters")));
            }
        }
        if e.message.len() > EVENT_NOTE_LIMIT {
            errs.push(FieldError::invalid("message", "", format!("can have at most {EVENT_NOTE_LIMIT} characters")));
        }
    }
    errs.extend(is_dns1123_subdomain(&e.namespace).into_iter().map(|m| FieldError::invalid("namespace", &e.namespace, m)));
    errs
}

fn event_series(e: &EventView) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some((count, last)) = e.series {
        if count < 2 {
            errs.push(FieldError::invalid("series.count", "", "should be at least 2"));
        }
        if last.is_none() {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    errs
}

/// `ValidateEventCreate` for events.k8s.io/v1: the legacy rules and the strict ones.
fn event_create(e: &EventView) -> Vec<FieldError> {
    let mut errs = legacy_event(e);
    errs.extend(event_series(e));
    if e.event_time.is_none() {
        errs.push(FieldError::required("eventTime", ""));
    }
    if e.type_ != "Normal" && e.type_ != "Warning" {
        errs.push(FieldError::invalid("type", "", format!("has invalid value: {}", e.type_)));
    }
    for (field, set) in [
        ("firstTimestamp", e.first_timestamp.is_some()),
        ("lastTimestamp", e.last_timestamp.is_some()),
        ("count", e.count != 0),
        ("source", source_set(&e.source)),
    ] {
        if set {
            errs.push(FieldError::invalid(field, "", "needs to be unset"));
        }
    }
    errs
}

/// `ValidateEventUpdate` for events.k8s.io/v1: a changed series must be a valid one,
/// and everything that says what happened is immutable.
fn event_update(new: &EventView, old: &EventView) -> Vec<FieldError> {
    let mut errs = legacy_event(new);
    if new.series != old.series {
        errs.extend(event_series(new));
    }
    let t = |v: &Option<jiff::Timestamp>| v.map(|t| t.to_string()).unwrap_or_default();
    let same = |a: &Value, b: &Value| {
        a == b
            || (a.as_object().is_some_and(|m| m.is_empty()) && b.is_null())
            || (b.as_object().is_some_and(|m| m.is_empty()) && a.is_null())
    };
    let checks: [(&str, bool, String); 13] = [
        ("involvedObject", same(&new.involved, &old.involved), new.involved.to_string()),
        ("reason", new.reason == old.reason, quote(&new.reason)),
        ("message", new.message == old.message, quote(&new.message)),
        ("source", same(&new.source, &old.source), new.source.to_string()),
        ("firstTimestamp", new.first_timestamp == old.first_timestamp, t(&new.first_timestamp)),
        ("lastTimestamp", new.last_timestamp == old.last_timestamp, t(&new.last_timestamp)),
        ("count", new.count == old.count, new.count.to_string()),
        ("type", new.type_ == old.type_, quote(&new.type_)),
        ("eventTime", new.event_time == old.event_time, t(&new.event_time)),
        ("action", new.action == old.action, quote(&new.action)),
        ("related", same(&new.related, &old.related), new.related.to_string()),
        ("reportingController", new.reporting_controller == old.reporting_controller, quote(&new.reporting_controller)),
        ("reportingInstance", new.reporting_instance == old.reporting_instance, quote(&new.reporting_instance)),
    ];
    for (field, unchanged, value) in checks {
        if !unchanged {
            errs.push(FieldError::invalid_raw(field, value, "field is immutable"));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("autohealer.dev/repair-history").is_empty());
        assert!(is_qualified_name("node.kubernetes.io/out-of-service").is_empty());
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(!is_qualified_name("Autohealer.dev/x").is_empty(), "the prefix is a lowercase subdomain");
        assert!(!is_qualified_name(&"n".repeat(64)).is_empty());
        assert!(is_label_value("").is_empty());
        assert!(!is_label_value("ends-with-dash-").is_empty());
        assert!(!is_label_value(&"v".repeat(64)).is_empty());
    }

    #[test]
    fn duplicate_keys_are_found_with_their_path() {
        let body = br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"taints": [{"key": "k", "key": "l"}]}}"#;
        assert_eq!(duplicate_fields(body), ["metadata.name", "spec.taints[0].key"]);
        assert!(duplicate_fields(br#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_empty());
    }

    #[test]
    fn unknown_fields_are_dropped_and_named() {
        let res = super::super::resources::find("", "v1", "nodes").unwrap();
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"a": "b"}},
            "spec": {"unschedulable": true, "bogus": 1, "taints": [{"key": "k", "effect": "NoSchedule", "colour": "red"}]}});
        let (clean, unknown) = decode_typed(res, &node).unwrap();
        assert_eq!(unknown, ["spec.bogus", "spec.taints[0].colour"]);
        assert_eq!(clean["spec"], json!({"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]}));
        assert!(decode_typed(res, &json!({"spec": {"unschedulable": "yes"}})).is_err(), "a wrong type is refused");
    }
}
