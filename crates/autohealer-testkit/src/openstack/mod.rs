//! A fake OpenStack: Keystone v3, Nova, Cinder v3, Heat and Magnum behind one real
//! HTTP server on 127.0.0.1, with the wire formats, error envelopes, redirects,
//! microversions and time-driven state changes the healer's provider depends on.
//! Machine-level effects (a reboot, a stop, a deletion, a new server) are reported to
//! [`MachineHooks`], which the simulated cluster implements, so that the Kubernetes
//! side of a node follows what happened to its server.

mod services;

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the cloud did to machines, for the simulated cluster to follow.
pub trait MachineHooks: Send + Sync {
    fn rebooted(&self, server_id: &str);
    fn stopped(&self, server_id: &str);
    /// A stopped server was started again (`os-start`) and has booted. A no-op by
    /// default so that hooks written before Nova's start existed still build; the
    /// simulated cluster should power its machine back on here.
    fn started(&self, _server_id: &str) {}
    fn deleted(&self, server_id: &str);
    /// A server was rebuilt in place (Heat, Nova rebuild): same id, fresh machine.
    fn rebuilt(&self, server_id: &str);
    /// A new server was created for a node group (Magnum resize); returns the address
    /// the machine got, when the simulation chooses it.
    fn created(&self, server_id: &str, name: &str, role: &str) -> Option<String>;
}

#[derive(Debug, Clone)]
pub struct OsOptions {
    pub token_ttl: Duration,
    /// How long a server stays in REBOOT / HARD_REBOOT.
    pub reboot_time: Duration,
    pub stop_time: Duration,
    /// How long a Heat stack update or a Magnum resize runs.
    pub update_time: Duration,
    /// The newest Magnum microversion served (minor of `container-infra 1.x`).
    pub magnum_max_minor: u32,
    /// The port to listen on; 0 for one the OS picks.
    pub port: u16,
    /// A real Keystone (its `/v3` URL) whose tokens the services accept, validated
    /// there as keystonemiddleware does; `None` for the built-in fake Keystone.
    pub keystone: Option<String>,
}

impl Default for OsOptions {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(3600),
            reboot_time: Duration::from_millis(500),
            stop_time: Duration::from_millis(200),
            update_time: Duration::from_secs(1),
            magnum_max_minor: 13,
            port: 0,
            keystone: None,
        }
    }
}

/// One request the fake served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub service: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub domain_name: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub domain_name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct AppCred {
    pub id: String,
    pub name: String,
    pub secret: String,
    pub user_id: String,
    pub project_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub expires: k8s_openapi::jiff::Timestamp,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: String,
    pub task_state: Option<String>,
    pub image_id: String,
    pub addresses: Vec<String>,
    pub volumes: Vec<String>,
    pub console: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub bootable: bool,
    pub server: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StackResource {
    pub name: String,
    pub type_: String,
    pub physical_id: String,
    pub status: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Stack {
    pub id: String,
    pub name: String,
    pub status: String,
    /// The stack this one is nested in, as (name, id).
    pub parent: Option<(String, String)>,
    pub resources: Vec<StackResource>,
}

/// The Magnum driver a fake cluster plays: what its resize does, as each driver's
/// `resize_cluster` does it (see `autohealer_openstack::config::MagnumDriver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeDriver {
    /// `nodes_to_remove` at an unchanged count replaces those servers; a resize while
    /// the stack updates fails the cluster (`UPDATE_FAILED`), as Heat refuses it.
    Heat,
    /// vexxhost/magnum-cluster-api: the servers in `nodes_to_remove` are deleted only
    /// when the count goes down; an unchanged count does nothing; no Heat stack.
    ClusterApi,
    /// openstack/magnum-capi-helm: `nodes_to_remove` is ignored, the count applies (a
    /// lower count deletes the newest machine); no Heat stack.
    CapiHelm,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub uuid: String,
    pub name: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stack_id: Option<String>,
    pub health_status: Option<String>,
    pub health_status_reason: Value,
    pub driver: FakeDriver,
    pub template: String,
    /// Resizes received while one of the cluster was under way.
    pub overlapping_resizes: usize,
    /// Resizes received, with the count and the servers named.
    pub resizes: Vec<(String, u64, Vec<String>)>,
    /// Updates begun; only the last one's end settles the cluster.
    pub updates: u64,
    /// The last update whose machines were created and deleted.
    pub applied: u64,
}

#[derive(Debug, Clone)]
pub struct NodeGroup {
    pub uuid: String,
    pub name: String,
    pub cluster: String,
    pub role: String,
    pub servers: Vec<String>,
    /// The count asked for (Magnum's `node_count`), which the servers follow.
    pub node_count: usize,
    pub status: String,
    /// Magnum refuses a resize above it (`NGResizeOutBounds`).
    pub max_node_count: Option<usize>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub users: Vec<User>,
    pub projects: Vec<Project>,
    pub app_creds: Vec<AppCred>,
    pub tokens: HashMap<String, Token>,
    /// Every token ever issued, expired ones included.
    pub issued: Vec<String>,
    pub servers: BTreeMap<String, Server>,
    pub volumes: BTreeMap<String, Volume>,
    pub stacks: BTreeMap<String, Stack>,
    pub clusters: BTreeMap<String, Cluster>,
    pub nodegroups: Vec<NodeGroup>,
    /// Cluster templates' labels, by id.
    pub templates: BTreeMap<String, BTreeMap<String, String>>,
    /// Servers whose node is not Ready: vexxhost's driver keeps a node group
    /// `UPDATE_IN_PROGRESS` while its MachineDeployment has fewer Ready replicas than
    /// it wants, which a grow next to a broken machine leaves it with.
    pub unready: std::collections::BTreeSet<String>,
}

#[derive(Default)]
pub(crate) struct Faults {
    pub latency: Option<Duration>,
    pub error_rate: f64,
    /// Answer the next N requests whose "METHOD path" contains the key with 409.
    pub conflicts: Vec<(String, usize)>,
    /// Answer the next N requests whose "METHOD path" contains the key only after this
    /// long, having carried them out: the client times out not knowing they happened.
    pub stalls: Vec<(String, usize, Duration)>,
    /// This share of GET requests is answered only after the duration.
    pub read_stalls: Option<(f64, Duration)>,
}

pub(crate) struct State {
    pub opts: OsOptions,
    pub addr: SocketAddr,
    pub inner: Mutex<Inner>,
    pub log: Mutex<Vec<Logged>>,
    pub faults: Mutex<Faults>,
    pub hooks: Mutex<Option<Arc<dyn MachineHooks>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub fn hooks(&self) -> Option<Arc<dyn MachineHooks>> {
        lock(&self.hooks).clone()
    }

    /// Runs `f` on the state after `d`, as the cloud's own workers would.
    pub fn later(self: &Arc<Self>, d: Duration, f: impl FnOnce(&Arc<State>) + Send + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            f(&me);
        });
    }

    pub fn url(&self, service: &str) -> String {
        format!("http://{}/{service}", self.addr)
    }
}

/// A running fake OpenStack; it stops when dropped.
pub struct FakeOpenStack {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenStack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identities a fresh fake knows.
pub const USER_ID: &str = "u-healer";
pub const USER_NAME: &str = "healer";
pub const PASSWORD: &str = "healer-password";
pub const DOMAIN: &str = "Default";
pub const PROJECT_ID: &str = "p-cluster";
pub const PROJECT_NAME: &str = "cluster-project";
pub const APP_CRED_ID: &str = "ac-healer";
pub const APP_CRED_NAME: &str = "healer-cred";
pub const APP_CRED_SECRET: &str = "app-cred-secret";
pub const REGION: &str = "RegionOne";

impl FakeOpenStack {
    pub async fn start(opts: OsOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let mut inner = Inner::default();
        inner.users.push(User {
            id: USER_ID.into(),
            name: USER_NAME.into(),
            domain_id: "default".into(),
            domain_name: DOMAIN.into(),
            password: PASSWORD.into(),
        });
        inner.projects.push(Project {
            id: PROJECT_ID.into(),
            name: PROJECT_NAME.into(),
            domain_id: "default".into(),
            domain_name: DOMAIN.into(),
        });
        inner.app_creds.push(AppCred {
            id: APP_CRED_ID.into(),
            name: APP_CRED_NAME.into(),
            secret: APP_CRED_SECRET.into(),
            user_id: USER_ID.into(),
            project_id: PROJECT_ID.into(),
        });
        let state = Arc::new(State {
            opts,
            addr,
            inner: Mutex::new(inner),
            log: Mutex::new(vec![]),
            faults: Mutex::new(Faults::default()),
            hooks: Mutex::new(None),
        });
        let s2 = state.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let s = s2.clone();
            async move { services::handle(s, req).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, task })
    }

    /// Keystone's URL, as `auth-url` takes it.
    pub fn auth_url(&self) -> String {
        self.state.url("identity/v3")
    }

    /// The URL of a service as the catalog lists it (`compute`, `volumev3`, ...).
    pub fn endpoint(&self, service_type: &str) -> String {
        services::endpoint(&self.state, service_type)
    }

    pub fn set_hooks(&self, hooks: Arc<dyn MachineHooks>) {
        *lock(&self.state.hooks) = Some(hooks);
    }

    /// Adds a server with a bootable root volume and, optionally, a data volume.
    pub fn add_server(&self, id: &str, name: &str, address: &str, data_volume: bool) {
        let mut g = lock(&self.state.inner);
        let root = format!("vol-root-{id}");
        let mut volumes = vec![root.clone()];
        g.volumes.insert(root.clone(), Volume { id: root, bootable: true, server: Some(id.into()) });
        if data_volume {
            let data = format!("vol-data-{id}");
            g.volumes.insert(data.clone(), Volume { id: data.clone(), bootable: false, server: Some(id.into()) });
            volumes.push(data);
        }
        let console = (1..=60).map(|i| format!("[{i:>4}.000000] {name}: simulated boot line {i}")).collect();
        g.servers.insert(
            id.into(),
            Server {
                id: id.into(),
                name: name.into(),
                status: "ACTIVE".into(),
                task_state: None,
                image_id: "img-k8s".into(),
                addresses: vec![address.into()],
                volumes,
                console,
            },
        );
    }

    /// A Magnum cluster with a Heat stack (unless `heat` is false: the newer drivers)
    /// and node groups `default-master` and `default-worker` holding the given servers.
    pub fn add_cluster(&self, uuid: &str, name: &str, masters: &[String], workers: &[String], heat: bool) {
        let mut g = lock(&self.state.inner);
        let stack_id = heat.then(|| format!("stack-{uuid}"));
        if let Some(sid) = &stack_id {
            let stack_name = format!("{name}-stack");
            let mut parent_resources = Vec::new();
            for (role, list) in [("master", masters), ("worker", workers)] {
                let group_id = format!("{sid}-{role}s");
                let group_name = format!("{stack_name}-kube_{role}s");
                parent_resources.push(StackResource {
                    name: format!("kube_{role}s"),
                    type_: "OS::Heat::ResourceGroup".into(),
                    physical_id: group_id.clone(),
                    status: "CREATE_COMPLETE".into(),
                    reason: String::new(),
                });
                let mut resources = Vec::new();
                for (i, server) in list.iter().enumerate() {
                    resources.push(StackResource {
                        name: format!("kube-{role}-{i}"),
                        type_: "OS::Nova::Server".into(),
                        physical_id: server.clone(),
                        status: "CREATE_COMPLETE".into(),
                        reason: String::new(),
                    });
                    resources.push(StackResource {
                        name: format!("kube-{role}-{i}-root"),
                        type_: "OS::Cinder::Volume".into(),
                        physical_id: format!("vol-root-{server}"),
                        status: "CREATE_COMPLETE".into(),
                        reason: String::new(),
                    });
                }
                g.stacks.insert(
                    group_id.clone(),
                    Stack {
                        id: group_id,
                        name: group_name,
                        status: "CREATE_COMPLETE".into(),
                        parent: Some((stack_name.clone(), sid.clone())),
                        resources,
                    },
                );
            }
            g.stacks.insert(
                sid.clone(),
                Stack { id: sid.clone(), name: stack_name, status: "CREATE_COMPLETE".into(), parent: None, resources: parent_resources },
            );
        }
        let labels = BTreeMap::from([("auto_healing_enabled".to_string(), "true".to_string())]);
        let template = format!("ct-{uuid}");
        g.templates.insert(template.clone(), BTreeMap::new());
        g.clusters.insert(
            uuid.into(),
            Cluster {
                uuid: uuid.into(),
                name: name.into(),
                status: "CREATE_COMPLETE".into(),
                status_reason: None,
                labels,
                stack_id,
                health_status: None,
                health_status_reason: Value::Object(Default::default()),
                driver: FakeDriver::Heat,
                template,
                overlapping_resizes: 0,
                resizes: vec![],
                updates: 0,
                applied: 0,
            },
        );
        for (role, list) in [("master", masters), ("worker", workers)] {
            g.nodegroups.push(NodeGroup {
                uuid: format!("ng-{uuid}-{role}"),
                name: format!("default-{role}"),
                cluster: uuid.into(),
                role: role.into(),
                servers: list.to_vec(),
                node_count: list.len(),
                status: "CREATE_COMPLETE".into(),
                max_node_count: None,
            });
        }
    }

    /// Makes the cluster one of a Cluster API driver: its Heat stacks go, and `stack_id`
    /// holds a Cluster API name of the form that driver gives (capi-helm's template also
    /// gets its chart label). Back to `Heat` is not offered: build the cluster with one.
    pub fn set_magnum_driver(&self, uuid: &str, driver: FakeDriver) {
        let mut g = lock(&self.state.inner);
        let Some(c) = g.clusters.get(uuid).cloned() else { return };
        if let Some(sid) = &c.stack_id {
            g.stacks.retain(|id, s| id != sid && s.parent.as_ref().is_none_or(|(_, p)| p != sid));
        }
        let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().filter(char::is_ascii_alphanumeric).collect();
        let stack_id = match driver {
            FakeDriver::Heat => c.stack_id.clone(),
            FakeDriver::ClusterApi => Some(format!("kube-{}", &suffix[..5])),
            FakeDriver::CapiHelm => Some(format!("{}-{}", c.name.to_lowercase(), &suffix[..12])),
        };
        if driver == FakeDriver::CapiHelm
            && let Some(t) = g.templates.get_mut(&c.template)
        {
            t.insert("capi_helm_chart_version".into(), "0.16.0".into());
        }
        if let Some(c) = g.clusters.get_mut(uuid) {
            c.driver = driver;
            c.stack_id = stack_id;
        }
    }

    /// Says whether a server's node is Ready, as the Cluster API driver's MachineDeployment
    /// status counts it.
    pub fn set_machine_ready(&self, server: &str, ready: bool) {
        let mut g = lock(&self.state.inner);
        if ready {
            g.unready.remove(server);
        } else {
            g.unready.insert(server.to_string());
        }
    }

    pub fn set_max_node_count(&self, cluster: &str, role: &str, max: Option<usize>) {
        if let Some(n) = lock(&self.state.inner).nodegroups.iter_mut().find(|n| n.cluster == cluster && n.role == role) {
            n.max_node_count = max;
        }
    }

    pub fn set_cluster_status_reason(&self, uuid: &str, status: &str, reason: &str) {
        if let Some(c) = lock(&self.state.inner).clusters.get_mut(uuid) {
            c.status = status.into();
            c.status_reason = Some(reason.into());
        }
    }

    /// What a Cluster API MachineHealthCheck does to an unhealthy machine: its server is
    /// deleted and its MachineSet creates a fresh one in the same group, Magnum's count
    /// unchanged. Returns false if no node group holds the server.
    pub fn remediate_machine(&self, server: &str) -> bool {
        let (role, name, index) = {
            let mut g = lock(&self.state.inner);
            let Some(i) = g.nodegroups.iter().position(|n| n.servers.iter().any(|s| s == server)) else { return false };
            g.nodegroups[i].servers.retain(|s| s != server);
            g.servers.remove(server);
            let cluster = g.nodegroups[i].cluster.clone();
            let name = g.clusters.get(&cluster).map(|c| c.name.clone()).unwrap_or_default();
            (g.nodegroups[i].role.clone(), name, i)
        };
        if let Some(h) = self.state.hooks() {
            h.deleted(server);
        }
        self.state.later(self.state.opts.update_time, move |st| {
            let id = uuid::Uuid::new_v4().to_string();
            let server_name = format!("{name}-{role}-{}", &id[..8]);
            {
                let mut g = lock(&st.inner);
                g.servers.insert(
                    id.clone(),
                    Server {
                        id: id.clone(),
                        name: server_name.clone(),
                        status: "ACTIVE".into(),
                        task_state: None,
                        image_id: "img-k8s".into(),
                        addresses: vec![],
                        volumes: vec![],
                        console: vec![],
                    },
                );
                if let Some(n) = g.nodegroups.get_mut(index) {
                    n.servers.push(id.clone());
                }
            }
            if let Some(h) = st.hooks()
                && let Some(address) = h.created(&id, &server_name, &role)
                && let Some(s) = lock(&st.inner).servers.get_mut(&id)
            {
                s.addresses = vec![address];
            }
        });
        true
    }

    /// The node group's count as Magnum reports it.
    pub fn nodegroup_count(&self, cluster: &str, role: &str) -> usize {
        lock(&self.state.inner).nodegroups.iter().find(|n| n.cluster == cluster && n.role == role).map_or(0, |n| n.node_count)
    }

    pub fn set_cluster_label(&self, uuid: &str, key: &str, value: Option<&str>) {
        let mut g = lock(&self.state.inner);
        if let Some(c) = g.clusters.get_mut(uuid) {
            match value {
                Some(v) => c.labels.insert(key.into(), v.into()),
                None => c.labels.remove(key),
            };
        }
    }

    pub fn set_cluster_status(&self, uuid: &str, status: &str) {
        if let Some(c) = lock(&self.state.inner).clusters.get_mut(uuid) {
            c.status = status.into();
        }
    }

    pub fn cluster(&self, uuid: &str) -> Option<Cluster> {
        lock(&self.state.inner).clusters.get(uuid).cloned()
    }

    pub fn server(&self, id: &str) -> Option<Server> {
        lock(&self.state.inner).servers.get(id).cloned()
    }

    pub fn stack(&self, id: &str) -> Option<Stack> {
        lock(&self.state.inner).stacks.get(id).cloned()
    }

    pub fn nodegroup_servers(&self, cluster: &str, role: &str) -> Vec<String> {
        lock(&self.state.inner)
            .nodegroups
            .iter()
            .find(|n| n.cluster == cluster && n.role == role)
            .map(|n| n.servers.clone())
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.state.log).clone()
    }

    /// Requests whose method is `method` and whose path contains `fragment` and (if
    /// given) whose body contains `body`.
    pub fn count(&self, method: &str, fragment: &str, body: Option<&str>) -> usize {
        lock(&self.state.log)
            .iter()
            .filter(|l| l.method == method && l.path.contains(fragment) && body.is_none_or(|b| l.body.contains(b)))
            .count()
    }

    pub fn set_latency(&self, d: Option<Duration>) {
        lock(&self.state.faults).latency = d;
    }

    /// Answers this share of service requests (not Keystone's) with a 500 or 503.
    pub fn set_error_rate(&self, rate: f64) {
        lock(&self.state.faults).error_rate = rate;
    }

    /// Answers the next `n` requests whose `METHOD path` contains `key` with a 409.
    pub fn conflict_next(&self, key: &str, n: usize) {
        lock(&self.state.faults).conflicts.push((key.into(), n));
    }

    /// Carries out the next `n` requests whose `METHOD path` contains `key`, then
    /// answers only after `d`: a client that gives up first cannot tell they happened.
    pub fn stall_next(&self, key: &str, n: usize, d: Duration) {
        lock(&self.state.faults).stalls.push((key.into(), n, d));
    }

    /// Answers this share of GET requests only after `d`.
    pub fn stall_reads(&self, rate: f64, d: Duration) {
        lock(&self.state.faults).read_stalls = (rate > 0.0).then_some((rate, d));
    }

    /// Every token issued so far, for tests that check none leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.inner).issued.clone()
    }

    /// Every token issued so far expires now: the next service call gets 401.
    pub fn expire_tokens(&self) {
        lock(&self.state.inner).tokens.clear();
    }
}
