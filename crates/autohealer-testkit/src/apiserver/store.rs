//! The object store behind the fake apiserver: one global increasing
//! resourceVersion, a bounded history of changes for watches, and the write rules
//! (preconditions, status subresource, field ownership) of the real apiserver.
//!
//! Objects are kept as the JSON the server sends (a `serde_json::Value` costs several
//! times its JSON in memory: every small map is a B-tree node), encoded once when they
//! are written: a LIST or a watch event sends those bytes as they are, to every
//! client, and a read parses them.

use super::patch;
use super::resources::{RESOURCES, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::validation::{self, FieldValidation};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// An error answered as a `kind: Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: Value::Null }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", res.key())).with_details(status_details(res, name))
    }

    pub fn conflict(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.key()
            ),
        )
        .with_details(status_details(res, name))
    }

    /// A failed DeleteOptions precondition. The real server names the Kind here, not
    /// the resource, because `rest.BeforeDelete` builds the error from the object's kind.
    pub fn precondition_conflict(res: &Resource, name: &str, why: String) -> Self {
        let qualified = if res.group.is_empty() { res.kind.to_string() } else { format!("{}.{}", res.kind, res.group) };
        let mut details = json!({"name": name, "kind": res.kind});
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}")).with_details(details)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // A Status the server builds by hand (e.g. the eviction's "more than one
        // PodDisruptionBudget") has no reason, and `omitempty` drops the field.
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// `metav1.StatusDetails` of an error about one object; Go's `omitempty` drops the
/// core group's empty name, so a client comparing details sees what a real server sends.
fn status_details(res: &Resource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A committed write and the `Warning`s the real server would answer it with.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Arc<Value>,
    pub warnings: Vec<String>,
}

/// Which handler decoded a body: it decides how a decoding failure is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Update,
    Patch,
    Apply,
}

/// How a write's body is decoded: the request's `fieldValidation`, and the fields its
/// raw JSON held twice (found before parsing kept only the last of each).
#[derive(Debug, Clone, Default)]
pub struct Decoding {
    pub directive: FieldValidation,
    pub duplicates: Vec<String>,
}

impl Decoding {
    fn ignore() -> Self {
        Self { directive: FieldValidation::Ignore, duplicates: Vec::new() }
    }

    /// The typed decoding of a create, update or patch result, answered as
    /// staging/src/k8s.io/apiserver/pkg/endpoints/handlers/{create,update,patch}.go do:
    /// a wrong type always fails; unknown and duplicate fields fail under Strict and
    /// are warned about under Warn (the object keeps none of the unknown ones either way).
    fn decode(&self, res: &Resource, obj: Value, verb: Verb, warnings: &mut Vec<String>) -> ApiResult<Value> {
        let decode_failure = |detail: String, patched: &Value| match verb {
            Verb::Patch => validation::invalid("", "", "", vec![validation::FieldError::invalid("patch", &patched.to_string(), detail)]),
            _ => ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: {detail}",
                kind = res.kind,
                version = res.version
            )),
        };
        // A strict refusal quotes the object as it came.
        let as_sent = (self.directive == FieldValidation::Strict).then(|| obj.clone());
        let (clean, unknown) = validation::decode_typed_owned(res, obj).map_err(|(e, obj)| decode_failure(e, &obj))?;
        if self.directive == FieldValidation::Ignore {
            return Ok(clean);
        }
        let strict: Vec<String> = self
            .duplicates
            .iter()
            .map(|d| format!("duplicate field {d:?}"))
            .chain(unknown.iter().map(|u| format!("unknown field {u:?}")))
            .collect();
        if strict.is_empty() {
            return Ok(clean);
        }
        if self.directive == FieldValidation::Strict {
            return Err(decode_failure(format!("strict decoding error: {}", strict.join(", ")), as_sent.as_ref().unwrap_or(&Value::Null)));
        }
        warnings.extend(strict);
        Ok(clean)
    }

    /// What server-side apply refuses before it merges, as `structuredMergeManager.Apply`
    /// in staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/structuredmerge.go
    /// does: another version, managedFields in the body, a field the schema does not
    /// declare (whatever the directive: the typed patch cannot be built); duplicates
    /// follow the directive.
    fn check_apply(&self, res: &Resource, ns: &str, name: &str, body: &Value, warnings: &mut Vec<String>) -> ApiResult<()> {
        let version = body.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        if version != res.api_version() {
            return Err(ApiError::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
                res.api_version()
            )));
        }
        if body.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let mut typed = body.clone();
        typed["kind"] = json!(res.kind);
        let (_, unknown) =
            validation::decode_typed(res, &typed).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        if let Some(first) = unknown.first() {
            let at = if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") };
            // Not a Status error: `ErrorToAPIStatus` answers it as a reasonless 500.
            return Err(ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({at}; {}, Kind={}): .{first}: field not declared in schema",
                    if res.group.is_empty() { format!("/{}", res.version) } else { res.api_version() },
                    res.kind
                ),
            ));
        }
        if !self.duplicates.is_empty() && self.directive != FieldValidation::Ignore {
            let dups: Vec<String> = self.duplicates.iter().map(|d| format!("duplicate field {d:?}")).collect();
            if self.directive == FieldValidation::Strict {
                return Err(ApiError::bad_request(format!("error strict decoding patch: {}", dups.join(", "))));
            }
            warnings.extend(dups);
        }
        Ok(())
    }
}

/// The parts of `metav1.DeleteOptions` the fake honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    pub fn grace(seconds: i64) -> Self {
        Self { grace_period_seconds: Some(seconds), ..Default::default() }
    }

    /// Reads a `DeleteOptions` body (or an Eviction's `deleteOptions`); a field of the
    /// wrong type is refused as the real server's decoder refuses it.
    pub fn from_value(v: &Value) -> ApiResult<Self> {
        if v.is_null() {
            return Ok(Self::default());
        }
        if !v.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format: DeleteOptions must be an object"));
        }
        let grace = match v.get("gracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(g) => Some(g.as_i64().ok_or_else(|| ApiError::bad_request("gracePeriodSeconds must be an integer"))?),
        };
        let pre = v.get("preconditions").filter(|p| !p.is_null());
        let field = |f: &str| -> ApiResult<Option<String>> {
            match pre.and_then(|p| p.get(f)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::bad_request(format!("preconditions.{f} must be a string"))),
            }
        };
        Ok(Self { grace_period_seconds: grace, uid: field("uid")?, resource_version: field("resourceVersion")? })
    }
}

/// kube-controller-manager's default `--terminated-pod-gc-threshold`.
pub const TERMINATED_POD_GC_THRESHOLD: usize = 12_500;

/// The grace period a pod gets when neither the request nor its spec names one: the
/// real apiserver defaults `spec.terminationGracePeriodSeconds` to this at creation.
const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

fn is_pod(res: &Resource) -> bool {
    res.group.is_empty() && res.plural == "pods"
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn bump_generation(obj: &mut Value) {
    if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64).filter(|g| *g > 0) {
        obj["metadata"]["generation"] = json!(g + 1);
    }
}

/// `podutil.UpdatePodCondition`: replaces the condition of the same type, keeping its
/// `lastTransitionTime` unless the status changes; false when nothing changed.
pub fn set_pod_condition(pod: &mut Value, mut cond: Value) -> bool {
    let now = now_rfc3339();
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    if !pod["status"].get("conditions").is_some_and(Value::is_array) {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conds) = pod["status"]["conditions"].as_array_mut() else { return false };
    match conds.iter_mut().find(|c| c.get("type") == cond.get("type")) {
        Some(old) => {
            let ltt = if old.get("status") == cond.get("status") { old.get("lastTransitionTime").cloned() } else { None };
            cond["lastTransitionTime"] = ltt.unwrap_or_else(|| json!(now));
            if old.get("lastProbeTime").is_some() && cond.get("lastProbeTime").is_none() {
                cond["lastProbeTime"] = old["lastProbeTime"].clone();
            }
            let changed = *old != cond;
            *old = cond;
            changed
        }
        None => {
            cond["lastTransitionTime"] = json!(now);
            conds.push(cond);
            true
        }
    }
}

/// The changes a new watch must replay, and the receiver of the ones after them.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: &'static Resource,
    pub namespace: String,
    pub kind: EventType,
    /// The object after the change (for a deletion, its last state), as JSON.
    pub object: Bytes,
    /// The object before the change, as JSON, so a selector-filtered watch can turn a
    /// change that leaves its selection into DELETED, as the real apiserver does.
    pub prev: Option<Bytes>,
}

impl Change {
    pub fn object_value(&self) -> Value {
        decode(&self.object)
    }

    pub fn prev_value(&self) -> Option<Value> {
        self.prev.as_deref().map(decode)
    }
}

/// An object as the server sends it.
fn encode(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A stored object read back (it was encoded by [`encode`], so it parses).
fn decode(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

type Key = (String, String);

/// How many changes a watch may fall behind before it is ended (as the real
/// apiserver ends a watcher whose buffer is full).
const WATCH_BUFFER: usize = 65536;

struct Inner {
    rv: u64,
    objects: HashMap<usize, BTreeMap<Key, Bytes>>,
    history: VecDeque<Arc<Change>>,
    window: usize,
    /// Changes at or below this resourceVersion are no longer in the history.
    compacted: u64,
    /// Live changes by (type, namespace): a watch of all namespaces takes `None`, so
    /// a watch sees only its own type's changes, not every write to the store.
    watchers: HashMap<(usize, Option<String>), broadcast::Sender<Arc<Change>>>,
}

pub struct Store {
    inner: Mutex<Inner>,
}

/// How a caller wants an existing object changed.
pub enum Mutation {
    Replace(Value),
    MergePatch(Value),
    JsonPatch(Value),
    StrategicPatch(Value),
    Apply { body: Value, force: bool },
}

pub struct ListResult {
    /// The items as JSON, as the server sends them.
    pub items: Vec<Bytes>,
    pub rv: u64,
    pub cont: Option<String>,
    pub remaining: Option<usize>,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Whether two versions are the same but for the fields the server maintains
/// (`managedFields`, `resourceVersion`): a write that changes nothing else is a no-op.
fn same_content(a: &Value, b: &Value) -> bool {
    const MAINTAINED: [&str; 2] = ["managedFields", "resourceVersion"];
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    let (am, bm) = (a.get("metadata"), b.get("metadata"));
    let others_equal = a.len() - usize::from(am.is_some()) == b.len() - usize::from(bm.is_some())
        && a.iter().filter(|(k, _)| *k != "metadata").all(|(k, v)| b.get(k) == Some(v));
    if !others_equal {
        return false;
    }
    match (am, bm) {
        (None, None) => true,
        (Some(Value::Object(am)), Some(Value::Object(bm))) => {
            let kept = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| !MAINTAINED.contains(&k.as_str())).count();
            kept(am) == kept(bm) && am.iter().filter(|(k, _)| !MAINTAINED.contains(&k.as_str())).all(|(k, v)| bm.get(k) == Some(v))
        }
        (Some(am), Some(bm)) => am == bm,
        _ => false,
    }
}

impl Store {
    pub fn new(window: usize) -> Self {
        let store = Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                window,
                compacted: 0,
                watchers: HashMap::new(),
            }),
        };
        let ns = RESOURCES.iter().find(|r| r.plural == "namespaces").expect("namespaces is served");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}});
            store.create(ns, "", obj, "kube-apiserver").expect("fresh store accepts the system namespaces");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn set_window(&self, window: usize) {
        let mut g = self.lock();
        g.window = window;
        Self::trim(&mut g);
    }

    /// Forgets the whole change history, as an etcd compaction does: every watch or
    /// list from an older resourceVersion now gets 410 Gone.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.history.clear();
        g.compacted = g.rv;
    }

    fn trim(g: &mut Inner) {
        while g.history.len() > g.window {
            if let Some(c) = g.history.pop_front() {
                g.compacted = c.rv;
            }
        }
    }

    fn commit(&self, g: &mut Inner, res: &'static Resource, key: Key, new: Option<Value>, prev: Option<Arc<Value>>) -> Arc<Value> {
        g.rv += 1;
        let rv = g.rv;
        let map = g.objects.entry(slot(res)).or_default();
        // The version before, as stored (it is the `prev` the caller read).
        let prev_json = prev.as_deref().map(|p| map.get(&key).cloned().unwrap_or_else(|| encode(p)));
        let (kind, obj, json) = match new {
            Some(mut v) => {
                v["metadata"]["resourceVersion"] = json!(rv.to_string());
                let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
                let json = encode(&v);
                map.insert(key.clone(), json.clone());
                (kind, Arc::new(v), json)
            }
            None => {
                map.remove(&key);
                let mut last = prev.as_deref().cloned().unwrap_or(Value::Null);
                last["metadata"]["resourceVersion"] = json!(rv.to_string());
                let json = encode(&last);
                (EventType::Deleted, Arc::new(last), json)
            }
        };
        let change = Arc::new(Change { rv, resource: res, namespace: key.0, kind, object: json, prev: prev_json });
        g.history.push_back(change.clone());
        Self::trim(g);
        let s = slot(res);
        for k in [(s, None), (s, Some(change.namespace.clone()))] {
            let unwatched = match g.watchers.get(&k) {
                Some(tx) if tx.receiver_count() > 0 => {
                    let _ = tx.send(change.clone());
                    false
                }
                Some(_) => true,
                None => false,
            };
            if unwatched {
                g.watchers.remove(&k);
            }
        }
        obj
    }

    fn stored(&self, res: &'static Resource, ns: &str, name: &str) -> Option<Bytes> {
        let g = self.lock();
        g.objects.get(&slot(res)).and_then(|m| m.get(&(ns.to_string(), name.to_string()))).cloned()
    }

    pub fn get(&self, res: &'static Resource, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.stored(res, ns, name).map(|b| Arc::new(decode(&b))).ok_or_else(|| ApiError::not_found(res, name))
    }

    /// The object as the server sends it (JSON), without parsing it.
    pub fn get_encoded(&self, res: &'static Resource, ns: &str, name: &str) -> ApiResult<Bytes> {
        self.stored(res, ns, name).ok_or_else(|| ApiError::not_found(res, name))
    }

    fn check_rv(g: &Inner, rv: Option<&str>) -> ApiResult<()> {
        if let Some(rv) = rv.filter(|r| !r.is_empty() && *r != "0") {
            let n: u64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if n < g.compacted {
                return Err(ApiError::expired(format!("too old resource version: {n} ({})", g.compacted + 1)));
            }
            if n > g.rv {
                return Err(ApiError::new(504, "Timeout", format!("Too large resource version: {n}, current: {}", g.rv))
                    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn list(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        cont: Option<&str>,
        rv: Option<&str>,
    ) -> ApiResult<ListResult> {
        let g = self.lock();
        let (start_after, list_rv) = match cont {
            Some(c) if !c.is_empty() => {
                let (rv_s, key) = decode_continue(c).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
                if rv_s < g.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (Some(key), rv_s)
            }
            _ => {
                Self::check_rv(&g, rv)?;
                (None, g.rv)
            }
        };
        let empty = BTreeMap::new();
        let all = g.objects.get(&slot(res)).unwrap_or(&empty);
        let mut items = Vec::new();
        let mut cont_out = None;
        let mut remaining = None;
        // A page starts right after the last key of the one before.
        let from = match &start_after {
            Some(k) => std::ops::Bound::Excluded(k),
            None => std::ops::Bound::Unbounded,
        };
        let unfiltered = labels.is_empty() && fields.is_empty();
        let selected = |v: &Bytes| {
            if unfiltered {
                return true;
            }
            let v = decode(v);
            labels.matches(v.pointer("/metadata/labels").and_then(Value::as_object)) && fields.matches(&v)
        };
        let mut iter = all
            .range::<Key, _>((from, std::ops::Bound::Unbounded))
            .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
            .filter(|(_, v)| selected(v))
            .peekable();
        while let Some((k, v)) = iter.next() {
            items.push(v.clone());
            if limit.is_some_and(|l| l > 0 && items.len() >= l) && iter.peek().is_some() {
                cont_out = Some(encode_continue(list_rv, k));
                remaining = Some(iter.count());
                break;
            }
        }
        Ok(ListResult { items, rv: list_rv, cont: cont_out, remaining })
    }

    /// Subscribes to changes of `res` after `from`; the backlog and the live receiver
    /// are taken under one lock so no change falls between them.
    pub fn watch(&self, res: &'static Resource, ns: Option<&str>, from: Option<&str>) -> ApiResult<WatchStart> {
        let mut g = self.lock();
        let mut backlog = Vec::new();
        match from.filter(|r| !r.is_empty() && *r != "0") {
            Some(rv) => {
                let n: u64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
                if n < g.compacted {
                    return Err(ApiError::expired(format!("too old resource version: {n} ({})", g.compacted + 1)));
                }
                // The history is in resourceVersion order.
                let first = g.history.partition_point(|c| c.rv <= n);
                backlog.extend(
                    g.history.range(first..).filter(|c| c.resource == res).filter(|c| ns.is_none_or(|x| x == c.namespace)).cloned(),
                );
            }
            None => {
                if let Some(all) = g.objects.get(&slot(res)) {
                    for ((o_ns, _), v) in all {
                        if ns.is_none_or(|x| x == o_ns) {
                            backlog.push(Arc::new(Change {
                                rv: g.rv,
                                resource: res,
                                namespace: o_ns.clone(),
                                kind: EventType::Added,
                                object: v.clone(),
                                prev: None,
                            }));
                        }
                    }
                }
            }
        }
        let rx = g.watchers.entry((slot(res), ns.map(str::to_string))).or_insert_with(|| broadcast::channel(WATCH_BUFFER).0).subscribe();
        Ok((backlog, rx))
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        let nsr = RESOURCES.iter().find(|r| r.plural == "namespaces").expect("namespaces is served");
        self.get(nsr, "", ns).is_ok()
    }

    /// A create as a client without `fieldValidation` makes it: unknown fields dropped.
    pub fn create(&self, res: &'static Resource, ns: &str, obj: Value, manager: &str) -> ApiResult<Arc<Value>> {
        self.create_with(res, ns, obj, manager, &Decoding::default()).map(|w| w.object)
    }

    /// A create decoded and validated as the real server does it, with the warnings
    /// it would send back.
    pub fn create_with(&self, res: &'static Resource, ns: &str, obj: Value, manager: &str, decoding: &Decoding) -> ApiResult<Written> {
        let mut warnings = Vec::new();
        let object = self.create_owned(res, ns, obj, manager, None, decoding, &mut warnings)?;
        Ok(Written { object, warnings })
    }

    /// Creates with the given `managedFields` (server-side apply) or, without them,
    /// records the creator as the owner of every field (an Update operation).
    #[allow(clippy::too_many_arguments)]
    fn create_owned(
        &self,
        res: &'static Resource,
        ns: &str,
        mut obj: Value,
        manager: &str,
        managed: Option<Value>,
        decoding: &Decoding,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Arc<Value>> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != res.kind
        {
            return Err(ApiError::bad_request(format!("the kind {kind:?} does not match the resource {}", res.key())));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(prefix) = meta_str(&obj, "generateName")
        {
            name = format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
        }
        if !valid_name(&name) {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{} {name:?} is invalid: metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                    res.kind
                ),
            ));
        }
        if res.namespaced {
            if let Some(body_ns) = meta_str(&obj, "namespace").filter(|b| *b != ns) {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            if !self.namespace_exists(ns) {
                return Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found")));
            }
        }
        let now = now_rfc3339();
        {
            let m = obj["metadata"].as_object_mut().expect("metadata is an object");
            m.insert("name".into(), json!(name));
            if res.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now));
            m.insert("generation".into(), json!(1));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("managedFields");
        }
        if res.plural == "pods" && res.group.is_empty() {
            obj["status"] = json!({"phase": "Pending"});
        }
        obj = decoding.decode(res, obj, Verb::Create, warnings)?;
        let mut errs = validation::object_meta(&obj);
        errs.extend(validation::type_rules(res, &obj, None));
        validation::refuse(res, &name, errs)?;
        match managed {
            Some(m) => obj["metadata"]["managedFields"] = m,
            None => patch::record_update(&json!({"metadata": {}}), &mut obj, manager, &res.api_version(), &now),
        }
        let mut g = self.lock();
        let key = (if res.namespaced { ns.to_string() } else { String::new() }, name.clone());
        if g.objects.get(&slot(res)).is_some_and(|m| m.contains_key(&key)) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.key()))
                .with_details(status_details(res, &name)));
        }
        Ok(self.commit(&mut g, res, key, Some(obj), None))
    }

    /// Changes an existing object (or creates one, for server-side apply), as a client
    /// without `fieldValidation` does: unknown fields are dropped.
    pub fn mutate(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        status: bool,
        mutation: Mutation,
        manager: &str,
    ) -> ApiResult<Arc<Value>> {
        self.mutate_with(res, ns, name, status, mutation, manager, &Decoding::default()).map(|w| w.object)
    }

    /// A write to an existing object decoded and validated as the real server does it,
    /// with the warnings it would send back.
    #[allow(clippy::too_many_arguments)]
    pub fn mutate_with(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        status: bool,
        mutation: Mutation,
        manager: &str,
        decoding: &Decoding,
    ) -> ApiResult<Written> {
        let mut warnings = Vec::new();
        let object = self.mutate_inner(res, ns, name, status, mutation, manager, decoding, &mut warnings)?;
        Ok(Written { object, warnings })
    }

    #[allow(clippy::too_many_arguments)]
    fn mutate_inner(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        status: bool,
        mutation: Mutation,
        manager: &str,
        decoding: &Decoding,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Arc<Value>> {
        let now = now_rfc3339();
        if let Mutation::Apply { body, .. } = &mutation {
            decoding.check_apply(res, ns, name, body, warnings)?;
        }
        let ns_key = if res.namespaced { ns.to_string() } else { String::new() };
        let key = (ns_key.clone(), name.to_string());
        let mut g = self.lock();
        let old = g.objects.get(&slot(res)).and_then(|m| m.get(&key)).map(|b| Arc::new(decode(b)));
        let Some(old) = old else {
            if let Mutation::Apply { body, force } = mutation {
                drop(g);
                if res.namespaced && !self.namespace_exists(ns) {
                    return Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found")));
                }
                // `checkName` in staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go:
                // an apply that creates gets its name from its body, never from the URL.
                let body_name = meta_str(&body, "name").unwrap_or_default();
                if body_name != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    )));
                }
                let fresh = patch::apply(None, &body, manager, force, &now).map_err(|c| apply_conflict(res, name, c))?;
                let managed = fresh.pointer("/metadata/managedFields").cloned();
                return self.create_owned(res, ns, fresh, manager, managed, &Decoding::ignore(), warnings);
            }
            return Err(ApiError::not_found(res, name));
        };
        let api_version = res.api_version();
        let is_apply = matches!(mutation, Mutation::Apply { .. });
        let verb = match mutation {
            Mutation::Replace(_) => Verb::Update,
            Mutation::Apply { .. } => Verb::Apply,
            _ => Verb::Patch,
        };
        let mut new = match mutation {
            Mutation::Replace(v) => {
                let mut v = v;
                if v.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_none_or(str::is_empty)
                    && let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    // The generic registry's `Update`: only a type whose strategy allows
                    // unconditional updates takes a write that names no version.
                    if !res.unconditional_update {
                        return Err(validation::invalid(
                            res.group,
                            res.plural,
                            name,
                            vec![validation::FieldError::invalid_raw(
                                "metadata.resourceVersion",
                                "0x0".into(),
                                "must be specified for an update",
                            )],
                        ));
                    }
                    m.insert("resourceVersion".into(), old["metadata"]["resourceVersion"].clone());
                }
                v
            }
            Mutation::MergePatch(p) => {
                let mut v = (*old).clone();
                json_patch::merge(&mut v, &p);
                v
            }
            Mutation::StrategicPatch(p) => {
                let mut v = (*old).clone();
                patch::strategic_merge(&mut v, &p).map_err(ApiError::bad_request)?;
                v
            }
            Mutation::JsonPatch(p) => {
                let ops: json_patch::Patch = serde_json::from_value(p)
                    .map_err(|e| ApiError::bad_request(format!("the server rejected our request due to an error in our request: {e}")))?;
                let mut v = (*old).clone();
                json_patch::patch(&mut v, &ops).map_err(|e| {
                    ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                })?;
                v
            }
            Mutation::Apply { body, force } => {
                if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                    && Some(rv) != meta_str(&old, "resourceVersion")
                {
                    return Err(ApiError::conflict(res, name));
                }
                patch::apply(Some(&old), &body, manager, force, &now).map_err(|c| apply_conflict(res, name, c))?
            }
        };
        if !new.is_object() || !new.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::bad_request("the object has no metadata"));
        }
        if meta_str(&new, "resourceVersion").is_some_and(|rv| Some(rv) != meta_str(&old, "resourceVersion")) {
            return Err(ApiError::conflict(res, name));
        }
        if meta_str(&new, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&new, "name").unwrap_or_default()
            )));
        }
        // Fields the server owns survive any write.
        for f in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["apiVersion"] = json!(api_version);
        new["kind"] = json!(res.kind);
        if !is_apply {
            new = decoding.decode(res, new, verb, warnings)?;
        }
        if res.status_subresource {
            if status {
                let st = new.get("status").cloned();
                let mut keep = (*old).clone();
                match st {
                    Some(s) => keep["status"] = s,
                    None => {
                        keep.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                keep["metadata"]["managedFields"] = new["metadata"].get("managedFields").cloned().unwrap_or(Value::Null);
                new = keep;
            } else {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
        }
        if new.get("spec") != old.get("spec") {
            let gen_ = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(gen_);
        }
        let mut errs = validation::object_meta_update(&new, &old);
        errs.extend(validation::type_rules(res, &new, Some(&old)));
        validation::refuse(res, name, errs)?;
        if same_content(&new, &old) {
            return Ok(old);
        }
        if !is_apply {
            new["metadata"]["managedFields"] = old["metadata"].get("managedFields").cloned().unwrap_or(Value::Null);
            patch::record_update(&old, &mut new, manager, &api_version, &now);
        }
        // As the generic store's `shouldDeleteDuringUpdate`: dropping the last finalizer
        // removes the object only once no grace period is left; a pod still in its grace
        // period waits for its kubelet's (or a force) delete.
        let finalizing = meta_str(&old, "deletionTimestamp").is_some()
            && !has_finalizers(&new)
            && old.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).is_none_or(|g| g == 0);
        if finalizing {
            return Ok(self.commit(&mut g, res, key, None, Some(old)));
        }
        Ok(self.commit(&mut g, res, key, Some(new), Some(old)))
    }

    /// A DELETE with only these preconditions (an object with `uid` and/or
    /// `resourceVersion`), and no grace period: a pod is deleted gracefully.
    pub fn delete(&self, res: &'static Resource, ns: &str, name: &str, preconditions: Option<&Value>) -> ApiResult<Arc<Value>> {
        let opts = match preconditions {
            Some(p) => DeleteOptions::from_value(&json!({"preconditions": p}))?,
            None => DeleteOptions::default(),
        };
        self.delete_with(res, ns, name, &opts)
    }

    /// The generic registry's `Delete` with the pod strategy's graceful deletion: a pod
    /// bound to a node and not terminal only gets `deletionTimestamp` (now + grace) and
    /// `deletionGracePeriodSeconds`, because its kubelet must stop the containers
    /// before it confirms with a grace-0 delete. Returns the object as it is left (or
    /// as it was last, when removed).
    pub fn delete_with(&self, res: &'static Resource, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<Arc<Value>> {
        let key = (if res.namespaced { ns.to_string() } else { String::new() }, name.to_string());
        let mut g = self.lock();
        let old = g
            .objects
            .get(&slot(res))
            .and_then(|m| m.get(&key))
            .map(|b| Arc::new(decode(b)))
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(want) = &opts.uid {
            let have = meta_str(&old, "uid").unwrap_or_default();
            if want != have {
                return Err(ApiError::precondition_conflict(
                    res,
                    name,
                    format!(
                        "the UID in the precondition ({want}) does not match the UID in record ({have}). The object might have been deleted and then recreated"
                    ),
                ));
            }
        }
        if let Some(want) = &opts.resource_version {
            let have = meta_str(&old, "resourceVersion").unwrap_or_default();
            if want != have {
                return Err(ApiError::precondition_conflict(
                    res,
                    name,
                    format!(
                        "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({have}). The object might have been modified"
                    ),
                ));
            }
        }
        // Negative grace periods mean 1s on the delete path.
        let asked = opts.grace_period_seconds.map(|s| if s < 0 { 1 } else { s });
        let finalizers = has_finalizers(&old);
        let now = jiff::Timestamp::now();
        let deleting_since = meta_str(&old, "deletionTimestamp").map(str::to_string);
        let current_grace = old.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);

        if is_pod(res) {
            let (marked, grace) = match (&deleting_since, current_grace) {
                // Already past its grace period: only finalizers can hold it.
                (Some(_), None | Some(0)) => {
                    if finalizers {
                        return Ok(old);
                    }
                    return Ok(self.commit(&mut g, res, key, None, Some(old)));
                }
                // Terminating: a request may only shorten the grace period.
                (Some(ts), Some(cur)) => match asked {
                    Some(p) if p < cur => {
                        let was = ts.parse::<jiff::Timestamp>().unwrap_or(now);
                        let due = was.checked_add(jiff::SignedDuration::from_secs(p - cur)).unwrap_or(now);
                        let mut m = (*old).clone();
                        m["metadata"]["deletionTimestamp"] = json!(rfc3339(due));
                        m["metadata"]["deletionGracePeriodSeconds"] = json!(p);
                        (m, p)
                    }
                    _ => return Ok(old),
                },
                (None, _) => {
                    let spec_grace = old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64);
                    let mut p = asked.unwrap_or(spec_grace.unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS));
                    let phase = old.pointer("/status/phase").and_then(Value::as_str);
                    if old.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty)
                        || matches!(phase, Some("Failed" | "Succeeded"))
                    {
                        p = 0;
                    }
                    if p < 0 {
                        p = 1;
                    }
                    let due = now.checked_add(jiff::SignedDuration::from_secs(p)).unwrap_or(now);
                    let mut m = (*old).clone();
                    m["metadata"]["deletionTimestamp"] = json!(rfc3339(due));
                    m["metadata"]["deletionGracePeriodSeconds"] = json!(p);
                    bump_generation(&mut m);
                    (m, p)
                }
            };
            // The real store writes the deletion mark before it removes the object, so
            // even a grace-0 delete shows watchers a MODIFIED before the DELETED.
            let updated = self.commit(&mut g, res, key.clone(), Some(marked), Some(old));
            if finalizers || grace > 0 {
                return Ok(updated);
            }
            return Ok(self.commit(&mut g, res, key, None, Some(updated)));
        }

        if finalizers {
            // `markAsDeleting`: types without graceful deletion wait for their
            // finalizers with no grace period left.
            let mut m = (*old).clone();
            if deleting_since.is_none() {
                bump_generation(&mut m);
                m["metadata"]["deletionTimestamp"] = json!(rfc3339(now));
            }
            m["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if same_content(&m, &old) {
                return Ok(old);
            }
            return Ok(self.commit(&mut g, res, key, Some(m), Some(old)));
        }
        Ok(self.commit(&mut g, res, key, None, Some(old)))
    }

    /// One pass of kube-controller-manager's pod garbage collector (podgc's `gc`). A
    /// bare apiserver runs none: the simulated cluster runs its own through the API,
    /// on a timer; this pass is for tests of the fake alone, where the caller decides
    /// when a pass runs and a call stands for one after podgc's 40 s quarantine. In
    /// podgc's order it force-deletes (grace 0, after marking them `Failed`) the oldest
    /// terminated pods beyond `terminated_pod_threshold` (0: none), terminating pods
    /// on NotReady nodes with the `node.kubernetes.io/out-of-service` taint, pods bound
    /// to a node that no longer exists (with a `DisruptionTarget` condition), and
    /// terminating pods that were never scheduled. Returns the `namespace/name` of
    /// every pod it deleted or, when finalizers hold it, left to them.
    pub fn gc_pods(&self, terminated_pod_threshold: usize) -> Vec<String> {
        let pods_res = RESOURCES.iter().find(|r| is_pod(r)).expect("pods are served");
        let nodes_res = RESOURCES.iter().find(|r| r.plural == "nodes" && r.group.is_empty()).expect("nodes are served");
        let pods = self.all(pods_res);
        let nodes: HashMap<String, Arc<Value>> =
            self.all(nodes_res).into_iter().filter_map(|n| Some((meta_str(&n, "name")?.to_string(), n.clone()))).collect();
        let phase = |p: &Value| p.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default().to_string();
        let node_name = |p: &Value| p.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default().to_string();
        let terminating = |p: &Value| meta_str(p, "deletionTimestamp").is_some();
        let mut collected = Vec::new();
        let mut collect = |pod: &Value, condition: Option<Value>| {
            if self.mark_failed_and_delete(pods_res, pod, condition) {
                collected.push(format!("{}/{}", meta_str(pod, "namespace").unwrap_or_default(), meta_str(pod, "name").unwrap_or_default()));
            }
        };

        if terminated_pod_threshold > 0 {
            let mut terminated: Vec<&Arc<Value>> =
                pods.iter().filter(|p| !matches!(phase(p).as_str(), "Pending" | "Running" | "Unknown")).collect();
            if terminated.len() > terminated_pod_threshold {
                let evicted = |p: &Value| phase(p) == "Failed" && p.pointer("/status/reason").and_then(Value::as_str) == Some("Evicted");
                terminated.sort_by(|a, b| {
                    evicted(b)
                        .cmp(&evicted(a))
                        .then_with(|| meta_str(a, "creationTimestamp").cmp(&meta_str(b, "creationTimestamp")))
                        .then_with(|| meta_str(a, "name").cmp(&meta_str(b, "name")))
                });
                let excess = terminated.len() - terminated_pod_threshold;
                for p in terminated.into_iter().take(excess) {
                    collect(p, None);
                }
            }
        }

        let node_ready = |n: &Value| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        let out_of_service = |n: &Value| {
            n.pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node.kubernetes.io/out-of-service")
        };
        for p in pods.iter().filter(|p| terminating(p)) {
            if let Some(n) = nodes.get(&node_name(p))
                && !node_ready(n)
                && out_of_service(n)
            {
                collect(p, None);
            }
        }

        for p in pods.iter().filter(|p| !node_name(p).is_empty() && !nodes.contains_key(&node_name(p))) {
            let cond = json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists"});
            collect(p, Some(cond));
        }

        for p in pods.iter().filter(|p| terminating(p) && node_name(p).is_empty()) {
            collect(p, None);
        }
        collected
    }

    /// podgc's `markFailedAndDeletePodWithCondition`: a pod whose kubelet is gone would
    /// stay Running forever, so it is marked Failed before the force delete. False when
    /// the pod is already gone or is no longer the same pod.
    fn mark_failed_and_delete(&self, pods_res: &'static Resource, seen: &Value, condition: Option<Value>) -> bool {
        let (Some(ns), Some(name), Some(uid)) = (meta_str(seen, "namespace"), meta_str(seen, "name"), meta_str(seen, "uid")) else {
            return false;
        };
        let Ok(current) = self.get(pods_res, ns, name) else { return false };
        if meta_str(&current, "uid") != Some(uid) {
            return false;
        }
        let phase = current.pointer("/status/phase").and_then(Value::as_str);
        if !matches!(phase, Some("Succeeded" | "Failed")) {
            let mut next = (*current).clone();
            next["status"]["phase"] = json!("Failed");
            if let Some(c) = condition {
                set_pod_condition(&mut next, c);
            }
            if self.mutate(pods_res, ns, name, true, Mutation::Replace(next), "kube-controller-manager").is_err() {
                return false;
            }
        }
        let opts = DeleteOptions { grace_period_seconds: Some(0), uid: Some(uid.to_string()), resource_version: None };
        self.delete_with(pods_res, ns, name, &opts).is_ok()
    }

    /// Every object of a type, for the tests and the simulation to inspect.
    pub fn all(&self, res: &'static Resource) -> Vec<Arc<Value>> {
        let stored: Vec<Bytes> = self.lock().objects.get(&slot(res)).map(|m| m.values().cloned().collect()).unwrap_or_default();
        stored.iter().map(|b| Arc::new(decode(b))).collect()
    }
}

fn apply_conflict(res: &Resource, name: &str, c: patch::ApplyConflict) -> ApiError {
    let causes: Vec<Value> =
        c.0.iter().map(|(m, f)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f})).collect();
    let mut details = status_details(res, name);
    details["causes"] = json!(causes);
    ApiError::new(409, "Conflict", c.message()).with_details(details)
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "ns": key.0, "name": key.1}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(s: &str) -> Option<(u64, Key)> {
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((v["rv"].as_u64()?, (v["ns"].as_str()?.to_string(), v["name"].as_str()?.to_string())))
}

/// The store's slot for a type: its place in [`RESOURCES`].
fn slot(res: &Resource) -> usize {
    RESOURCES.iter().position(|r| r == res).unwrap_or(usize::MAX)
}
