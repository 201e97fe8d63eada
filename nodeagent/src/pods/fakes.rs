//! In-memory fakes of the executor's ports, for unit tests of the pod lifecycle without
//! root: processes, pod networks, the state dir and the apiserver are maps. Time is
//! tokio's (tests run with `start_paused`); the fake runtime's wall clock follows it.

use super::ports::{PodApi, PodNetwork, StateStore};
use crate::runtime::{ContainerSpec, Handle, Instance, Runtime, RuntimeError};
use crate::state::{ExitInfo, PodRecord};
use futures::future::BoxFuture;
use kube_lite_core::Resource;
use kube_lite_net::PodNet;
use kube_lite_proto::v1::{DeleteRequest, GetRequest, Pod, PodStatus};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

/// Unix millis that advance with tokio's (paused) clock.
pub struct Clock {
    t0: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { t0: Instant::now() }
    }
    pub fn wall_ms(&self) -> i64 {
        1_700_000_000_000 + (Instant::now() - self.t0).as_millis() as i64
    }
}

struct Proc {
    pod_uid: String,
    container: String,
    alive: bool,
    /// Sends the exit once the process ends.
    exit: watch::Sender<Option<ExitInfo>>,
}

#[derive(Default)]
struct RtState {
    next_pid: i32,
    procs: HashMap<i32, Proc>,
    /// (container, pid, when) of every start.
    starts: Vec<(String, i32, Instant)>,
    /// "term <pid>" / "kill <pid>" with when.
    signals: Vec<(String, Instant)>,
}

/// Processes that run until [`FakeRuntime::exit`], SIGTERM (unless `ignore_sigterm`)
/// or SIGKILL.
pub struct FakeRuntime {
    clock: Clock,
    st: Mutex<RtState>,
    pub ignore_sigterm: std::sync::atomic::AtomicBool,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime {
            clock: Clock::new(),
            st: Mutex::new(RtState {
                next_pid: 1000,
                ..Default::default()
            }),
            ignore_sigterm: false.into(),
        }
    }

    /// A process left running by a previous agent.
    pub fn existing(&self, container: &str) -> Handle {
        self.existing_in("", container)
    }

    /// A process of pod `pod_uid` left running by a previous agent, maybe unrecorded
    /// (listed by [`Runtime::instances`]).
    pub fn existing_in(&self, pod_uid: &str, container: &str) -> Handle {
        let mut st = self.st.lock().unwrap();
        st.next_pid += 1;
        let pid = st.next_pid;
        st.procs.insert(
            pid,
            Proc {
                pod_uid: pod_uid.into(),
                container: container.into(),
                alive: true,
                exit: watch::channel(None).0,
            },
        );
        Handle {
            pid,
            proc_start: pid as u64,
            started_at: self.clock.wall_ms(),
        }
    }

    /// Ends process `pid` with `code`.
    pub fn exit(&self, pid: i32, code: i32) {
        self.end(pid, code, None);
    }

    fn end(&self, pid: i32, code: i32, signal: Option<i32>) {
        let mut st = self.st.lock().unwrap();
        if let Some(p) = st.procs.get_mut(&pid) {
            if p.alive {
                p.alive = false;
                let _ = p.exit.send(Some(ExitInfo {
                    exit_code: code,
                    signal,
                    reason: if code == 0 { "Completed" } else { "Error" }.into(),
                    message: String::new(),
                    finished_at: self.clock.wall_ms(),
                }));
            }
        }
    }

    pub fn starts(&self) -> Vec<(String, i32, Instant)> {
        self.st.lock().unwrap().starts.clone()
    }

    pub fn signals(&self) -> Vec<(String, Instant)> {
        self.st.lock().unwrap().signals.clone()
    }

    pub fn alive_pids(&self) -> Vec<i32> {
        let st = self.st.lock().unwrap();
        let mut v: Vec<i32> = st
            .procs
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }

    /// The live pid of `container`'s newest instance.
    pub fn pid_of(&self, container: &str) -> Option<i32> {
        let st = self.st.lock().unwrap();
        st.procs
            .iter()
            .filter(|(_, p)| p.alive && p.container == container)
            .map(|(k, _)| *k)
            .max()
    }
}

impl Runtime for FakeRuntime {
    fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError> {
        let h = self.existing_in(&spec.pod_uid, &spec.container);
        self.st
            .lock()
            .unwrap()
            .starts
            .push((spec.container.clone(), h.pid, Instant::now()));
        Ok(h)
    }

    fn terminate(&self, h: &Handle) -> Result<(), RuntimeError> {
        self.st
            .lock()
            .unwrap()
            .signals
            .push((format!("term {}", h.pid), Instant::now()));
        if !self
            .ignore_sigterm
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.end(h.pid, 143, Some(15));
        }
        Ok(())
    }

    fn kill(&self, h: &Handle) -> Result<(), RuntimeError> {
        self.st
            .lock()
            .unwrap()
            .signals
            .push((format!("kill {}", h.pid), Instant::now()));
        self.end(h.pid, 137, Some(9));
        Ok(())
    }

    fn instances(&self) -> Vec<Instance> {
        let st = self.st.lock().unwrap();
        let mut v: Vec<Instance> = st
            .procs
            .iter()
            .filter(|(_, p)| p.alive && !p.pod_uid.is_empty())
            .map(|(pid, p)| Instance {
                pod_uid: p.pod_uid.clone(),
                container: p.container.clone(),
                handle: Handle {
                    pid: *pid,
                    proc_start: *pid as u64,
                    started_at: self.clock.wall_ms(),
                },
            })
            .collect();
        v.sort_by_key(|i| i.handle.pid);
        v
    }

    fn alive(&self, h: &Handle) -> bool {
        let st = self.st.lock().unwrap();
        st.procs.get(&h.pid).is_some_and(|p| p.alive) && h.proc_start == h.pid as u64
    }

    fn wait(&self, _pod_uid: &str, _container: &str, h: Handle) -> BoxFuture<'static, ExitInfo> {
        let rx = self
            .st
            .lock()
            .unwrap()
            .procs
            .get(&h.pid)
            .map(|p| p.exit.subscribe());
        Box::pin(async move {
            let Some(mut rx) = rx else {
                return ExitInfo {
                    exit_code: 137,
                    signal: None,
                    reason: "Error".into(),
                    message: "unknown".into(),
                    finished_at: 0,
                };
            };
            let r = rx.wait_for(|e| e.is_some()).await;
            r.map(|e| e.clone().unwrap())
                .unwrap_or_else(|_| panic!("fake process dropped"))
        })
    }
}

/// Pod networks as a set; `fail` makes set-ups fail.
#[derive(Default)]
pub struct FakeNet {
    pub netns: Mutex<Vec<String>>,
    pub host_ifs: Mutex<Vec<String>>,
    pub created: Mutex<Vec<PodNet>>,
    pub deleted: Mutex<Vec<(String, String)>>,
}

impl PodNetwork for FakeNet {
    fn create<'a>(&'a self, p: &'a PodNet) -> BoxFuture<'a, anyhow::Result<()>> {
        self.created.lock().unwrap().push(p.clone());
        self.netns.lock().unwrap().push(p.netns.clone());
        self.host_ifs.lock().unwrap().push(p.host_if.clone());
        Box::pin(async { Ok(()) })
    }
    fn delete<'a>(&'a self, netns: &'a str, host_if: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.deleted
            .lock()
            .unwrap()
            .push((netns.to_string(), host_if.to_string()));
        self.netns.lock().unwrap().retain(|n| n != netns);
        self.host_ifs.lock().unwrap().retain(|n| n != host_if);
        Box::pin(async { Ok(()) })
    }
    fn list_netns(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = self
            .netns
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        v.sort();
        Ok(v)
    }
    fn list_host_ifs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<String>>> {
        let v: Vec<String> = self
            .host_ifs
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        Box::pin(async move { Ok(v) })
    }
}

/// Records and exit files in maps.
#[derive(Default)]
pub struct FakeState {
    pub records: Mutex<HashMap<String, PodRecord>>,
    pub exits: Mutex<HashMap<(String, String), ExitInfo>>,
}

impl StateStore for FakeState {
    fn save(&self, rec: &PodRecord) -> std::io::Result<()> {
        self.records
            .lock()
            .unwrap()
            .insert(rec.uid.clone(), rec.clone());
        Ok(())
    }
    fn remove(&self, uid: &str) -> std::io::Result<()> {
        self.records.lock().unwrap().remove(uid);
        Ok(())
    }
    fn load_all(&self) -> (Vec<PodRecord>, Vec<String>) {
        let mut v: Vec<PodRecord> = self.records.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.uid.cmp(&b.uid));
        (v, Vec::new())
    }
    fn read_exit(&self, uid: &str, container: &str) -> Option<ExitInfo> {
        self.exits
            .lock()
            .unwrap()
            .get(&(uid.to_string(), container.to_string()))
            .cloned()
    }
}

/// The apiserver's pods by uid; every status update and delete is logged.
#[derive(Default)]
pub struct FakeApi {
    pub pods: Mutex<HashMap<String, Pod>>,
    pub statuses: Mutex<Vec<(String, PodStatus, Instant)>>,
    pub deletes: Mutex<Vec<(DeleteRequest, Instant)>>,
}

impl FakeApi {
    pub fn put(&self, p: Pod) {
        self.pods.lock().unwrap().insert(p.uid().to_string(), p);
    }
    /// The newest status sent for pod `name`.
    pub fn last_status(&self, name: &str) -> Option<PodStatus> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, _)| s.clone())
    }
}

impl PodApi for FakeApi {
    fn list_node_pods(&self, _node: &str) -> BoxFuture<'static, Result<Vec<Pod>, Status>> {
        let v: Vec<Pod> = self.pods.lock().unwrap().values().cloned().collect();
        Box::pin(async move { Ok(v) })
    }
    fn get(&self, req: GetRequest) -> BoxFuture<'static, Result<Pod, Status>> {
        let p = self
            .pods
            .lock()
            .unwrap()
            .values()
            .find(|p| p.name() == req.name && p.namespace() == req.namespace)
            .cloned();
        Box::pin(async move { p.ok_or_else(|| Status::not_found("pod")) })
    }
    fn update_status(&self, pod: Pod) -> BoxFuture<'static, Result<(), Status>> {
        let mut pods = self.pods.lock().unwrap();
        let r = match pods.get_mut(pod.uid()) {
            Some(p) => {
                p.status = pod.status.clone();
                self.statuses.lock().unwrap().push((
                    pod.name().to_string(),
                    pod.status.unwrap_or_default(),
                    Instant::now(),
                ));
                Ok(())
            }
            None => Err(Status::not_found("pod")),
        };
        Box::pin(async move { r })
    }
    fn delete(&self, req: DeleteRequest) -> BoxFuture<'static, Result<(), Status>> {
        let mut pods = self.pods.lock().unwrap();
        let uid = pods
            .values()
            .find(|p| p.name() == req.name && p.namespace() == req.namespace)
            .map(|p| p.uid().to_string());
        let r = match uid {
            Some(u) => {
                pods.remove(&u);
                self.deletes.lock().unwrap().push((req, Instant::now()));
                Ok(())
            }
            None => Err(Status::not_found("pod")),
        };
        Box::pin(async move { r })
    }
}
