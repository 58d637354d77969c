use crate::NodeView;
use crate::params::{ParamError, parse_params};
use crate::util::{Secret, Trouble, error_chain};
use crate::{CheckKind, Health, HealthCheck};
use async_trait::async_trait;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Upstream's default CA when verification is on and no `ca-file` is given.
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
pub const DEFAULT_UNHEALTHY_ANNOTATION: &str = "autohealing.openstack.org/unhealthy-timestamp";

/// Unhealthy when any of `endpoints` on the node's InternalIP answers with a code
/// outside `ok-codes`, or does not answer within `timeout`.
///
/// TLS, as magnum-auto-healer's endpoint check: with `insecure-skip-verify: true` (or
/// `tls-verify: false`) certificates are not verified. With `ca-file`, or with
/// `insecure-skip-verify: false` (or `tls-verify: true`), the server's certificate must
/// be signed by a CA in `ca-file`, by default the pod's in-cluster CA
/// (`/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`), and by no other: the system's roots never sign a cluster's
/// apiservers, so trusting them would fail every probe. The file is re-read on every
/// probe so that a rotated CA is picked up; a configured `ca-file` that cannot be read
/// or holds no certificate is a parameter error. With none of these keys nothing is
/// verified, as this check has always done (kubelets and apiservers often serve
/// certificates for names, not for the IP probed); upstream now verifies by default.
///
/// A CA that cannot be read at probe time, or a handshake that fails (a certificate
/// not signed by the CA, or not valid for the IP), is the check's own trouble and not
/// evidence that the node is down: the node is judged healthy and the failure is kept
/// for [`HealthCheck::trouble`]. (Upstream counted a failed handshake as a failed
/// probe, so a wrong CA had every master repaired.) So is a missing token when one is
/// required. A node without an InternalIP is skipped with a log line only: that is the
/// node's, and one such node would otherwise make the trouble flap as other nodes
/// answer.
#[derive(Debug)]
pub struct Endpoint {
    pub protocol: String,
    pub port: u16,
    pub endpoints: Vec<String>,
    pub ok_codes: Vec<u16>,
    pub require_token: bool,
    token: Option<Secret>,
    pub unhealthy_duration: Duration,
    pub unhealthy_annotation: String,
    pub timeout: Duration,
    transport: Transport,
    trouble: Trouble,
}

/// How the HTTP client is had: built once, or rebuilt whenever the CA file changes.
enum Transport {
    Fixed(reqwest::Client),
    Verified { ca_file: PathBuf, cache: Mutex<Option<(Vec<u8>, reqwest::Client)>> },
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Fixed(_) => f.write_str("Unverified"),
            Transport::Verified { ca_file, .. } => f.debug_struct("Verified").field("ca_file", ca_file).finish_non_exhaustive(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Params {
    protocol: Option<String>,
    port: Option<u16>,
    endpoints: Option<Vec<String>>,
    ok_codes: Option<Vec<u16>>,
    require_token: Option<bool>,
    token: Option<String>,
    #[serde(default, with = "humantime_serde")]
    unhealthy_duration: Option<Duration>,
    unhealthy_annotation: Option<String>,
    tls_verify: Option<bool>,
    /// Upstream's spelling of the opposite of `tls-verify`.
    insecure_skip_verify: Option<bool>,
    ca_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

impl Endpoint {
    pub fn from_params(params: &serde_json::Value, path: &str) -> Result<Self, ParamError> {
        let p: Params = parse_params(params, path)?;
        let protocol = p.protocol.unwrap_or_else(|| "https".into()).to_lowercase();
        if protocol != "http" && protocol != "https" {
            return Err(ParamError::new(format!("{path}.protocol"), format!("must be HTTP or HTTPS, got {protocol:?}")));
        }
        let verify = match (p.tls_verify, p.insecure_skip_verify) {
            (Some(v), Some(s)) if v == s => {
                return Err(ParamError::new(format!("{path}.insecure-skip-verify"), "contradicts tls-verify; give one of them"));
            }
            (Some(v), _) => v,
            (None, Some(skip)) => !skip,
            (None, None) => p.ca_file.is_some(),
        };
        crate::ensure_crypto_provider();
        let timeout = p.timeout.unwrap_or(Duration::from_secs(5));
        // Read even when unused (http, or verification off), so that a wrong path is
        // found when the config is loaded rather than when someone turns verification on.
        let configured_ca = match &p.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| ParamError::new(format!("{path}.ca-file"), format!("cannot read {}: {e}", ca.display())))?;
                let client = build_client(timeout, Some(&pem))
                    .map_err(|e| ParamError::new(format!("{path}.ca-file"), format!("{}: {e}", ca.display())))?;
                Some((pem, client))
            }
            None => None,
        };
        let transport = if protocol == "https" && verify {
            Transport::Verified { ca_file: p.ca_file.unwrap_or_else(|| IN_CLUSTER_CA.into()), cache: Mutex::new(configured_ca) }
        } else {
            Transport::Fixed(build_client(timeout, None).map_err(|e| ParamError::new(path, e))?)
        };
        Ok(Self {
            protocol,
            port: p.port.unwrap_or(6443),
            endpoints: p.endpoints.unwrap_or_else(|| vec!["/healthz".into()]),
            ok_codes: p.ok_codes.unwrap_or_else(|| vec![200]),
            require_token: p.require_token.unwrap_or(false) || p.token.is_some(),
            token: p.token.map(Secret),
            unhealthy_duration: p.unhealthy_duration.unwrap_or(Duration::from_secs(300)),
            unhealthy_annotation: p.unhealthy_annotation.unwrap_or_else(|| DEFAULT_UNHEALTHY_ANNOTATION.into()),
            timeout,
            transport,
            trouble: Trouble::default(),
        })
    }

    fn url(&self, ip: &str, endpoint: &str) -> String {
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        format!("{}://{host}:{}/{}", self.protocol, self.port, endpoint.trim_start_matches('/'))
    }

    /// The bearer token, read fresh each time so a rotated service-account token is used.
    async fn bearer(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.0.clone());
        }
        tokio::fs::read_to_string(SERVICE_ACCOUNT_TOKEN).await.ok().map(|t| t.trim().to_string())
    }

    /// `Err` says why the check cannot talk TLS as configured.
    async fn client(&self) -> Result<reqwest::Client, String> {
        let (ca_file, cache) = match &self.transport {
            Transport::Fixed(c) => return Ok(c.clone()),
            Transport::Verified { ca_file, cache } => (ca_file, cache),
        };
        let pem = tokio::fs::read(ca_file).await.map_err(|e| format!("cannot read the CA file {}: {e}", ca_file.display()))?;
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, client)) = cache.as_ref()
            && *cached == pem
        {
            return Ok(client.clone());
        }
        let client = build_client(self.timeout, Some(&pem)).map_err(|e| format!("the CA file {}: {e}", ca_file.display()))?;
        *cache = Some((pem, client.clone()));
        Ok(client)
    }
}

/// With `roots`, only the CAs in that PEM are trusted; without, nothing is verified.
fn build_client(timeout: Duration, roots: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
    let builder = match roots {
        Some(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("not PEM certificates: {}", error_chain(&e)))?;
            if certs.is_empty() {
                return Err("holds no PEM certificate".into());
            }
            builder.tls_certs_only(certs)
        }
        None => builder.danger_accept_invalid_certs(true),
    };
    builder.build().map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// Whether the request failed in the TLS handshake, rather than for want of a server.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's `source` skips the error it wraps, which is where rustls puts
        // its own (under more than one io::Error, as reqwest's connector wraps it again).
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

#[async_trait]
impl HealthCheck for Endpoint {
    fn type_name(&self) -> &str {
        "Endpoint"
    }

    fn unhealthy_duration(&self) -> Duration {
        self.unhealthy_duration
    }

    fn kind(&self) -> CheckKind {
        CheckKind::Probe
    }

    fn unhealthy_annotation(&self) -> Option<&str> {
        Some(&self.unhealthy_annotation)
    }

    async fn probe(&self, node: &NodeView) -> Health {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let ip = node.addresses.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone());
        let Some(ip) = ip else {
            tracing::warn!(node = name, "node has no InternalIP; Endpoint check skipped");
            return Health::Healthy;
        };
        let token = if self.require_token {
            match self.bearer().await {
                Some(t) => Some(t),
                None => {
                    self.trouble.set(
                        "Endpoint",
                        format!("no token to probe with: require-token is set and {SERVICE_ACCOUNT_TOKEN} cannot be read"),
                    );
                    return Health::Healthy;
                }
            }
        } else {
            None
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                self.trouble.set("Endpoint", format!("cannot set up TLS: {e}"));
                return Health::Healthy;
            }
        };
        for ep in &self.endpoints {
            let url = self.url(&ip, ep);
            let mut req = client.get(&url);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(resp) if self.ok_codes.contains(&resp.status().as_u16()) => {}
                Ok(resp) => {
                    self.trouble.clear("Endpoint");
                    return Health::unhealthy(format!("GET {url} answered {}", resp.status().as_u16()));
                }
                Err(e) if e.is_timeout() => {
                    return Health::unhealthy(format!("GET {url} timed out after {}", humantime::format_duration(self.timeout)));
                }
                Err(e) if is_tls_failure(&e) => {
                    let e = e.without_url();
                    self.trouble.set("Endpoint", format!("TLS handshake for GET {url} (node {name}) failed: {}", error_chain(&e)));
                    return Health::Healthy;
                }
                Err(e) => {
                    let e = e.without_url();
                    return Health::unhealthy(format!("GET {url} failed: {}", error_chain(&e)));
                }
            }
        }
        self.trouble.clear("Endpoint");
        Health::Healthy
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;
    use std::sync::Arc;

    async fn serve(code: StatusCode) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get(move |h: axum::http::HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer s3cret") { StatusCode::IM_A_TEAPOT } else { code }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        port
    }

    fn node(ip: &str) -> NodeView {
        serde_json::from_value(json!({"metadata": {"name": "m1"}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}))
            .unwrap()
    }

    #[tokio::test]
    async fn probes_the_internal_ip_and_judges_by_code() {
        let ok = serve(StatusCode::OK).await;
        let bad = serve(StatusCode::SERVICE_UNAVAILABLE).await;
        let check = |port: u16| Endpoint::from_params(&json!({"protocol": "HTTP", "port": port, "okCodes": [200]}), "p").unwrap();
        assert!(check(ok).probe(&node("127.0.0.1")).await.is_healthy());
        match check(bad).probe(&node("127.0.0.1")).await {
            Health::Unhealthy { reason, .. } => {
                assert!(reason.contains("answered 503"), "{reason}")
            }
            h => panic!("{h:?}"),
        }
    }

    #[tokio::test]
    async fn refused_connection_is_unhealthy_and_no_ip_is_skipped() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Endpoint::from_params(&json!({"protocol": "http", "port": port}), "p").unwrap();
        assert!(!c.probe(&node("127.0.0.1")).await.is_healthy());
        let no_ip: NodeView = serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap();
        assert!(c.probe(&no_ip).await.is_healthy());
    }

    #[tokio::test]
    async fn sends_the_configured_token() {
        let port = serve(StatusCode::OK).await;
        let c = Endpoint::from_params(&json!({"protocol": "http", "port": port, "token": "s3cret", "ok-codes": [418]}), "p").unwrap();
        assert!(c.probe(&node("127.0.0.1")).await.is_healthy());
        assert!(!format!("{c:?}").contains("s3cret"), "the token never shows in Debug output");
    }

    #[tokio::test]
    async fn a_missing_token_is_trouble_not_a_verdict() {
        if std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
            return; // in a pod the token is there and is sent
        }
        let port = serve(StatusCode::SERVICE_UNAVAILABLE).await;
        let c = Endpoint::from_params(&json!({"protocol": "http", "port": port, "require-token": true}), "p").unwrap();
        assert!(c.probe(&node("127.0.0.1")).await.is_healthy());
        assert!(c.trouble().unwrap_or_default().contains("no token"), "{:?}", c.trouble());
    }

    /// A CA, and a server certificate for 127.0.0.1 that it signed.
    struct Pki {
        ca_pem: String,
        server: Arc<rustls::ServerConfig>,
    }

    fn pki() -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test cluster CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pki { ca_pem: ca.pem(), server: Arc::new(server) }
    }

    struct TlsListener {
        inner: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    }

    impl axum::serve::Listener for TlsListener {
        type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
        type Addr = std::net::SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let Ok((tcp, addr)) = self.inner.accept().await else { continue };
                // A client that rejects the certificate aborts the handshake; serve the next.
                if let Ok(tls) = self.acceptor.accept(tcp).await {
                    return (tls, addr);
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }

    async fn serve_tls(pki: &Pki, code: StatusCode) -> u16 {
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = inner.local_addr().unwrap().port();
        let listener = TlsListener { inner, acceptor: tokio_rustls::TlsAcceptor::from(pki.server.clone()) };
        let app = axum::Router::new().route("/healthz", axum::routing::get(move || async move { code }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("autohealer-healthcheck-{}-{name}", std::process::id()));
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn https(params: serde_json::Value) -> Endpoint {
        let mut p = json!({"protocol": "HTTPS", "timeout": "2s"});
        p.as_object_mut().unwrap().extend(params.as_object().unwrap().clone());
        Endpoint::from_params(&p, "p").unwrap()
    }

    #[tokio::test]
    async fn tls_is_verified_against_the_ca_file_and_a_failed_handshake_is_trouble() {
        let cluster = pki();
        let other = pki();
        let ok = serve_tls(&cluster, StatusCode::OK).await;
        let down = serve_tls(&cluster, StatusCode::SERVICE_UNAVAILABLE).await;
        let ca = temp_file("right-ca.pem", &cluster.ca_pem);
        let wrong_ca = temp_file("wrong-ca.pem", &other.ca_pem);
        let m1 = node("127.0.0.1");

        // ca-file alone turns verification on, with that CA.
        let c = https(json!({"port": ok, "ca-file": ca}));
        assert!(c.probe(&m1).await.is_healthy());
        assert_eq!(c.trouble(), None);
        let c = https(json!({"port": down, "ca-file": ca, "insecure-skip-verify": false}));
        match c.probe(&m1).await {
            Health::Unhealthy { reason, .. } => assert!(reason.contains("answered 503"), "{reason}"),
            h => panic!("a verified server's 503 is evidence: {h:?}"),
        }

        // A server the CA did not sign says nothing about the node.
        let c = https(json!({"port": down, "ca-file": wrong_ca}));
        let h = c.probe(&m1).await;
        assert!(h.is_healthy(), "a wrong CA is the check's trouble: {h:?}");
        let t = c.trouble().unwrap_or_default();
        assert!(t.contains("TLS handshake") && t.contains("certificate"), "{t}");

        // Verification on without a ca-file: the in-cluster CA, which did not sign this
        // server (or is not there at all, outside a pod).
        let c = https(json!({"port": down, "insecure-skip-verify": false}));
        assert!(c.probe(&m1).await.is_healthy());
        assert!(c.trouble().is_some(), "the failure to verify is reported");

        // No verification: the answer counts whoever signed the certificate.
        let c = https(json!({"port": down, "insecure-skip-verify": true}));
        assert!(!c.probe(&m1).await.is_healthy());
        assert!(https(json!({"port": ok})).probe(&m1).await.is_healthy(), "not verified by default");
        let _ = (std::fs::remove_file(ca), std::fs::remove_file(wrong_ca));
    }

    #[tokio::test]
    async fn the_ca_file_is_reread_and_trouble_clears_when_it_is_fixed() {
        let cluster = pki();
        let other = pki();
        let ok = serve_tls(&cluster, StatusCode::OK).await;
        let ca = temp_file("rotated-ca.pem", &other.ca_pem);
        let c = https(json!({"port": ok, "ca-file": ca}));
        assert!(c.probe(&node("127.0.0.1")).await.is_healthy());
        assert!(c.trouble().is_some());
        std::fs::write(&ca, &cluster.ca_pem).unwrap();
        assert!(c.probe(&node("127.0.0.1")).await.is_healthy());
        assert_eq!(c.trouble(), None, "an answer clears the trouble");
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(c.probe(&node("127.0.0.1")).await.is_healthy());
        assert!(c.trouble().unwrap_or_default().contains("cannot set up TLS"), "{:?}", c.trouble());
        assert!(!format!("{c:?}").contains("BEGIN CERTIFICATE"));
        let _ = std::fs::remove_file(ca);
    }

    #[test]
    fn an_unusable_ca_file_is_a_parameter_error() {
        let e = Endpoint::from_params(&json!({"ca-file": "/nonexistent/ca.pem"}), "healthcheck.master[0].params").unwrap_err();
        assert_eq!(e.path, "healthcheck.master[0].params.ca-file");
        assert!(e.message.contains("/nonexistent/ca.pem"), "{e}");
        let garbage = temp_file("garbage-ca.pem", "not a certificate");
        let e = Endpoint::from_params(&json!({"caFile": garbage, "insecureSkipVerify": true}), "p").unwrap_err();
        assert_eq!(e.path, "p.ca-file", "{e}");
        let _ = std::fs::remove_file(garbage);
    }

    #[test]
    fn bad_protocol_names_the_key() {
        let e = Endpoint::from_params(&json!({"protocol": "ftp"}), "healthcheck.master[0].params").unwrap_err();
        assert_eq!(e.path, "healthcheck.master[0].params.protocol");
    }
}
