//! [`ContainerdRuntime`]: the [`Runtime`] trait over containerd. A container instance
//! is a containerd container `<pod uid>-<container>` (labels name the node, the pod and
//! the container), its rootfs an overlayfs snapshot of the same key prepared from the
//! image's top layer, its task run by `io.containerd.runc.v2` in the pod's network
//! namespace. stdout/stderr go to the shim's `binary://` logger, which is this agent's
//! executable (`nodeagent kl-log …`, see [`super::logger`]) writing the same rotating
//! per-container log file the process runtime writes, so logs survive agent restarts.
//!
//! Handles are the task's host PID plus its /proc start time, as for processes: `alive`
//! needs no RPC, and a recorded handle is re-attached after an agent kill -9 by finding
//! the running task with that PID ([`Runtime::instances`] lists them by label).
//! A task that ended while the agent was away is turned into the exit file the process
//! runtime's init would have written.
//!
//! Resources, volumes and securityContext are the process runtime's decisions carried
//! in the OCI spec ([`super::spec`]): the agent makes the pod's and the container's
//! cgroups with their limits ([`crate::cgroups`]) and gives runc the container's as its
//! `cgroupsPath`, so the layout, the OOM-kill counter (an exit 137 with a kill counted
//! is OOMKilled) and the removal with the pod are shared.

use super::client::{Ctrd, SNAPSHOTTER};
use super::images::{self, ImageInfo, LookupError};
use super::names;
use super::spec::{self, SpecInput};
use crate::cgroups::Cgroups;
use crate::runtime::{
    ContainerResources, ContainerSpec, ExecOptions, ExecOutput, ExecProcess, Handle, Instance,
    Runtime, RuntimeError,
};
use crate::state::{proc_start_time, same_process_alive, ExitInfo, StateDir};
use containerd_client::services::v1::{
    container::Runtime as CRuntime,
    snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest},
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, ListContainersRequest, ListTasksRequest, StartRequest,
    WaitRequest,
};
use futures::future::BoxFuture;
use kube_lite_core::consts::reason;
use kube_lite_core::time::now_ms;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

pub const LABEL_NODE: &str = "io.kube-lite.node";
pub const LABEL_POD_UID: &str = "io.kube-lite.pod-uid";
pub const LABEL_CONTAINER: &str = "io.kube-lite.container";

/// `ErrImagePull`: no registry is reachable, the image is not on the node.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// `ErrImageNeverPull`: pull policy Never and the image is not on the node.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// `InvalidImageName`.
pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";

/// containerd's limit on identifiers.
const MAX_ID: usize = 76;

/// The containerd id (and snapshot key) of a pod's container.
pub fn container_id(pod_uid: &str, container: &str) -> String {
    let id = format!("{pod_uid}-{container}");
    if id.len() <= MAX_ID {
        return id;
    }
    let h = super::archive::sha256_digest(container.as_bytes());
    let keep = MAX_ID - pod_uid.len() - 1 - 9;
    format!(
        "{pod_uid}-{}-{}",
        &container[..keep.min(container.len())],
        &h[7..15]
    )
}

/// The message of a missing image (what to do about it, as the issue asks).
pub fn missing_image_message(image: &str, node: &str, policy: &str) -> (String, String) {
    let how = format!("load it onto the node with `kubectl-lite image load FILE.tar` (an archive written by `docker save {}` or an OCI layout)", names::short(image));
    if policy == "Never" {
        (
            ERR_IMAGE_NEVER_PULL.into(),
            format!("Container image \"{image}\" is not present on node {node} with pull policy of Never: {how}"),
        )
    } else {
        (
            ERR_IMAGE_PULL.into(),
            format!("image \"{image}\" is not present on node {node} and kube-lite pulls from no registry: {how}"),
        )
    }
}

/// `%XX`-escapes a query value.
fn escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The shim's log URI: our executable as the logging binary.
pub fn logger_uri(exe: &std::path::Path, log: &std::path::Path, max: u64) -> String {
    format!(
        "binary://{}?{}={}",
        escape(&exe.display().to_string()),
        super::logger::ARG,
        escape(&format!("{max},{}", log.display()))
    )
}

pub struct ContainerdRuntime {
    c: Ctrd,
    node: String,
    state: StateDir,
    logger_exe: PathBuf,
    log_max: u64,
    rt: tokio::runtime::Handle,
    /// Task PID → container id of the instances we know.
    ids: Mutex<HashMap<i32, String>>,
    /// Resolved images by normalised name (dropped on every import).
    cache: Mutex<HashMap<String, ImageInfo>>,
    /// The agent's cgroups (None: the host has none usable; limits are then refused).
    cgroups: Option<Cgroups>,
}

fn rpc_err(container: &str, what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Start {
        container: container.to_string(),
        source: std::io::Error::other(format!("{what}: {e}")),
    }
}

impl ContainerdRuntime {
    pub fn new(
        c: Ctrd,
        node: &str,
        state: StateDir,
        logger_exe: PathBuf,
        log_max: u64,
        cgroups: Option<Cgroups>,
    ) -> Arc<Self> {
        Arc::new(ContainerdRuntime {
            c,
            node: node.to_string(),
            state,
            logger_exe,
            log_max,
            rt: tokio::runtime::Handle::current(),
            ids: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            cgroups,
        })
    }

    /// The container's `cgroupsPath`: its cgroup in the agent's layout, made with the
    /// pod's and its own limits (as the process runtime makes it); without usable
    /// cgroups a path of the namespace (`/<namespace>/<id>`), and limits are refused.
    /// The flag: whether the path is the agent's cgroup (checked after the task is made).
    fn cgroup_for(&self, s: &ContainerSpec, id: &str) -> Result<(String, bool), RuntimeError> {
        let limited = s.resources != ContainerResources::default();
        let fallback = format!("/{}/{id}", self.c.namespace);
        let Some(cg) = &self.cgroups else {
            if limited {
                return Err(RuntimeError::Start {
                    container: s.container.clone(),
                    source: std::io::Error::other(
                        "resources: limits requested but this node has no usable cgroups",
                    ),
                });
            }
            return Ok((fallback, false));
        };
        match cg.setup_container(
            &s.pod_uid,
            &s.container,
            &s.resources.pod,
            &s.resources.container,
        ) {
            Ok(_) => Ok((cg.oci_path(&s.pod_uid, &s.container), true)),
            Err(e) if !limited => {
                tracing::warn!(pod_uid = %s.pod_uid, container = %s.container, "cgroup: {e}; running in the namespace's");
                Ok((fallback, false))
            }
            Err(e) => Err(RuntimeError::Start {
                container: s.container.clone(),
                source: std::io::Error::other(format!("resources: cgroup: {e}")),
            }),
        }
    }

    pub fn client(&self) -> &Ctrd {
        &self.c
    }

    /// Forget resolved images (after an import replaced a name).
    pub fn images_changed(&self) {
        self.cache.lock().unwrap().clear();
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.rt.block_on(f))
    }

    async fn image(&self, name: &str) -> Result<ImageInfo, LookupError> {
        if let Some(i) = self.cache.lock().unwrap().get(name) {
            return Ok(i.clone());
        }
        let info = images::lookup(&self.c, name).await?;
        self.cache
            .lock()
            .unwrap()
            .insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// Task, container and snapshot of `id` gone (each step tolerates NotFound).
    async fn remove(&self, id: &str) {
        let c = &self.c;
        let _ = c
            .tasks()
            .kill(c.req(KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await;
        // Until the task is gone (a just-killed task is still "running" for a moment;
        // containerd may be busy): a container record is only dropped without a task.
        let mut last = None;
        for _ in 0..250 {
            match c
                .tasks()
                .delete(c.req(DeleteTaskRequest {
                    container_id: id.into(),
                }))
                .await
            {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) if e.code() == Code::NotFound => {
                    last = None;
                    break;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if let Some(e) = last {
            tracing::warn!(
                id,
                "deleting containerd task: {}; keeping the container for a later sweep",
                e.message()
            );
            return;
        }
        let _ = c
            .containers()
            .delete(c.req(DeleteContainerRequest { id: id.into() }))
            .await;
        let _ = c
            .snapshots()
            .remove(c.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            }))
            .await;
        self.ids.lock().unwrap().retain(|_, v| v != id);
    }

    async fn our_containers(&self, extra: Option<(&str, &str)>) -> Vec<Container> {
        let mut f = format!("labels.\"{LABEL_NODE}\"=={}", self.node);
        if let Some((k, v)) = extra {
            f.push_str(&format!(",labels.\"{k}\"=={v}"));
        }
        match self
            .c
            .containers()
            .list(self.c.req(ListContainersRequest { filters: vec![f] }))
            .await
        {
            Ok(r) => r.into_inner().containers,
            Err(e) => {
                tracing::warn!("listing containerd containers: {}", e.message());
                Vec::new()
            }
        }
    }

    async fn start_async(&self, s: &ContainerSpec) -> Result<Handle, RuntimeError> {
        let name = names::normalize(&s.image).map_err(|e| RuntimeError::Image {
            reason: INVALID_IMAGE_NAME.into(),
            message: e.to_string(),
        })?;
        let img = match self.image(&name).await {
            Ok(i) => i,
            Err(LookupError::NotFound(_)) => {
                let (reason, message) =
                    missing_image_message(&name, &self.node, &s.image_pull_policy);
                return Err(RuntimeError::Image { reason, message });
            }
            Err(e) => return Err(rpc_err(&s.container, "image", e)),
        };
        let id = container_id(&s.pod_uid, &s.container);
        // securityContext.runAsNonRoot against the image's USER (the kubelet's check).
        spec::check_non_root(&img.config.user, &s.security).map_err(|message| {
            RuntimeError::Image {
                reason: reason::CREATE_CONTAINER_CONFIG_ERROR.into(),
                message,
            }
        })?;
        // A previous instance's leftovers (normally removed when it exited).
        self.remove(&id).await;
        let (cgroups_path, own_cgroup) = self.cgroup_for(s, &id)?;
        // privileged: every capability the agent has (more cannot be given).
        let mut security = s.security.clone();
        if security.privileged {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            security.caps = crate::security::bounding_set(&status).or(security.caps);
        }
        // The pod's resolv.conf (dnsPolicy), as the process runtime bind-mounts it.
        let resolv =
            match &s.resolv_conf {
                Some(text) => Some(self.state.write_resolv_conf(&s.pod_uid, text).map_err(
                    |e| RuntimeError::Start {
                        container: s.container.clone(),
                        source: e,
                    },
                )?),
                None => None,
            };
        let spec = spec::build(&SpecInput {
            image: &img.config,
            command: &s.command,
            args: &s.image_args,
            env: &s.env,
            hostname: &s.hostname,
            netns_path: s.netns_path.as_deref(),
            cgroups_path,
            resolv_conf: resolv.as_deref(),
            limits: s.resources.container,
            mounts: &s.mounts,
            security: &security,
        })
        .map_err(|m| RuntimeError::Image {
            reason: reason::START_ERROR.into(),
            message: format!("image {name}: {m}"),
        })?;
        // Logs: the previous instance's become `.log.1`, as with the process runtime.
        let dir = self.state.pod_dir(&s.pod_uid);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Start {
            container: s.container.clone(),
            source: e,
        })?;
        let log = self.state.log_path(&s.pod_uid, &s.container);
        self.state.rotate_previous_log(&s.pod_uid, &s.container);
        let _ = std::fs::remove_file(self.state.exit_path(&s.pod_uid, &s.container));
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
        let r = self
            .create_and_start(s, &id, &img, spec, &log, own_cgroup)
            .await;
        if r.is_err() {
            self.remove(&id).await;
        }
        r
    }

    async fn create_and_start(
        &self,
        s: &ContainerSpec,
        id: &str,
        img: &ImageInfo,
        spec: serde_json::Value,
        log: &std::path::Path,
        own_cgroup: bool,
    ) -> Result<Handle, RuntimeError> {
        let c = &self.c;
        let err =
            |what: &str, e: tonic::Status| rpc_err(&s.container, what, e.message().to_string());
        let mut labels = HashMap::new();
        labels.insert(LABEL_NODE.to_string(), self.node.clone());
        labels.insert(LABEL_POD_UID.to_string(), s.pod_uid.clone());
        labels.insert(LABEL_CONTAINER.to_string(), s.container.clone());
        // The container record first: it references the snapshot key, so containerd's
        // garbage collector never takes the freshly prepared rootfs.
        let container = Container {
            id: id.into(),
            labels: labels.clone(),
            image: img.name.clone(),
            runtime: Some(CRuntime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: serde_json::to_vec(&spec).expect("json"),
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.into(),
            ..Default::default()
        };
        c.containers()
            .create(c.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|e| err("creating the container", e))?;
        let mounts = c
            .snapshots()
            .prepare(c.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
                parent: img.top_snapshot.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|e| err("preparing the rootfs snapshot", e))?
            .into_inner()
            .mounts;
        let uri = logger_uri(&self.logger_exe, log, self.log_max);
        let started_at = now_ms();
        let task_pid = c
            .tasks()
            .create(c.req(CreateTaskRequest {
                container_id: id.into(),
                rootfs: mounts,
                stdout: uri.clone(),
                stderr: uri,
                ..Default::default()
            }))
            .await
            .map_err(|e| err("creating the task", e))?
            .into_inner()
            .pid as i32;
        // A relative cgroupsPath lands below the shim's own cgroups: the limits hold
        // only if those are the agent's.
        if let (true, Some(cg)) = (own_cgroup, &self.cgroups) {
            if !cg.holds(&s.pod_uid, &s.container, task_pid) {
                let what = format!("the task is not in its cgroup {} (containerd's shims run in other cgroups than this agent)", cg.oci_path(&s.pod_uid, &s.container));
                if s.resources != ContainerResources::default() {
                    return Err(rpc_err(&s.container, "resources", what));
                }
                tracing::warn!(id, "{what}");
            }
        }
        let pid = c
            .tasks()
            .start(c.req(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|e| err("starting the task", e))?
            .into_inner()
            .pid as i32;
        self.ids.lock().unwrap().insert(pid, id.to_string());
        Ok(Handle {
            pid,
            proc_start: proc_start_time(pid).unwrap_or(0),
            started_at,
        })
    }

    fn id_of(&self, h: &Handle) -> Option<String> {
        if let Some(id) = self.ids.lock().unwrap().get(&h.pid) {
            return Some(id.clone());
        }
        // Not seen yet (adopted before `instances` ran): look it up.
        self.instances();
        self.ids.lock().unwrap().get(&h.pid).cloned()
    }

    /// Where a command in instance `h` runs (exec probes, hooks, `kubectl exec`).
    fn exec_target(&self, h: &Handle) -> Result<super::exec::Target, RuntimeError> {
        let not_running = || RuntimeError::Exec("container is not running".into());
        if !self.alive(h) {
            return Err(not_running());
        }
        Ok(super::exec::Target {
            c: self.c.clone(),
            container_id: self.id_of(h).ok_or_else(not_running)?,
            fifo_root: self.state.root().join("exec"),
        })
    }

    fn signal(&self, h: &Handle, sig: u32, all: bool) -> Result<(), RuntimeError> {
        let Some(id) = self.id_of(h) else {
            return Ok(());
        };
        let r = self.block(self.c.tasks().kill(self.c.req(KillRequest {
            container_id: id,
            exec_id: String::new(),
            signal: sig,
            all,
        })));
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Signal {
                pid: h.pid,
                source: nix::Error::EIO,
            })
            .inspect_err(|_| tracing::warn!(pid = h.pid, "signal {sig}: {}", e.message())),
        }
    }

    /// Removes every container of this node whose pod is not in `keep`.
    pub async fn remove_pods_except(&self, keep: &HashSet<String>) {
        for ct in self.our_containers(None).await {
            let uid = ct.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
            if !keep.contains(&uid) {
                tracing::info!(id = %ct.id, "removing containerd container of a pod not on this node");
                self.remove(&ct.id).await;
            }
        }
    }

    async fn instances_async(&self) -> Vec<Instance> {
        let cts = self.our_containers(None).await;
        let tasks = match self
            .c
            .tasks()
            .list(self.c.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
        {
            Ok(r) => r.into_inner().tasks,
            Err(e) => {
                tracing::warn!("listing containerd tasks: {}", e.message());
                return Vec::new();
            }
        };
        let by_id: HashMap<&str, &containerd_client::types::v1::Process> =
            tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut out = Vec::new();
        for ct in &cts {
            let (Some(uid), Some(name)) =
                (ct.labels.get(LABEL_POD_UID), ct.labels.get(LABEL_CONTAINER))
            else {
                continue;
            };
            let Some(t) = by_id.get(ct.id.as_str()) else {
                continue;
            };
            // containerd.v1.types.Status: RUNNING = 2, STOPPED = 3.
            if t.status == 3 {
                // Ended while nobody waited: record the exit as the init would have.
                let exit = self.state.exit_path(uid, name);
                if !exit.exists() {
                    let info = with_oom(
                        exit_info(t.exit_status as i32),
                        self.cgroups.as_ref(),
                        uid,
                        name,
                    );
                    if let Ok(b) = serde_json::to_vec(&info) {
                        let _ = kube_lite_net::write_atomic(&exit, &b);
                    }
                }
                let _ = self
                    .c
                    .tasks()
                    .delete(self.c.req(DeleteTaskRequest {
                        container_id: ct.id.clone(),
                    }))
                    .await;
                continue;
            }
            let pid = t.pid as i32;
            let Some(proc_start) = proc_start_time(pid) else {
                continue;
            };
            self.ids.lock().unwrap().insert(pid, ct.id.clone());
            out.push(Instance {
                pod_uid: uid.clone(),
                container: name.clone(),
                handle: Handle {
                    pid,
                    proc_start,
                    started_at: now_ms(),
                },
            });
        }
        out.sort_by_key(|i| (i.handle.proc_start, i.handle.pid));
        out
    }
}

/// An exit 137 of an instance whose cgroup counted an OOM kill is OOMKilled (read
/// before the task is deleted: runc removes the cgroup with it).
fn with_oom(mut info: ExitInfo, cg: Option<&Cgroups>, uid: &str, name: &str) -> ExitInfo {
    if info.exit_code == 137 && cg.is_some_and(|cg| cg.oom_kills(uid, name) > 0) {
        info.reason = reason::OOM_KILLED.into();
    }
    info
}

/// How an exit status reads (runc reports 128+N for signal N).
pub fn exit_info(code: i32) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        signal: (code > 128 && code < 160).then_some(code - 128),
        reason: if code == 0 {
            reason::COMPLETED
        } else {
            reason::ERROR
        }
        .into(),
        message: String::new(),
        finished_at: now_ms(),
    }
}

impl Runtime for ContainerdRuntime {
    fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError> {
        self.block(self.start_async(spec))
    }

    fn terminate(&self, h: &Handle) -> Result<(), RuntimeError> {
        if !self.alive(h) {
            return Ok(());
        }
        self.signal(h, 15, false)
    }

    fn kill(&self, h: &Handle) -> Result<(), RuntimeError> {
        if !self.alive(h) {
            return Ok(());
        }
        self.signal(h, 9, true)
    }

    fn alive(&self, h: &Handle) -> bool {
        h.pid > 0 && same_process_alive(h.pid, h.proc_start)
    }

    fn adopt(&self, h: &Handle) -> bool {
        self.alive(h) && self.id_of(h).is_some()
    }

    fn wait(&self, pod_uid: &str, container: &str, h: Handle) -> BoxFuture<'static, ExitInfo> {
        let id = container_id(pod_uid, container);
        let c = self.c.clone();
        let state = self.state.clone();
        let cgroups = self.cgroups.clone();
        let (uid, name) = (pod_uid.to_string(), container.to_string());
        Box::pin(async move {
            let mut code = None;
            for attempt in 0..3 {
                match c
                    .tasks()
                    .wait(c.req(WaitRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                    }))
                    .await
                {
                    Ok(r) => {
                        code = Some(r.into_inner().exit_status as i32);
                        break;
                    }
                    Err(e) if e.code() == Code::NotFound => break,
                    Err(e) => {
                        tracing::warn!(id, attempt, "waiting for task: {}", e.message());
                        // containerd restarting: the task (and its shim) live on.
                        while same_process_alive(h.pid, h.proc_start) {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if c.tasks()
                                .wait(c.req(WaitRequest {
                                    container_id: id.clone(),
                                    exec_id: String::new(),
                                }))
                                .await
                                .is_ok()
                            {
                                break;
                            }
                        }
                    }
                }
            }
            // The OOM counter while the cgroup is there (the delete removes it).
            let oom = code == Some(137)
                && cgroups
                    .as_ref()
                    .is_some_and(|cg| cg.oom_kills(&uid, &name) > 0);
            // Reap the shim's process record; the logger drains and ends with it.
            let deleted = c
                .tasks()
                .delete(c.req(DeleteTaskRequest {
                    container_id: id.clone(),
                }))
                .await
                .ok()
                .map(|r| r.into_inner().exit_status as i32);
            let code = code.or(deleted);
            let info = match code {
                Some(137) if oom => ExitInfo {
                    reason: reason::OOM_KILLED.into(),
                    ..exit_info(137)
                },
                Some(code) => exit_info(code),
                None => state.read_exit(&uid, &name).unwrap_or(ExitInfo {
                    exit_code: 137,
                    signal: None,
                    reason: reason::ERROR.into(),
                    message: "the containerd task is gone without an exit status".into(),
                    finished_at: now_ms(),
                }),
            };
            if let Ok(b) = serde_json::to_vec(&info) {
                let _ = kube_lite_net::write_atomic(&state.exit_path(&uid, &name), &b);
            }
            info
        })
    }

    fn instances(&self) -> Vec<Instance> {
        self.block(self.instances_async())
    }

    fn uses_images(&self) -> bool {
        true
    }

    fn exec_sync(
        &self,
        h: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ExecOutput, RuntimeError>> {
        let t = self.exec_target(h);
        let cmd = cmd.to_vec();
        Box::pin(async move { super::exec::exec_sync(t?, cmd, timeout).await })
    }

    fn exec(
        &self,
        h: &Handle,
        opts: &ExecOptions,
    ) -> BoxFuture<'static, Result<Box<dyn ExecProcess>, RuntimeError>> {
        let t = self.exec_target(h);
        let opts = opts.clone();
        Box::pin(async move {
            let x = super::exec::CtrdExec::start(&t?, &opts).await?;
            Ok(Box::new(x) as Box<dyn ExecProcess>)
        })
    }

    fn release_pod(&self, pod_uid: &str) {
        self.block(async {
            for ct in self.our_containers(Some((LABEL_POD_UID, pod_uid))).await {
                self.remove(&ct.id).await;
            }
        });
        if let Some(cg) = &self.cgroups {
            cg.remove_pod(pod_uid);
        }
    }

    fn sweep(&self, keep: &HashSet<String>) {
        self.block(async {
            super::exec::sweep(&self.c, &self.state.root().join("exec")).await;
            ContainerdRuntime::remove_pods_except(self, keep).await
        });
        if let Some(cg) = &self.cgroups {
            for uid in cg.pods() {
                if !keep.contains(&uid) {
                    tracing::info!(uid, "removing the cgroups of a pod not on this node");
                    cg.remove_pod(&uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fit_containerd() {
        let uid = "0b7e0f3c-8c4f-4bfe-9d5b-3b9f0a8e1c2d";
        assert_eq!(container_id(uid, "web"), format!("{uid}-web"));
        let long = "c".repeat(63);
        let id = container_id(uid, &long);
        assert!(id.len() <= MAX_ID, "{}", id.len());
        assert!(id.starts_with(uid));
        assert_ne!(container_id(uid, &long), container_id(uid, &"d".repeat(63)));
    }

    #[test]
    fn missing_images_say_how_to_load_them() {
        let (r, m) = missing_image_message("docker.io/library/nginx:latest", "node1", "Never");
        assert_eq!(r, "ErrImageNeverPull");
        assert!(
            m.contains("kubectl-lite image load") && m.contains("nginx:latest"),
            "{m}"
        );
        let (r, m) =
            missing_image_message("docker.io/library/nginx:latest", "node1", "IfNotPresent");
        assert_eq!(r, "ErrImagePull");
        assert!(m.contains("no registry") && m.contains("node1"), "{m}");
    }

    #[test]
    fn logger_uris_escape_their_values() {
        let u = logger_uri(
            std::path::Path::new("/opt/kl/nodeagent"),
            std::path::Path::new("/var/lib/kl/n 1/c.log"),
            1024,
        );
        assert_eq!(
            u,
            "binary:///opt/kl/nodeagent?kl-log=1024%2C/var/lib/kl/n%201/c.log"
        );
        assert_eq!(exit_info(0).reason, "Completed");
        assert_eq!(exit_info(137).signal, Some(9));
        assert_eq!(exit_info(1).reason, "Error");
    }
}
