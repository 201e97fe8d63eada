//! kube-lite node agent: turns the Pods bound to its node into processes with their own
//! network namespaces and IPs on the node's bridge, and joins nodes with VXLAN.
//!
//! A short tour:
//! - [`config`]: the command line.
//! - [`agent`]: `run(config)`: registration, datapath, recovery, the long-running tasks.
//! - [`node`]: Node registration, heartbeats, VXLAN peers from the Node watch.
//! - [`pods`]: the pod watch and one worker per pod (IP, network, containers, status,
//!   restarts, graceful deletion), restart-safe recovery. Decisions live in
//!   [`pods::machine`] (a pure state machine with an explicit clock); the workers
//!   execute them through the small traits of [`pods::ports`] (pod API, pod network,
//!   state store) and [`runtime::Runtime`], faked in memory for unit tests.
//! - [`events`]: the Events the agent writes itself (probe failures and kills, hooks,
//!   FailedMount, evictions), batched and deduplicated.
//! - [`runtime`]: the `Runtime` trait and the process runtime.
//! - [`security`]: securityContext (user, groups, capabilities, no_new_privs, read-only
//!   root) resolved purely and applied by the container init.
//! - [`containerd`]: the containerd runtime (`--runtime containerd`), image import.
//! - [`cgroups`]: memory/cpu limits in per-pod and per-container cgroups (v1 or v2).
//! - [`resources`]: node capacity/allocatable from the machine and the flags.
//! - [`init`]: the container init (`nodeagent init …`): namespaces, PID 1, signal
//!   forwarding, zombie reaping, exit status file.
//! - [`exec`]: the NodeExec service (`kubectl-lite exec` via the apiserver): a command
//!   in a running container through [`runtime::Runtime::exec`], with a pseudo-terminal,
//!   stdin, exit code; [`exec_process`] is the process runtime's (`init exec`).
//! - [`image`]: image → program resolution.
//! - [`mounts`]: a container's volume mounts, applied by the container init.
//! - [`state`]: the state directory (pod records, exit files, logs).
//! - [`status`]: pure pod status / restart / back-off logic.
//! - [`logfile`]: container log rotation and backward tails.
//! - [`logs`]: the NodeAgent gRPC service (container logs; mTLS, the apiserver only).
//! - [`identity`]: the node certificate: join with the join token, saved, renewed.

pub mod agent;
pub mod cgroups;
pub mod config;
pub mod containerd;
pub mod dns;
pub mod events;
pub mod exec;
pub mod exec_process;
pub mod identity;
pub mod image;
pub mod init;
pub mod logfile;
pub mod logs;
pub mod mounts;
pub mod node;
pub mod pods;
pub mod resources;
pub mod runtime;
pub mod security;
pub mod state;
pub mod status;
