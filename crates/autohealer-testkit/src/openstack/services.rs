//! The fake services' request handling.

use super::{Cluster, FakeDriver, Inner, Logged, State, Token, lock};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::sync::Arc;

type Reply = (StatusCode, HeaderMap, Value);

fn reply(code: StatusCode, body: Value) -> Reply {
    (code, HeaderMap::new(), body)
}

pub(super) fn endpoint(state: &State, service_type: &str) -> String {
    match service_type {
        "identity" => state.url("identity/v3"),
        "compute" => state.url("compute/v2.1"),
        "volumev3" | "block-storage" | "volume" => state.url(&format!("volume/v3/{}", super::PROJECT_ID)),
        "orchestration" => state.url(&format!("orchestration/v1/{}", super::PROJECT_ID)),
        _ => state.url("container-infra/v1"),
    }
}

fn catalog(state: &State) -> Value {
    let entry = |t: &str, name: &str| {
        let url = endpoint(state, t);
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|i| json!({"id": format!("ep-{name}-{i}"), "interface": i, "region": super::REGION, "region_id": super::REGION, "url": url}))
            .collect();
        json!({"type": t, "name": name, "id": format!("svc-{name}"), "endpoints": endpoints})
    };
    json!([
        entry("identity", "keystone"),
        entry("compute", "nova"),
        entry("volumev3", "cinderv3"),
        entry("block-storage", "cinder"),
        entry("orchestration", "heat"),
        entry("container-infra", "magnum"),
    ])
}

pub(super) async fn handle(state: Arc<State>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let body_text = String::from_utf8_lossy(&bytes).to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let method = parts.method.clone();
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
    if service != "identity"
        && let Some(keystone) = &state.opts.keystone
    {
        validate_external(&state, keystone, &parts.headers).await;
    }
    let latency = lock(&state.faults).latency;
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    let (code, headers, out) = route(&state, &method, &path, &query, &parts.headers, &body_text, &service);
    lock(&state.log).push(Logged {
        service: service.clone(),
        method: method.to_string(),
        path: path.clone(),
        status: code.as_u16(),
        body: body_text,
    });
    let stall = {
        let mut f = lock(&state.faults);
        let key = format!("{method} {path}");
        // Only a request that was carried out is answered late: that is the doubt to create.
        let carried_out = code.is_success();
        let targeted = f.stalls.iter_mut().find(|(k, n, _)| carried_out && *n > 0 && key.contains(k.as_str())).map(|slot| {
            slot.1 -= 1;
            slot.2
        });
        let read =
            f.read_stalls.filter(|(rate, _)| method == axum::http::Method::GET && service != "identity" && rand::random::<f64>() < *rate);
        targeted.or(read.map(|(_, d)| d))
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    let mut resp = if out.is_null() { code.into_response() } else { (code, axum::Json(out)).into_response() };
    resp.headers_mut().extend(headers);
    resp
}

/// Accepts a token of a real Keystone by validating it there (a token may validate
/// itself), and remembers it until it expires.
async fn validate_external(state: &Arc<State>, keystone: &str, headers: &HeaderMap) {
    let Some(token) = headers.get("x-auth-token").and_then(|h| h.to_str().ok()).map(String::from) else { return };
    if lock(&state.inner).tokens.get(&token).is_some_and(|t| t.expires > Timestamp::now()) {
        return;
    }
    let Ok(resp) = reqwest::Client::new()
        .get(format!("{keystone}/auth/tokens"))
        .header("X-Auth-Token", &token)
        .header("X-Subject-Token", &token)
        .send()
        .await
    else {
        return;
    };
    if resp.status().as_u16() != 200 {
        return;
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if let Some(expires) = body.pointer("/token/expires_at").and_then(Value::as_str).and_then(|e| e.parse::<Timestamp>().ok()) {
        lock(&state.inner).tokens.insert(token, Token { expires });
    }
}

fn route(state: &Arc<State>, method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &str, service: &str) -> Reply {
    if service == "identity" {
        return identity(state, method, path, body);
    }
    let token = headers.get("x-auth-token").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let valid = lock(&state.inner).tokens.get(token).is_some_and(|t| t.expires > Timestamp::now());
    if !valid {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}),
        );
    }
    {
        let mut f = lock(&state.faults);
        if f.error_rate > 0.0 && rand::random::<f64>() < f.error_rate {
            return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"message": "injected fault: service unavailable"}));
        }
        let key = format!("{method} {path}");
        if let Some(slot) = f.conflicts.iter_mut().find(|(k, n)| *n > 0 && key.contains(k.as_str())) {
            slot.1 -= 1;
            return reply(StatusCode::CONFLICT, json!({"conflictingRequest": {"code": 409, "message": "injected conflict"}}));
        }
    }
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap_or(Value::String(body.to_string())) };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match service {
        "compute" => nova(state, method, &segs[2..], &body, headers),
        "volume" => cinder(state, method, &segs[3..]),
        "orchestration" => heat(state, method, &segs[3..], query, &body),
        "container-infra" => magnum(state, method, &segs[2..], &body, headers),
        _ => reply(StatusCode::NOT_FOUND, json!({"message": "no such service"})),
    }
}

fn identity(state: &Arc<State>, method: &Method, path: &str, body: &str) -> Reply {
    let unauthorized = || {
        reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}),
        )
    };
    if !(method == Method::POST && path.ends_with("/v3/auth/tokens")) {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": 404, "title": "Not Found", "message": "The resource could not be found."}}),
        );
    }
    let Ok(req) = serde_json::from_str::<Value>(body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": 400, "title": "Bad Request", "message": "Malformed request body"}}),
        );
    };
    let ident = &req["auth"]["identity"];
    let g = lock(&state.inner);
    let methods: Vec<&str> = ident["methods"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let find_user = |u: &Value| {
        g.users.iter().find(|x| match (u["id"].as_str(), u["name"].as_str()) {
            (Some(id), _) => x.id == id,
            (None, Some(name)) => {
                x.name == name && (u["domain"]["id"].as_str() == Some(&x.domain_id) || u["domain"]["name"].as_str() == Some(&x.domain_name))
            }
            _ => false,
        })
    };
    let (user, project) = if methods == ["password"] {
        let u = &ident["password"]["user"];
        let Some(user) = find_user(u).filter(|x| u["password"].as_str() == Some(&x.password)) else { return unauthorized() };
        let scope = &req["auth"]["scope"]["project"];
        let project = g.projects.iter().find(|p| match (scope["id"].as_str(), scope["name"].as_str()) {
            (Some(id), _) => p.id == id,
            (None, Some(name)) => {
                p.name == name
                    && (scope["domain"]["id"].as_str() == Some(&p.domain_id) || scope["domain"]["name"].as_str() == Some(&p.domain_name))
            }
            _ => false,
        });
        if !scope.is_null() && project.is_none() {
            return unauthorized();
        }
        (user.clone(), project.cloned())
    } else if methods == ["application_credential"] {
        let ac = &ident["application_credential"];
        if !req["auth"]["scope"].is_null() {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": 401, "title": "Unauthorized", "message": "Application credentials cannot request a scope."}}),
            );
        }
        let cred = g.app_creds.iter().find(|c| match (ac["id"].as_str(), ac["name"].as_str()) {
            (Some(id), _) => c.id == id,
            (None, Some(name)) => c.name == name && find_user(&ac["user"]).is_some_and(|u| u.id == c.user_id),
            _ => false,
        });
        let Some(cred) = cred.filter(|c| ac["secret"].as_str() == Some(&c.secret)) else { return unauthorized() };
        let user = g.users.iter().find(|u| u.id == cred.user_id).cloned();
        let project = g.projects.iter().find(|p| p.id == cred.project_id).cloned();
        match user {
            Some(u) => (u, project),
            None => return unauthorized(),
        }
    } else {
        return unauthorized();
    };
    drop(g);
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let expires = Timestamp::now() + SignedDuration::try_from(state.opts.token_ttl).unwrap_or_default();
    {
        let mut inner = lock(&state.inner);
        inner.tokens.insert(token.clone(), Token { expires });
        inner.issued.push(token.clone());
    }
    let mut body = json!({"token": {
        "methods": methods, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(), "issued_at": Timestamp::now().to_string(),
        "user": {"id": user.id, "name": user.name, "domain": {"id": user.domain_id, "name": user.domain_name}},
        "catalog": catalog(state),
    }});
    if let Some(p) = project {
        body["token"]["project"] = json!({"id": p.id, "name": p.name, "domain": {"id": p.domain_id, "name": p.domain_name}});
    }
    let mut h = HeaderMap::new();
    if let Ok(v) = token.parse() {
        h.insert("x-subject-token", v);
    }
    (StatusCode::CREATED, h, body)
}

fn nova_err(code: StatusCode, kind: &str, message: String) -> Reply {
    reply(code, json!({kind: {"code": code.as_u16(), "message": message}}))
}

/// The vm_state behind a server status, as Nova derives the status from it: a server
/// rebooting or rebuilding is still `active` (the task state says the rest), a SHUTOFF
/// one is `stopped`. Nova's 409s name the vm_state, not the status.
fn vm_state(status: &str) -> String {
    match status {
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "REBUILD" | "PASSWORD" | "MIGRATING" | "RESIZE" => "active".into(),
        "SHUTOFF" => "stopped".into(),
        "BUILD" => "building".into(),
        "SOFT_DELETED" => "soft-delete".into(),
        "RESCUE" => "rescued".into(),
        "VERIFY_RESIZE" => "resized".into(),
        other => other.to_lowercase(),
    }
}

fn server_json(s: &super::Server) -> Value {
    json!({"server": {
        "id": s.id, "name": s.name, "status": s.status, "OS-EXT-STS:task_state": s.task_state,
        "OS-EXT-STS:vm_state": vm_state(&s.status), "image": {"id": s.image_id},
        "addresses": {"private": s.addresses.iter().map(|a| json!({"addr": a, "version": 4, "OS-EXT-IPS:type": "fixed"})).collect::<Vec<_>>()},
        "os-extended-volumes:volumes_attached": s.volumes.iter().map(|v| json!({"id": v})).collect::<Vec<_>>(),
    }})
}

fn nova(state: &Arc<State>, method: &Method, segs: &[&str], body: &Value, headers: &HeaderMap) -> Reply {
    let version = headers
        .get("openstack-api-version")
        .and_then(|h| h.to_str().ok())
        .and_then(|v| v.strip_prefix("compute "))
        .or_else(|| headers.get("x-openstack-nova-api-version").and_then(|h| h.to_str().ok()));
    if let Some(v) = version
        && v != "latest"
        && v.strip_prefix("2.").and_then(|m| m.parse::<u32>().ok()).is_none_or(|m| m > 96)
    {
        return nova_err(
            StatusCode::NOT_ACCEPTABLE,
            "computeFault",
            format!("Version {v} is not supported by the API. Minimum is 2.1 and maximum is 2.96."),
        );
    }
    let Some(&"servers") = segs.first() else { return nova_err(StatusCode::NOT_FOUND, "itemNotFound", "Not found".into()) };
    let Some(id) = segs.get(1).map(|s| s.to_string()) else { return nova_err(StatusCode::NOT_FOUND, "itemNotFound", "Not found".into()) };
    let mut g = lock(&state.inner);
    let Some(server) = g.servers.get(&id).cloned() else {
        return nova_err(StatusCode::NOT_FOUND, "itemNotFound", format!("Instance {id} could not be found."));
    };
    match (method, &segs[2..]) {
        (&Method::GET, []) => reply(StatusCode::OK, server_json(&server)),
        (&Method::GET, ["os-volume_attachments"]) => {
            let list: Vec<Value> =
                server.volumes.iter().map(|v| json!({"id": v, "volumeId": v, "serverId": id, "device": "/dev/vdX"})).collect();
            reply(StatusCode::OK, json!({"volumeAttachments": list}))
        }
        (&Method::DELETE, ["os-volume_attachments", vol]) => {
            if !server.volumes.iter().any(|v| v == vol) {
                return nova_err(StatusCode::NOT_FOUND, "itemNotFound", format!("volume_id not found: {vol}"));
            }
            if let Some(s) = g.servers.get_mut(&id) {
                s.volumes.retain(|v| v != vol);
            }
            if let Some(v) = g.volumes.get_mut(*vol) {
                v.server = None;
            }
            reply(StatusCode::ACCEPTED, Value::Null)
        }
        (&Method::POST, ["action"]) => {
            let Some((action, args)) = body.as_object().and_then(|m| m.iter().next()) else {
                return nova_err(StatusCode::BAD_REQUEST, "badRequest", "Malformed request body".into());
            };
            let busy = |what: &str| {
                nova_err(
                    StatusCode::CONFLICT,
                    "conflictingRequest",
                    format!("Cannot '{what}' instance {id} while it is in task_state {}", server.task_state.clone().unwrap_or_default()),
                )
            };
            match action.as_str() {
                "reboot" => {
                    let hard = args["type"].as_str() == Some("HARD");
                    if !matches!(args["type"].as_str(), Some("SOFT" | "HARD")) {
                        return nova_err(StatusCode::BAD_REQUEST, "badRequest", "Invalid input for field/attribute type.".into());
                    }
                    // As Nova: the vm_state is checked before the task state, and only a
                    // hard reboot takes a stopped (or errored) server.
                    let vm = vm_state(&server.status);
                    let allowed: &[&str] = if hard { &["active", "stopped", "paused", "suspended", "error"] } else { &["active"] };
                    if !allowed.contains(&vm.as_str()) {
                        return nova_err(
                            StatusCode::CONFLICT,
                            "conflictingRequest",
                            format!("Cannot 'reboot' instance {id} while it is in vm_state {vm}"),
                        );
                    }
                    if server.task_state.is_some() {
                        return busy("reboot");
                    }
                    if let Some(s) = g.servers.get_mut(&id) {
                        s.status = if hard { "HARD_REBOOT" } else { "REBOOT" }.into();
                        s.task_state = Some(if hard { "reboot_started_hard" } else { "reboot_started" }.into());
                    }
                    drop(g);
                    if let Some(h) = state.hooks() {
                        h.rebooted(&id);
                    }
                    let id2 = id.clone();
                    state.later(state.opts.reboot_time, move |st| {
                        if let Some(s) = lock(&st.inner).servers.get_mut(&id2) {
                            s.status = "ACTIVE".into();
                            s.task_state = None;
                        }
                    });
                    reply(StatusCode::ACCEPTED, Value::Null)
                }
                "os-stop" => {
                    if server.status == "SHUTOFF" {
                        return nova_err(
                            StatusCode::CONFLICT,
                            "conflictingRequest",
                            format!("Cannot 'stop' instance {id} while it is in vm_state stopped"),
                        );
                    }
                    if server.task_state.is_some() {
                        return busy("stop");
                    }
                    if let Some(s) = g.servers.get_mut(&id) {
                        s.task_state = Some("powering-off".into());
                    }
                    drop(g);
                    if let Some(h) = state.hooks() {
                        h.stopped(&id);
                    }
                    let id2 = id.clone();
                    state.later(state.opts.stop_time, move |st| {
                        if let Some(s) = lock(&st.inner).servers.get_mut(&id2) {
                            s.status = "SHUTOFF".into();
                            s.task_state = None;
                        }
                    });
                    reply(StatusCode::ACCEPTED, Value::Null)
                }
                // As Nova: only from vm_state stopped with no task under way; 202 with no
                // body, powering-on, then ACTIVE.
                "os-start" => {
                    let vm = vm_state(&server.status);
                    if vm != "stopped" {
                        return nova_err(
                            StatusCode::CONFLICT,
                            "conflictingRequest",
                            format!("Cannot 'start' instance {id} while it is in vm_state {vm}"),
                        );
                    }
                    if server.task_state.is_some() {
                        return busy("start");
                    }
                    if let Some(s) = g.servers.get_mut(&id) {
                        s.task_state = Some("powering-on".into());
                    }
                    drop(g);
                    let id2 = id.clone();
                    state.later(state.opts.reboot_time, move |st| {
                        let started = match lock(&st.inner).servers.get_mut(&id2) {
                            Some(s) if s.task_state.as_deref() == Some("powering-on") => {
                                s.status = "ACTIVE".into();
                                s.task_state = None;
                                true
                            }
                            _ => false,
                        };
                        if started && let Some(h) = st.hooks() {
                            h.started(&id2);
                        }
                    });
                    reply(StatusCode::ACCEPTED, Value::Null)
                }
                "forceDelete" => {
                    g.servers.remove(&id);
                    drop(g);
                    if let Some(h) = state.hooks() {
                        h.deleted(&id);
                    }
                    reply(StatusCode::ACCEPTED, Value::Null)
                }
                "rebuild" => {
                    let Some(image) = args["imageRef"].as_str() else {
                        return nova_err(
                            StatusCode::BAD_REQUEST,
                            "badRequest",
                            "Invalid input for field/attribute rebuild. Value: imageRef is a required property".into(),
                        );
                    };
                    if server.task_state.is_some() {
                        return busy("rebuild");
                    }
                    if let Some(s) = g.servers.get_mut(&id) {
                        s.image_id = image.into();
                        s.status = "REBUILD".into();
                        s.task_state = Some("rebuilding".into());
                    }
                    let out = g.servers.get(&id).map(server_json).unwrap_or(Value::Null);
                    drop(g);
                    if let Some(h) = state.hooks() {
                        h.rebuilt(&id);
                    }
                    let id2 = id.clone();
                    state.later(state.opts.reboot_time, move |st| {
                        if let Some(s) = lock(&st.inner).servers.get_mut(&id2) {
                            s.status = "ACTIVE".into();
                            s.task_state = None;
                        }
                    });
                    reply(StatusCode::ACCEPTED, out)
                }
                "os-getConsoleOutput" => {
                    let n = args["length"].as_u64().map(|n| n as usize).unwrap_or(server.console.len());
                    let lines = &server.console[server.console.len().saturating_sub(n)..];
                    reply(StatusCode::OK, json!({"output": lines.join("\n")}))
                }
                other => nova_err(StatusCode::BAD_REQUEST, "badRequest", format!("There is no such action: {other}")),
            }
        }
        _ => nova_err(StatusCode::NOT_FOUND, "itemNotFound", "Not found".into()),
    }
}

fn cinder(state: &Arc<State>, method: &Method, segs: &[&str]) -> Reply {
    match (method, segs) {
        (&Method::GET, ["volumes", id]) => match lock(&state.inner).volumes.get(*id) {
            Some(v) => reply(
                StatusCode::OK,
                json!({"volume": {"id": v.id, "status": if v.server.is_some() { "in-use" } else { "available" }, "bootable": if v.bootable { "true" } else { "false" },
                "attachments": v.server.iter().map(|s| json!({"server_id": s, "volume_id": v.id})).collect::<Vec<_>>()}}),
            ),
            None => nova_err(StatusCode::NOT_FOUND, "itemNotFound", format!("Volume {id} could not be found.")),
        },
        _ => nova_err(StatusCode::NOT_FOUND, "itemNotFound", "Not found".into()),
    }
}

fn heat_err(code: StatusCode, kind: &str, message: String) -> Reply {
    let title = if code == StatusCode::NOT_FOUND { "Not Found" } else { "Bad Request" };
    reply(
        code,
        json!({"code": code.as_u16(), "title": title, "explanation": message, "error": {"type": kind, "message": message, "traceback": null}}),
    )
}

fn find_stack<'a>(g: &'a Inner, name_or_id: &str) -> Option<&'a super::Stack> {
    g.stacks.values().find(|s| s.id == name_or_id || s.name == name_or_id)
}

fn heat(state: &Arc<State>, method: &Method, segs: &[&str], query: &str, body: &Value) -> Reply {
    let base = endpoint(state, "orchestration");
    let mut g = lock(&state.inner);
    match (method, segs) {
        (&Method::GET, ["stacks", name]) => match find_stack(&g, name) {
            Some(s) => {
                let mut h = HeaderMap::new();
                if let Ok(v) = format!("{base}/stacks/{}/{}", s.name, s.id).parse() {
                    h.insert(header::LOCATION, v);
                }
                (StatusCode::FOUND, h, json!({"explanation": "The resource was found at the location.", "code": 302, "title": "Found"}))
            }
            None => heat_err(StatusCode::NOT_FOUND, "EntityNotFound", format!("The Stack ({name}) could not be found.")),
        },
        (_, ["stacks", name, id, rest @ ..]) => {
            let Some(stack) = find_stack(&g, id).filter(|s| s.name == *name).cloned() else {
                return heat_err(StatusCode::NOT_FOUND, "EntityNotFound", format!("The Stack ({name}) could not be found."));
            };
            let links = |s: &super::Stack| json!([{"href": format!("{base}/stacks/{}/{}", s.name, s.id), "rel": "self"}]);
            match (method, rest) {
                (&Method::GET, []) => reply(
                    StatusCode::OK,
                    json!({"stack": {"id": stack.id, "stack_name": stack.name, "stack_status": stack.status, "links": links(&stack)}}),
                ),
                (&Method::PATCH, []) => {
                    if stack.status.ends_with("IN_PROGRESS") {
                        return heat_err(
                            StatusCode::CONFLICT,
                            "ActionInProgress",
                            format!("Stack {} already has an action (UPDATE) in progress.", stack.name),
                        );
                    }
                    if let Some(s) = g.stacks.get_mut(&stack.id) {
                        s.status = "UPDATE_IN_PROGRESS".into();
                    }
                    drop(g);
                    let sid = stack.id.clone();
                    state.later(state.opts.update_time, move |st| rebuild_unhealthy(st, &sid));
                    reply(StatusCode::ACCEPTED, Value::Null)
                }
                (&Method::GET, ["resources"]) => {
                    let depth: usize =
                        query.split('&').find_map(|kv| kv.strip_prefix("nested_depth=")).and_then(|d| d.parse().ok()).unwrap_or(0);
                    let mut out = Vec::new();
                    collect_resources(&g, &stack, depth, &base, &mut out);
                    reply(StatusCode::OK, json!({"resources": out}))
                }
                (&Method::PATCH, ["resources", res]) => {
                    let Some(s) = g.stacks.get_mut(&stack.id) else {
                        return heat_err(StatusCode::NOT_FOUND, "EntityNotFound", "gone".into());
                    };
                    let Some(r) = s.resources.iter_mut().find(|r| r.name == *res || r.physical_id == *res) else {
                        return heat_err(
                            StatusCode::NOT_FOUND,
                            "ResourceNotFound",
                            format!("The Resource ({res}) could not be found in Stack {}.", stack.name),
                        );
                    };
                    if body["mark_unhealthy"].as_bool() != Some(true) {
                        return heat_err(StatusCode::BAD_REQUEST, "HTTPBadRequest", "mark_unhealthy must be a boolean".into());
                    }
                    r.status = "CHECK_FAILED".into();
                    r.reason = body["resource_status_reason"].as_str().unwrap_or_default().into();
                    reply(StatusCode::OK, Value::Null)
                }
                _ => heat_err(StatusCode::NOT_FOUND, "NotFound", "no such call".into()),
            }
        }
        _ => heat_err(StatusCode::NOT_FOUND, "NotFound", "no such call".into()),
    }
}

fn collect_resources(g: &Inner, stack: &super::Stack, depth: usize, base: &str, out: &mut Vec<Value>) {
    for r in &stack.resources {
        out.push(json!({
            "resource_name": r.name, "resource_type": r.type_, "physical_resource_id": r.physical_id, "resource_status": r.status,
            "resource_status_reason": r.reason, "stack_name": stack.name,
            "links": [{"href": format!("{base}/stacks/{}/{}/resources/{}", stack.name, stack.id, r.name), "rel": "self"},
                      {"href": format!("{base}/stacks/{}/{}", stack.name, stack.id), "rel": "stack"}],
        }));
    }
    if depth > 0 {
        for child in g.stacks.values().filter(|s| s.parent.as_ref().is_some_and(|(_, id)| *id == stack.id)) {
            collect_resources(g, child, depth - 1, base, out);
        }
    }
}

/// A finished stack update rebuilds every server resource marked unhealthy.
fn rebuild_unhealthy(st: &Arc<State>, stack_id: &str) {
    let mut rebuilt = Vec::new();
    {
        let mut g = lock(&st.inner);
        let mut family = vec![stack_id.to_string()];
        family.extend(g.stacks.values().filter(|s| s.parent.as_ref().is_some_and(|(_, id)| id == stack_id)).map(|s| s.id.clone()));
        for id in family {
            let Some(s) = g.stacks.get_mut(&id) else { continue };
            s.status = "UPDATE_COMPLETE".into();
            for r in s.resources.iter_mut().filter(|r| r.status == "CHECK_FAILED") {
                r.status = "UPDATE_COMPLETE".into();
                if r.type_ == "OS::Nova::Server" {
                    rebuilt.push(r.physical_id.clone());
                }
            }
        }
        for id in &rebuilt {
            if let Some(s) = g.servers.get_mut(id) {
                s.status = "ACTIVE".into();
                s.task_state = None;
            }
        }
    }
    if let Some(h) = st.hooks() {
        for id in rebuilt {
            h.rebuilt(&id);
        }
    }
}

fn magnum_err(code: StatusCode, title: &str, detail: String) -> Reply {
    reply(
        code,
        json!({"errors": [{"request_id": "", "code": "client", "status": code.as_u16(), "title": title, "detail": detail, "links": []}]}),
    )
}

fn cluster_json(c: &Cluster, minor: u32, node_count: usize, master_count: usize) -> Value {
    let mut v = json!({"uuid": c.uuid, "name": c.name, "status": c.status, "status_reason": c.status_reason, "labels": c.labels, "node_count": node_count, "master_count": master_count,
        "health_status": c.health_status, "health_status_reason": c.health_status_reason, "project_id": super::PROJECT_ID,
        "cluster_template_id": c.template});
    if minor >= 13 {
        v["cluster_id"] = json!(c.stack_id);
    } else {
        v["stack_id"] = json!(c.stack_id);
    }
    v
}

fn magnum(state: &Arc<State>, method: &Method, segs: &[&str], body: &Value, headers: &HeaderMap) -> Reply {
    let max = state.opts.magnum_max_minor;
    let asked =
        headers.get("openstack-api-version").and_then(|h| h.to_str().ok()).and_then(|v| v.strip_prefix("container-infra ")).map(str::trim);
    let minor = match asked {
        None => 1,
        Some("latest") => max,
        Some(v) => match v.strip_prefix("1.").and_then(|m| m.parse::<u32>().ok()) {
            Some(m) if (1..=max).contains(&m) => m,
            _ => {
                return magnum_err(
                    StatusCode::NOT_ACCEPTABLE,
                    "Not Acceptable",
                    format!(
                        "Version {v} was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.{max}]."
                    ),
                );
            }
        },
    };
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("openstack-api-version", format!("container-infra 1.{minor}")),
        ("openstack-api-minimum-version", "container-infra 1.1".into()),
        ("openstack-api-maximum-version", format!("container-infra 1.{max}")),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    let (code, _, out) = magnum_call(state, method, segs, body, minor);
    (code, h, out)
}

fn magnum_call(state: &Arc<State>, method: &Method, segs: &[&str], body: &Value, minor: u32) -> Reply {
    let mut g = lock(&state.inner);
    if let (&Method::GET, ["clustertemplates", id]) = (method, segs) {
        return match g.templates.get(*id) {
            Some(labels) => reply(
                StatusCode::OK,
                json!({"uuid": id, "name": id, "labels": labels, "coe": "kubernetes", "server_type": "vm", "cluster_distro": "ubuntu"}),
            ),
            None => magnum_err(StatusCode::NOT_FOUND, "Not Found", format!("ClusterTemplate {id} could not be found.")),
        };
    }
    let Some(("clusters", id)) = segs.first().copied().zip(segs.get(1).copied()) else {
        return magnum_err(StatusCode::NOT_FOUND, "Not Found", "no such call".into());
    };
    let Some(cluster) = g.clusters.values().find(|c| c.uuid == id || c.name == id).cloned() else {
        return magnum_err(StatusCode::NOT_FOUND, "Not Found", format!("Cluster {id} could not be found."));
    };
    let count = |g: &Inner, role: &str| {
        g.nodegroups.iter().filter(|n| n.cluster == cluster.uuid && n.role == role).map(|n| n.servers.len()).sum::<usize>()
    };
    let ng_json = |g: &Inner, n: &super::NodeGroup, detail: bool| {
        let mut v = json!({"uuid": n.uuid, "name": n.name, "cluster_id": n.cluster, "role": n.role, "node_count": n.node_count, "is_default": true, "status": n.status, "min_node_count": 1, "max_node_count": n.max_node_count});
        if detail {
            v["node_addresses"] =
                json!(n.servers.iter().filter_map(|s| g.servers.get(s)).flat_map(|s| s.addresses.clone()).collect::<Vec<_>>());
        }
        v
    };
    match (method, &segs[2..]) {
        (&Method::GET, []) => reply(StatusCode::OK, cluster_json(&cluster, minor, count(&g, "worker"), count(&g, "master"))),
        (&Method::PATCH, []) => {
            let Some(ops) = body.as_array() else {
                return magnum_err(StatusCode::BAD_REQUEST, "Bad Request", "the body must be a JSON patch".into());
            };
            let Some(c) = g.clusters.get_mut(&cluster.uuid) else { return magnum_err(StatusCode::NOT_FOUND, "Not Found", "gone".into()) };
            for op in ops {
                match (op["op"].as_str(), op["path"].as_str()) {
                    (Some("replace" | "add"), Some("/health_status")) => c.health_status = op["value"].as_str().map(String::from),
                    (Some("replace" | "add"), Some("/health_status_reason")) => c.health_status_reason = op["value"].clone(),
                    (_, path) => {
                        return magnum_err(StatusCode::BAD_REQUEST, "Bad Request", format!("cannot patch {path:?} of a cluster here"));
                    }
                }
            }
            reply(StatusCode::ACCEPTED, json!({"uuid": cluster.uuid}))
        }
        (&Method::GET, ["nodegroups"]) => {
            let list: Vec<Value> = g.nodegroups.iter().filter(|n| n.cluster == cluster.uuid).map(|n| ng_json(&g, n, false)).collect();
            reply(StatusCode::OK, json!({"nodegroups": list}))
        }
        (&Method::GET, ["nodegroups", ng]) => {
            match g.nodegroups.iter().find(|n| n.cluster == cluster.uuid && (n.uuid == *ng || n.name == *ng)) {
                Some(n) => reply(StatusCode::OK, ng_json(&g, n, true)),
                None => magnum_err(StatusCode::NOT_FOUND, "Not Found", format!("Nodegroup {ng} could not be found.")),
            }
        }
        (&Method::POST, ["actions", "resize"]) => resize(state, g, &cluster, body),
        _ => magnum_err(StatusCode::NOT_FOUND, "Not Found", "no such call".into()),
    }
}

/// `POST /v1/clusters/{id}/actions/resize` as Magnum runs it: the API checks the body
/// and the node group's bounds and answers 202; the conductor then refuses (silently,
/// the call is asynchronous) a cluster in a status outside its allow list, sets the
/// group's count and calls the driver (`magnum/conductor/handlers/cluster_conductor.py`
/// `cluster_resize`), and each driver's `resize_cluster` does what [`FakeDriver`] says.
fn resize(state: &Arc<State>, mut g: std::sync::MutexGuard<'_, Inner>, cluster: &Cluster, body: &Value) -> Reply {
    let Some(node_count) = body["node_count"].as_u64() else {
        return magnum_err(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Invalid input for field/attribute node_count. Mandatory field missing.".into(),
        );
    };
    if node_count < 1 {
        return magnum_err(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Invalid input for field/attribute node_count. Value should be greater or equal to 1".into(),
        );
    }
    let group = body["nodegroup"].as_str().unwrap_or("default-worker");
    let remove: Vec<String> =
        body["nodes_to_remove"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let Some(ng_index) = g.nodegroups.iter().position(|n| n.cluster == cluster.uuid && (n.name == group || n.uuid == group)) else {
        return magnum_err(StatusCode::NOT_FOUND, "Not Found", format!("Nodegroup {group} could not be found."));
    };
    if g.nodegroups[ng_index].role == "master" {
        return magnum_err(StatusCode::BAD_REQUEST, "Bad Request", "Resizing a master nodegroup is not supported.".into());
    }
    if let Some(max) = g.nodegroups[ng_index].max_node_count.filter(|max| node_count as usize > *max) {
        return magnum_err(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            format!("Resizing {group} outside the allowed range: min_node_count = 1, max_node_count = {max}"),
        );
    }
    let accepted = reply(StatusCode::ACCEPTED, json!({"uuid": cluster.uuid}));
    let busy = cluster.status.ends_with("_IN_PROGRESS") || g.nodegroups[ng_index].status.ends_with("_IN_PROGRESS");
    // vexxhost's group stays in progress while a machine of it is not Ready, with nothing
    // being applied: a resize then is not one on top of another.
    let only_waits_for_ready = cluster.driver == FakeDriver::ClusterApi
        && cluster.updates == cluster.applied
        && g.nodegroups[ng_index].servers.iter().any(|s| g.unready.contains(s));
    if let Some(c) = g.clusters.get_mut(&cluster.uuid) {
        c.resizes.push((group.to_string(), node_count, remove.clone()));
        if c.updates != c.applied || (busy && !only_waits_for_ready) {
            c.overlapping_resizes += 1;
        }
    }
    let allowed = cluster.status.ends_with("_COMPLETE")
        || matches!(cluster.status.as_str(), "UPDATE_FAILED" | "UPDATE_IN_PROGRESS" | "ROLLBACK_FAILED");
    if !allowed {
        return accepted;
    }
    if cluster.driver == FakeDriver::Heat {
        if let Some(missing) = remove.iter().find(|r| !g.nodegroups[ng_index].servers.contains(r)) {
            // The Heat driver's scale manager fails the update on a server it does not hold.
            let reason = format!("node {missing} is not in nodegroup {group}");
            fail(&mut g, &cluster.uuid, ng_index, reason);
            return accepted;
        }
        if busy {
            let reason = format!("ERROR: Stack {}-stack already has an action (UPDATE) in progress.", cluster.name);
            fail(&mut g, &cluster.uuid, ng_index, reason);
            return accepted;
        }
    }
    let have = g.nodegroups[ng_index].servers.clone();
    let target = node_count as usize;
    let gone: Vec<String> = match cluster.driver {
        FakeDriver::Heat => remove.clone(),
        FakeDriver::ClusterApi => {
            let mut marked: Vec<String> = have.iter().filter(|s| remove.contains(s)).cloned().collect();
            marked.extend(have.iter().rev().filter(|s| !remove.contains(s)).cloned());
            marked.truncate(have.len().saturating_sub(target));
            marked
        }
        FakeDriver::CapiHelm => have.iter().rev().take(have.len().saturating_sub(target)).cloned().collect(),
    };
    let role = g.nodegroups[ng_index].role.clone();
    // The Heat driver's stack update removes the servers at once; Cluster API deletes a
    // Machine (drain, then the server) while the update is applied.
    let (gone, later_gone) = if cluster.driver == FakeDriver::Heat { (gone, vec![]) } else { (vec![], gone) };
    g.nodegroups[ng_index].servers.retain(|s| !gone.contains(s));
    g.nodegroups[ng_index].node_count = target;
    g.nodegroups[ng_index].status = "UPDATE_IN_PROGRESS".into();
    for r in &gone {
        g.servers.remove(r);
    }
    let generation = match g.clusters.get_mut(&cluster.uuid) {
        Some(c) => {
            c.status = "UPDATE_IN_PROGRESS".into();
            c.status_reason = None;
            c.updates += 1;
            c.updates
        }
        None => 0,
    };
    drop(g);
    if let Some(h) = state.hooks() {
        for r in &gone {
            h.deleted(r);
        }
    }
    let (uuid, name, driver) = (cluster.uuid.clone(), cluster.name.clone(), cluster.driver);
    state.later(state.opts.update_time, move |st| {
        let mut created = Vec::new();
        {
            let mut g = lock(&st.inner);
            if let Some(c) = g.clusters.get_mut(&uuid) {
                c.applied = c.applied.max(generation);
            }
            if let Some(n) = g.nodegroups.get_mut(ng_index) {
                n.servers.retain(|s| !later_gone.contains(s));
            }
            for r in &later_gone {
                g.servers.remove(r);
            }
            if g.clusters.get(&uuid).is_none_or(|c| c.updates != generation || c.status != "UPDATE_IN_PROGRESS") {
                drop(g);
                if let Some(h) = st.hooks() {
                    for r in &later_gone {
                        h.deleted(r);
                    }
                }
                return;
            }
            let have = g.nodegroups.get(ng_index).map_or(0, |n| n.servers.len());
            for i in have..target {
                let id = uuid::Uuid::new_v4().to_string();
                let server_name = format!("{name}-{role}-{}", &id[..8]);
                let address = format!("10.0.{}.{}", i / 250, i % 250 + 10);
                g.servers.insert(
                    id.clone(),
                    super::Server {
                        id: id.clone(),
                        name: server_name.clone(),
                        status: "ACTIVE".into(),
                        task_state: None,
                        image_id: "img-k8s".into(),
                        addresses: vec![address],
                        volumes: vec![],
                        console: vec![],
                    },
                );
                if let Some(n) = g.nodegroups.get_mut(ng_index) {
                    n.servers.push(id.clone());
                }
                created.push((id, server_name));
            }
            let waits_for_ready = driver == FakeDriver::ClusterApi
                && g.nodegroups.get(ng_index).is_some_and(|n| n.servers.iter().any(|s| g.unready.contains(s)));
            if !waits_for_ready {
                if let Some(n) = g.nodegroups.get_mut(ng_index) {
                    n.status = "UPDATE_COMPLETE".into();
                }
                if let Some(c) = g.clusters.get_mut(&uuid) {
                    c.status = "UPDATE_COMPLETE".into();
                }
            }
        }
        if let Some(h) = st.hooks() {
            for r in &later_gone {
                h.deleted(r);
            }
            for (id, n) in created {
                if let Some(address) = h.created(&id, &n, &role)
                    && let Some(s) = lock(&st.inner).servers.get_mut(&id)
                {
                    s.addresses = vec![address];
                }
            }
        }
    });
    accepted
}

/// What the conductor does when the driver raises: the cluster and the group fail with
/// the reason, and the group's count goes back.
fn fail(g: &mut Inner, cluster: &str, ng_index: usize, reason: String) {
    if let Some(c) = g.clusters.get_mut(cluster) {
        c.status = "UPDATE_FAILED".into();
        c.status_reason = Some(reason);
    }
    if let Some(n) = g.nodegroups.get_mut(ng_index) {
        n.status = "UPDATE_FAILED".into();
    }
}
