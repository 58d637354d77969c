use super::resources::{self, RESOURCES, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{self, ApiError, ApiResult, Change, Decoding, DeleteOptions, EventType, Mutation, Store};
use super::validation::{self, FieldValidation};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;

/// How to start a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// How many changes the watch history keeps; a watch or list from an older
    /// resourceVersion gets 410 Gone.
    pub history_window: usize,
    /// How often an open watch that asked for them gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Serve HTTPS with a certificate from a CA generated at start; the kubeconfig
    /// carries the CA.
    pub tls: bool,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self { history_window: 10_000, bookmark_interval: Duration::from_secs(5), token: Some("testkit-admin-token".into()), tls: false }
    }
}

/// Requests and response bytes for one verb on one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    pub requests: u64,
    pub bytes: u64,
}

/// Faults the tests inject into the fake apiserver.
#[derive(Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    error_rates: Mutex<HashMap<String, f64>>,
    outage_until: Mutex<Option<Instant>>,
    outage_changed: Notify,
    kill_watches: Option<broadcast::Sender<()>>,
}

impl Faults {
    /// Adds this much latency to every request.
    pub fn set_latency(&self, d: Duration) {
        self.latency_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Fails this share (0.0–1.0) of requests of `verb` (`get`, `list`, `watch`,
    /// `create`, `update`, `patch`, `delete`) with a 500.
    pub fn set_error_rate(&self, verb: &str, rate: f64) {
        lock(&self.error_rates).insert(verb.to_string(), rate);
    }

    /// Ends every open watch now, as an apiserver restart or a load balancer does.
    pub fn drop_watches(&self) {
        if let Some(tx) = &self.kill_watches {
            let _ = tx.send(());
        }
    }

    /// Refuses connections for `d`: the listening socket is closed, open watches end
    /// and requests on kept-alive connections are answered 503 with `Connection: close`.
    pub fn outage(&self, d: Duration) {
        *lock(&self.outage_until) = Some(Instant::now() + d);
        self.drop_watches();
        self.outage_changed.notify_waiters();
    }

    fn in_outage(&self) -> bool {
        lock(&self.outage_until).is_some_and(|u| Instant::now() < u)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    /// Bearer tokens of named clients, whose calls are recorded per client.
    clients: Mutex<HashMap<String, String>>,
    client_calls: Mutex<BTreeMap<String, std::collections::BTreeSet<(String, String)>>>,
    /// The CA of the server certificate, PEM, when serving HTTPS.
    ca_pem: Option<String>,
    store: Store,
    opts: ApiServerOptions,
    faults: Faults,
    stats: Mutex<BTreeMap<(String, String), RequestStats>>,
    addr: SocketAddr,
}

impl Shared {
    fn count(&self, verb: &str, resource: &str, bytes: u64, new_request: bool) {
        let mut s = lock(&self.stats);
        let e = s.entry((verb.to_string(), resource.to_string())).or_default();
        if new_request {
            e.requests += 1;
        }
        e.bytes += bytes;
    }
}

/// A running fake apiserver; it stops when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.faults.drop_watches();
    }
}

impl FakeApiServer {
    pub async fn start(opts: ApiServerOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (kill_tx, _) = broadcast::channel(4);
        let tls = if opts.tls { Some(generate_tls().map_err(std::io::Error::other)?) } else { None };
        let shared = Arc::new(Shared {
            clients: Mutex::new(HashMap::new()),
            client_calls: Mutex::new(BTreeMap::new()),
            ca_pem: tls.as_ref().map(|(ca, _)| ca.clone()),
            store: Store::new(opts.history_window),
            opts,
            faults: Faults { kill_watches: Some(kill_tx), ..Default::default() },
            stats: Mutex::new(BTreeMap::new()),
            addr,
        });
        let s2 = shared.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s2.clone();
            async move { handle(s, method, uri, headers, body).await }
        });
        let listener = OutageListener { inner: Some(listener), addr, shared: shared.clone() };
        let task = match tls {
            Some((_, config)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                tokio::spawn(async move {
                    let _ = axum::serve(TlsListener { inner: listener, acceptor }, app).await;
                })
            }
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
        };
        Ok(Self { shared, task })
    }

    pub fn url(&self) -> String {
        let scheme = if self.shared.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.shared.addr)
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// A kubeconfig for a named client whose calls are recorded apart (see
    /// [`FakeApiServer::client_calls`]), e.g. the healer under test.
    pub fn kubeconfig_for(&self, name: &str) -> String {
        let token = format!("client-{name}-{}", uuid::Uuid::new_v4().simple());
        lock(&self.shared.clients).insert(token.clone(), name.to_string());
        self.kubeconfig_with(Some(&token))
    }

    /// The (verb, resource) pairs a named client has used, e.g. `("create", "pods/eviction")`.
    pub fn client_calls(&self, name: &str) -> std::collections::BTreeSet<(String, String)> {
        lock(&self.shared.client_calls).get(name).cloned().unwrap_or_default()
    }

    /// A kubeconfig that `kube::Config` loads as-is.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_with(self.shared.opts.token.as_deref())
    }

    fn kubeconfig_with(&self, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("{{token: {t}}}"),
            None => "{}".to_string(),
        };
        let ca = match &self.shared.ca_pem {
            Some(pem) => {
                use base64::Engine;
                format!(", certificate-authority-data: {}", base64::engine::general_purpose::STANDARD.encode(pem))
            }
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster: {{server: \"{}\"{ca}}}\nusers:\n- name: testkit\n  user: {user}\ncontexts:\n- name: testkit\n  context: {{cluster: testkit, user: testkit}}\ncurrent-context: testkit\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// The client config a kubeconfig for this server gives, to adjust before use.
    pub async fn client_config(&self) -> anyhow::Result<kube::Config> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())?;
        Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.client_config().await?)?)
    }

    /// Request counts and bytes by (verb, resource).
    pub fn stats(&self) -> BTreeMap<(String, String), RequestStats> {
        lock(&self.shared.stats).clone()
    }

    pub fn reset_stats(&self) {
        lock(&self.shared.stats).clear();
    }

    /// Requests of `verb` on `resource` (e.g. `("patch", "nodes")`) so far.
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        lock(&self.shared.stats).get(&(verb.to_string(), resource.to_string())).map_or(0, |s| s.requests)
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn generate_tls() -> Result<(String, Arc<rustls::ServerConfig>), String> {
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "autohealer-testkit-ca");
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(e)?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca.pem(), Arc::new(config)))
}

struct TlsListener {
    inner: OutageListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (tcp, addr) = self.inner.accept().await;
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.inner.addr)
    }
}

struct OutageListener {
    inner: Option<TcpListener>,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for OutageListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let until = *lock(&self.shared.faults.outage_until);
            if let Some(u) = until.filter(|u| Instant::now() < *u) {
                self.inner = None;
                tokio::time::sleep_until(u).await;
                continue;
            }
            let listener = match &self.inner {
                Some(l) => l,
                None => match TcpListener::bind(self.addr).await {
                    Ok(l) => self.inner.insert(l),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, a)) => return (s, a),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                },
                _ = self.shared.faults.outage_changed.notified() => {}
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

fn json_response(shared: &Shared, verb: &str, resource: &str, code: StatusCode, v: &Value) -> Response {
    json_response_warning(shared, verb, resource, code, v, &[])
}

/// With one `Warning: 299 - "<text>"` header per warning, as `NewWarningHeader` in
/// staging/src/k8s.io/apimachinery/pkg/util/net/http.go does (clients log them).
fn json_response_warning(shared: &Shared, verb: &str, resource: &str, code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    bytes_response_warning(shared, verb, resource, code, serde_json::to_vec(v).unwrap_or_default(), warnings)
}

/// A JSON answer already encoded (a LIST or GET of stored objects).
fn bytes_response_warning(shared: &Shared, verb: &str, resource: &str, code: StatusCode, body: Vec<u8>, warnings: &[String]) -> Response {
    shared.count(verb, resource, body.len() as u64, true);
    let mut resp = (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    for w in warnings {
        let text = serde_json::to_string(w).unwrap_or_default();
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {text}")) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

fn error_response(shared: &Shared, verb: &str, resource: &str, e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(shared, verb, resource, code, &e.to_status())
}

/// The parsed path of a resource request.
struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(path: &str) -> Option<Result<Target, ()>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let ns_scoped = rest.len() >= 3 && rest[0] == "namespaces" && resources::find(group, version, rest[2]).is_some_and(|r| r.namespaced);
    let (ns, rest) = if ns_scoped { (Some(rest[1].to_string()), &rest[2..]) } else { (None, rest) };
    let Some(res) = resources::find(group, version, rest[0]) else {
        return Some(Err(()));
    };
    if res.namespaced != ns.is_some() && rest.len() > 1 {
        return Some(Err(()));
    }
    Some(Ok(Target { res, ns, name: rest.get(1).map(|s| s.to_string()), sub: rest.get(2).map(|s| s.to_string()) }))
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((pct_decode(k)?, pct_decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pct_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let h = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(shared: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let latency = shared.faults.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if shared.faults.in_outage() {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::CONNECTION, "close")], "apiserver outage").into_response();
    }
    if method == Method::GET && uri.path() == "/testkit/stats" {
        let rows: Vec<Value> = lock(&shared.stats)
            .iter()
            .map(|((verb, resource), st)| json!({"verb": verb, "resource": resource, "requests": st.requests, "bytes": st.bytes}))
            .collect();
        return (StatusCode::OK, axum::Json(json!({"stats": rows}))).into_response();
    }
    let bearer = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")).map(String::from);
    let caller = bearer.as_ref().and_then(|b| lock(&shared.clients).get(b).cloned());
    if let Some(token) = &shared.opts.token
        && bearer.as_deref() != Some(token.as_str())
        && caller.is_none()
    {
        return error_response(&shared, "unauthorized", "", &ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let path = uri.path().to_string();
    if method == Method::GET
        && let Some(v) = discovery(&shared, &path)
    {
        return json_response(&shared, "get", "discovery", StatusCode::OK, &v);
    }
    let target = match parse_target(&path) {
        Some(Ok(t)) => t,
        Some(Err(())) | None => {
            return error_response(
                &shared,
                "get",
                "unknown",
                &ApiError::new(404, "NotFound", "the server could not find the requested resource"),
            );
        }
    };
    let q = query_map(&uri);
    let is_watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name, &target.sub) {
        (&Method::GET, None, _) if is_watch => "watch",
        (&Method::GET, None, _) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, None, _) => "deletecollection",
        (&Method::DELETE, Some(_), _) => "delete",
        _ => "unknown",
    };
    let resource = match &target.sub {
        Some(sub) => format!("{}/{sub}", target.res.key()),
        None => target.res.key(),
    };
    if let Some(name) = &caller {
        lock(&shared.client_calls).entry(name.clone()).or_default().insert((verb.to_string(), resource.clone()));
    }
    let rate = lock(&shared.faults.error_rates).get(verb).copied().unwrap_or(0.0);
    if rate > 0.0 && rand::random::<f64>() < rate {
        return error_response(
            &shared,
            verb,
            &resource,
            &ApiError::new(500, "InternalError", "Internal error occurred: injected by the testkit"),
        );
    }
    if verb == "watch" {
        return watch(shared, target, &q, &resource);
    }
    match serve(&shared, &method, &target, &q, &headers, &body, verb) {
        Ok(Served { code, encoded: Some(raw), warnings, .. }) => bytes_response_warning(&shared, verb, &resource, code, raw, &warnings),
        Ok(Served { code, body, warnings, .. }) => json_response_warning(&shared, verb, &resource, code, &body, &warnings),
        Err(e) => error_response(&shared, verb, &resource, &e),
    }
}

fn discovery(shared: &Shared, path: &str) -> Option<Value> {
    let path = path.trim_end_matches('/');
    let resource_list = |group: &str, version: &str| {
        let list: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .flat_map(|r| {
                let mut v = vec![json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced, "kind": r.kind,
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]})];
                if r.status_subresource {
                    v.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
                }
                if r.plural == "pods" && r.group.is_empty() {
                    v.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
                }
                v
            })
            .collect();
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
    };
    match path {
        "/version" => Some(
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-autohealer-testkit", "gitCommit": "testkit", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        "/api" => Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        ),
        "/apis" => {
            let mut groups: Vec<(&str, &str)> = RESOURCES.iter().filter(|r| !r.group.is_empty()).map(|r| r.group_version()).collect();
            groups.dedup();
            let list: Vec<Value> = groups
                .iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}))
        }
        "/api/v1" => Some(resource_list("", "v1")),
        _ => {
            let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
            match segs.as_slice() {
                ["apis", g, v] if RESOURCES.iter().any(|r| r.group == *g && r.version == *v) => Some(resource_list(g, v)),
                ["apis", g] if RESOURCES.iter().any(|r| r.group == *g) => {
                    let r = RESOURCES.iter().find(|r| r.group == *g)?;
                    let gv = json!({"groupVersion": r.api_version(), "version": r.version});
                    Some(json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}))
                }
                _ => None,
            }
        }
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("application/json");
    if ct.contains("yaml") && body.first().is_none_or(|b| *b != b'{') {
        return Err(ApiError::new(415, "UnsupportedMediaType", "the testkit accepts apply patches as JSON only"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))
}

fn field_manager(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    q.get("fieldManager").cloned().unwrap_or_else(|| {
        let ua = headers.get(header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_string()
    })
}

/// An answer to serve: status code, body and the `Warning`s that go with it.
struct Served {
    code: StatusCode,
    body: Value,
    /// The body already encoded (stored objects are kept as JSON); then `body` is unused.
    encoded: Option<Vec<u8>>,
    warnings: Vec<String>,
}

impl Served {
    fn ok(code: StatusCode, body: Value) -> Self {
        Self { code, body, encoded: None, warnings: Vec::new() }
    }

    fn raw(code: StatusCode, encoded: Vec<u8>) -> Self {
        Self { code, body: Value::Null, encoded: Some(encoded), warnings: Vec::new() }
    }

    fn written(code: StatusCode, w: store::Written) -> Self {
        Self { code, body: (*w.object).clone(), encoded: None, warnings: w.warnings }
    }
}

/// A list answer, byte for byte what `json!` of the same fields would print (keys in
/// order), with the stored items copied in as they are.
fn list_body(res: &Resource, meta: &Value, items: &[Bytes]) -> Vec<u8> {
    let enc = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let kind = enc(&json!(format!("{}List", res.kind)));
    let api_version = enc(&json!(res.api_version()));
    let meta = enc(meta);
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 64 + meta.len());
    out.extend_from_slice(b"{\"apiVersion\":");
    out.extend_from_slice(&api_version);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"],\"kind\":");
    out.extend_from_slice(&kind);
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(&meta);
    out.push(b'}');
    out
}

/// One watch event line, byte for byte what `json!({"type", "object"})` would print.
fn watch_line(kind: EventType, object: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(object.len() + 32);
    b.extend_from_slice(b"{\"object\":");
    b.extend_from_slice(object);
    b.extend_from_slice(b",\"type\":\"");
    b.extend_from_slice(kind.as_str().as_bytes());
    b.extend_from_slice(b"\"}\n");
    Bytes::from(b)
}

/// The request's `fieldValidation` and the duplicate keys of its raw body.
fn decoding(q: &HashMap<String, String>, body: &Bytes, options_kind: &str) -> ApiResult<Decoding> {
    let directive = FieldValidation::parse(q.get("fieldValidation").map(String::as_str), options_kind)?;
    let duplicates = if directive == FieldValidation::Ignore { Vec::new() } else { validation::duplicate_fields(body) };
    Ok(Decoding { directive, duplicates })
}

fn serve(
    shared: &Shared,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    verb: &str,
) -> ApiResult<Served> {
    let store = &shared.store;
    let ns = t.ns.as_deref().unwrap_or("");
    let manager = field_manager(q, headers);
    let status = match t.sub.as_deref() {
        None => false,
        Some("status") if t.res.status_subresource => true,
        Some("eviction") if t.res.plural == "pods" && *method == Method::POST => {
            let name = t.name.as_deref().unwrap_or_default();
            let eviction = parse_body(headers, body)?;
            return evict(store, ns, name, &eviction, &manager).map(|v| Served::ok(StatusCode::CREATED, v));
        }
        Some(_) => {
            return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
        }
    };
    let dry_run = q.contains_key("dryRun");
    match (verb, t.name.as_deref()) {
        ("list", None) => {
            let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
            let fields =
                FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), t.res.fields).map_err(ApiError::bad_request)?;
            let limit = q.get("limit").and_then(|l| l.parse().ok());
            let r = store.list(
                t.res,
                t.ns.as_deref(),
                &labels,
                &fields,
                limit,
                q.get("continue").map(String::as_str),
                q.get("resourceVersion").map(String::as_str),
            )?;
            let mut meta = json!({"resourceVersion": r.rv.to_string()});
            if let Some(c) = r.cont {
                meta["continue"] = json!(c);
                meta["remainingItemCount"] = json!(r.remaining.unwrap_or(0));
            }
            Ok(Served::raw(StatusCode::OK, list_body(t.res, &meta, &r.items)))
        }
        ("get", Some(name)) => Ok(Served::raw(StatusCode::OK, store.get_encoded(t.res, ns, name)?.to_vec())),
        ("create", None) => {
            let d = decoding(q, body, "CreateOptions")?;
            let obj = parse_body(headers, body)?;
            if dry_run {
                return Ok(Served::ok(StatusCode::CREATED, obj));
            }
            let w = store.create_with(t.res, ns, obj, &manager, &d)?;
            Ok(Served::written(StatusCode::CREATED, w))
        }
        ("update", Some(name)) => {
            let d = decoding(q, body, "UpdateOptions")?;
            let obj = parse_body(headers, body)?;
            let w = store.mutate_with(t.res, ns, name, status, Mutation::Replace(obj), &manager, &d)?;
            Ok(Served::written(StatusCode::OK, w))
        }
        ("patch", Some(name)) => {
            let d = decoding(q, body, "PatchOptions")?;
            let p = parse_body(headers, body)?;
            let ct = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("");
            let m = match ct.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" => Mutation::MergePatch(p),
                "application/json-patch+json" => Mutation::JsonPatch(p),
                "application/strategic-merge-patch+json" => Mutation::StrategicPatch(p),
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                    if !q.contains_key("fieldManager") {
                        return Err(ApiError::bad_request(
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    Mutation::Apply { body: p, force: q.get("force").is_some_and(|f| f == "true") }
                }
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                        ),
                    ));
                }
            };
            let w = store.mutate_with(t.res, ns, name, status, m, &manager, &d)?;
            Ok(Served::written(StatusCode::OK, w))
        }
        ("delete", Some(name)) => {
            let body = if body.is_empty() { Value::Null } else { parse_body(headers, body)? };
            let mut opts = DeleteOptions::from_value(&body)?;
            // As the real handler, the query parameter fills in what the body leaves out.
            if opts.grace_period_seconds.is_none()
                && let Some(g) = q.get("gracePeriodSeconds")
            {
                opts.grace_period_seconds =
                    Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}")))?);
            }
            Ok(Served::ok(StatusCode::OK, (*store.delete_with(t.res, ns, name, &opts)?).clone()))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method} {})", t.res.key()),
        )),
    }
}

/// How often an eviction retries a conflict that the real server's `EvictionsRetry`
/// would retry (it backs off 20 times; the fake's conflicts are only races).
const EVICTION_RETRIES: usize = 20;

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn pod_phase(p: &Value) -> Option<&str> {
    p.pointer("/status/phase").and_then(Value::as_str)
}

fn terminating(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_some()
}

fn too_many_requests(message: String, retry_after: Option<u64>) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": message}]});
    if let Some(s) = retry_after {
        details["retryAfterSeconds"] = json!(s);
    }
    ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.").with_details(details)
}

/// `policy/v1` Eviction, as `pkg/registry/core/pod/storage/eviction.go`: a pod that
/// is not running (Pending, terminal or already terminating) has disrupted nothing a
/// budget protects and is deleted straight away; a running pod is deleted only if its
/// PodDisruptionBudget allows a disruption. Deleting is graceful, so the pod stays
/// Terminating until its kubelet (or a force delete) removes it.
fn evict(store: &Store, ns: &str, name: &str, eviction: &Value, manager: &str) -> ApiResult<Value> {
    let pods_res = resources::find("", "v1", "pods").expect("pods are served");
    let pdb_res = resources::find("policy", "v1", "poddisruptionbudgets").expect("pdbs are served");
    if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let asked = DeleteOptions::from_value(eviction.get("deleteOptions").unwrap_or(&Value::Null))?;
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});

    // A caller's resourceVersion precondition is a promise about one version: a
    // conflict on it is final, as in the real server.
    let retries = if asked.resource_version.is_some() { 1 } else { EVICTION_RETRIES };
    let mut pod = store.get(pods_res, ns, name)?;
    for attempt in 1..=retries {
        pod = store.get(pods_res, ns, name)?;
        let can_ignore_pdb = matches!(pod_phase(&pod), Some("Succeeded" | "Failed" | "Pending")) || terminating(&pod);
        if !can_ignore_pdb {
            break;
        }
        let mut opts = asked.clone();
        // Keeps the pod from turning Running and Ready between the check and the delete.
        let enforce_rv = !matches!(pod_phase(&pod), Some("Succeeded" | "Failed")) && !terminating(&pod);
        if enforce_rv && opts.resource_version.is_none() {
            opts.resource_version = pod.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        }
        match add_condition_and_delete(store, pods_res, ns, name, opts, manager) {
            Ok(()) => return Ok(success),
            Err(e) if e.code == 409 && attempt < retries => continue,
            Err(e) => return Err(e),
        }
    }

    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    let pdbs: Vec<_> = store
        .all(pdb_res)
        .into_iter()
        .filter(|p| p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
        .filter(|p| {
            // A budget with an empty selector protects nothing, not everything.
            p.pointer("/spec/selector").is_some_and(|s| {
                let empty = s.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
                    && s.get("matchExpressions").and_then(Value::as_array).is_none_or(Vec::is_empty);
                !empty && LabelSelector::from_object(s).matches(labels)
            })
        })
        .collect();
    if pdbs.len() > 1 {
        // The real server answers this as a bare Status (code 500, no reason).
        return Err(ApiError::new(
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut guard_rv = false;
    let mut pdb_name = String::new();
    if let Some(pdb) = pdbs.first() {
        pdb_name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        // The budget's status as the disruption controller would compute it now.
        let sel = LabelSelector::from_object(&pdb["spec"]["selector"]);
        let matching: Vec<_> = store
            .all(pods_res)
            .into_iter()
            .filter(|p| p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            .filter(|p| sel.matches(p.pointer("/metadata/labels").and_then(Value::as_object)))
            .collect();
        let expected = matching.len() as i64;
        let healthy = matching.iter().filter(|p| pod_ready(p) && !terminating(p)).count() as i64;
        let scaled = |v: &Value| match v {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::String(s) => s.trim_end_matches('%').parse::<i64>().map(|p| (p * expected + 99) / 100).unwrap_or(0),
            _ => 0,
        };
        let desired = match (pdb["spec"].get("minAvailable"), pdb["spec"].get("maxUnavailable")) {
            (Some(min), _) => scaled(min),
            (None, Some(max)) => (expected - scaled(max)).max(0),
            _ => expected,
        };
        let always_allow = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
        // An unready pod does not count as healthy, so evicting it takes nothing from
        // the budget; the resourceVersion guard catches it turning Ready meanwhile.
        if !pod_ready(&pod) && (always_allow || (healthy >= desired && desired > 0)) {
            guard_rv = true;
        } else if healthy - desired <= 0 {
            return Err(too_many_requests(
                format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"),
                None,
            ));
        }
    }
    let mut opts = asked.clone();
    if guard_rv && opts.resource_version.is_none() {
        opts.resource_version = pod.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
    }
    match add_condition_and_delete(store, pods_res, ns, name, opts, manager) {
        Ok(()) => Ok(success),
        Err(e) if e.code == 409 && guard_rv && asked.resource_version.is_none() => {
            Err(too_many_requests(format!("The disruption budget {pdb_name} is still being processed by the server."), Some(10)))
        }
        Err(e) => Err(e),
    }
}

/// `addConditionAndDeletePod`: the pod is marked `DisruptionTarget` (so its
/// controller and kubelet can tell an eviction from a crash) and then deleted with the
/// caller's options, a resourceVersion precondition moved to the marked version.
fn add_condition_and_delete(
    store: &Store,
    pods_res: &'static Resource,
    ns: &str,
    name: &str,
    mut opts: DeleteOptions,
    manager: &str,
) -> ApiResult<()> {
    let latest = store.get(pods_res, ns, name)?;
    let uid = latest.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let rv = latest.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
    if let Some(want) = opts.uid.as_deref().filter(|u| !u.is_empty() && *u != uid) {
        return Err(ApiError::precondition_conflict(
            pods_res,
            name,
            format!(
                "the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
            ),
        ));
    }
    if let Some(want) = opts.resource_version.as_deref().filter(|r| !r.is_empty() && *r != rv) {
        return Err(ApiError::precondition_conflict(
            pods_res,
            name,
            format!(
                "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
            ),
        ));
    }
    let mut marked = (*latest).clone();
    let cond = json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null, "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"});
    if store::set_pod_condition(&mut marked, cond) {
        let updated = store.mutate(pods_res, ns, name, true, Mutation::Replace(marked), manager)?;
        if opts.resource_version.is_some() {
            opts.resource_version = updated.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        }
    }
    store.delete_with(pods_res, ns, name, &opts).map(|_| ())
}

fn watch(shared: Arc<Shared>, t: Target, q: &HashMap<String, String>, resource: &str) -> Response {
    let labels = match LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)) {
        Ok(l) => l,
        Err(e) => return error_response(&shared, "watch", resource, &ApiError::bad_request(e)),
    };
    let fields = match FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), t.res.fields) {
        Ok(f) => f,
        Err(e) => return error_response(&shared, "watch", resource, &ApiError::bad_request(e)),
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs);
    let from = q.get("resourceVersion").cloned();
    shared.count("watch", resource, 0, true);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let resource = resource.to_string();
    let mut kill = shared.faults.kill_watches.as_ref().map(|k| k.subscribe());
    let start_rv = from.as_deref().and_then(|r| r.parse::<u64>().ok()).filter(|r| *r > 0);
    match shared.store.watch(t.res, t.ns.as_deref(), from.as_deref()) {
        Err(e) => {
            let line = json!({"type": "ERROR", "object": e.to_status()});
            let mut b = serde_json::to_vec(&line).unwrap_or_default();
            b.push(b'\n');
            shared.count("watch", &resource, b.len() as u64, false);
            let _ = tx.try_send(Bytes::from(b));
        }
        Ok((backlog, mut live)) => {
            let shared = shared.clone();
            let res = t.res;
            let ns = t.ns.clone();
            tokio::spawn(async move {
                let selected = |v: &Value| labels.matches(v.pointer("/metadata/labels").and_then(Value::as_object)) && fields.matches(v);
                // Without selectors every change is selected, before and after: nothing to parse.
                let unfiltered = labels.is_empty() && fields.is_empty();
                let mut last_rv = start_rv.unwrap_or_else(|| shared.store.current_rv());
                let send = |tx: &mpsc::Sender<Bytes>, line: Bytes| {
                    shared.count("watch", &resource, line.len() as u64, false);
                    let tx = tx.clone();
                    async move { tx.send(line).await.is_ok() }
                };
                let send_value = |tx: &mpsc::Sender<Bytes>, line: Value| {
                    let mut b = serde_json::to_vec(&line).unwrap_or_default();
                    b.push(b'\n');
                    send(tx, Bytes::from(b))
                };
                let event_line = |c: &Change| -> Option<Bytes> {
                    if c.resource != res || ns.as_deref().is_some_and(|n| n != c.namespace) {
                        return None;
                    }
                    let (before, now) = if unfiltered {
                        (c.prev.is_some(), true)
                    } else {
                        (c.prev_value().is_some_and(|p| selected(&p)), selected(&c.object_value()))
                    };
                    let kind = match (c.kind, before, now) {
                        (EventType::Deleted, _, true) => EventType::Deleted,
                        (EventType::Deleted, _, false) => return None,
                        (EventType::Added, _, true) => EventType::Added,
                        (EventType::Modified, true, true) => EventType::Modified,
                        (EventType::Modified, false, true) => EventType::Added,
                        (EventType::Modified, true, false) => EventType::Deleted,
                        _ => return None,
                    };
                    Some(watch_line(kind, &c.object))
                };
                for c in &backlog {
                    last_rv = last_rv.max(c.rv);
                    if let Some(line) = event_line(c)
                        && !send(&tx, line).await
                    {
                        return;
                    }
                }
                let deadline = timeout.map(|d| Instant::now() + d);
                let mut tick = tokio::time::interval(shared.opts.bookmark_interval);
                tick.tick().await;
                loop {
                    // A dropped connection ends the stream before anything still queued.
                    tokio::select! {
                        biased;
                        _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                        _ = async { match kill.as_mut() { Some(k) => { let _ = k.recv().await; } None => std::future::pending().await } } => return,
                        _ = tick.tick(), if bookmarks => {
                            let line = json!({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": last_rv.to_string()}}});
                            if !send_value(&tx, line).await { return; }
                        }
                        r = live.recv() => match r {
                            Ok(c) => {
                                if start_rv.is_some_and(|s| c.rv <= s) || backlog.last().is_some_and(|b| c.rv <= b.rv) {
                                    continue;
                                }
                                last_rv = c.rv;
                                if let Some(line) = event_line(&c)
                                    && !send(&tx, line).await
                                {
                                    return;
                                }
                            }
                            Err(_) => return,
                        },
                        _ = tx.closed() => return,
                    }
                }
            });
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_lists_and_watch_lines_are_what_json_would_print() {
        let res = resources::find("", "v1", "nodes").expect("nodes");
        let items = [json!({"metadata": {"name": "a", "labels": {"z": "1", "a": "2"}}}), json!({"metadata": {"name": "b"}, "spec": {}})];
        let encoded: Vec<Bytes> = items.iter().map(|i| Bytes::from(serde_json::to_vec(i).unwrap())).collect();
        let meta = json!({"resourceVersion": "7", "continue": "x", "remainingItemCount": 3});
        let want = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items});
        assert_eq!(list_body(res, &meta, &encoded), serde_json::to_vec(&want).unwrap());
        let empty = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": []});
        assert_eq!(list_body(res, &meta, &[]), serde_json::to_vec(&empty).unwrap());
        let mut line = serde_json::to_vec(&json!({"type": "MODIFIED", "object": items[0]})).unwrap();
        line.push(b'\n');
        assert_eq!(watch_line(EventType::Modified, &encoded[0]).to_vec(), line);
    }
}
