//! The API's well-known strings, named once. Values are exactly Kubernetes' spelling.

/// `status.phase` of a Pod.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const UNKNOWN: &str = "Unknown";
}

/// Condition types of Pods and Nodes.
pub mod condition {
    /// Pod: all containers ready. Node: the agent is healthy.
    pub const READY: &str = "Ready";
    pub const POD_SCHEDULED: &str = "PodScheduled";
}

/// `status` of a condition.
pub mod condition_status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// Reasons of pod, container and node states and conditions.
pub mod reason {
    /// Pod: no node fits (scheduler).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// Pod: removed from a node that stopped answering.
    pub const EVICTED: &str = "Evicted";
    /// Container waiting for its first start.
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    /// App container waiting for the pod's init containers.
    pub const POD_INITIALIZING: &str = "PodInitializing";
    /// A container's configuration (env) cannot be built, e.g. a missing key.
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    /// Container waiting out its restart back-off.
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// The container's program was not found (process runtime).
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    /// The container could not be started.
    pub const START_ERROR: &str = "StartError";
    /// Container terminated with exit code 0.
    pub const COMPLETED: &str = "Completed";
    /// Container terminated with a non-zero exit code.
    pub const ERROR: &str = "Error";
    /// Container killed by the kernel for going over its memory limit (exit code 137).
    pub const OOM_KILLED: &str = "OOMKilled";
    /// The pod network could not be set up.
    pub const NETWORK_SETUP_FAILED: &str = "NetworkSetupFailed";
    /// Node condition: the agent reports healthy.
    pub const AGENT_READY: &str = "AgentReady";
    /// Node condition: the agent stopped heartbeating.
    pub const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
    /// Pod: unbound because its node was deleted.
    pub const NODE_DELETED: &str = "NodeDeleted";
}

/// Container state names as `kubectl describe` prints them.
pub mod container_state {
    pub const WAITING: &str = "Waiting";
    pub const RUNNING: &str = "Running";
    pub const TERMINATED: &str = "Terminated";
}

/// `spec.restartPolicy` of a Pod.
pub mod restart_policy {
    pub const ALWAYS: &str = "Always";
    pub const ON_FAILURE: &str = "OnFailure";
    pub const NEVER: &str = "Never";
}

/// `terminationMessagePolicy` of a container, and where the message is read by default.
pub mod termination_message {
    /// The message is the file's content only.
    pub const FILE: &str = "File";
    /// The file's content, or the log's tail when the file is empty and the container
    /// failed.
    pub const FALLBACK_TO_LOGS_ON_ERROR: &str = "FallbackToLogsOnError";
    /// `terminationMessagePath` when none is given (Kubernetes').
    pub const DEFAULT_PATH: &str = "/dev/termination-log";
    /// Longest `terminationMessagePath` accepted (PATH_MAX).
    pub const MAX_PATH_LEN: usize = 4096;
}

/// Port protocols.
pub mod protocol {
    pub const TCP: &str = "TCP";
    pub const UDP: &str = "UDP";
}

/// `spec.type` of a Service.
pub mod service_type {
    pub const CLUSTER_IP: &str = "ClusterIP";
    pub const NODE_PORT: &str = "NodePort";
    pub const LOAD_BALANCER: &str = "LoadBalancer";
}

/// `spec.clusterIP` of a headless Service.
pub const CLUSTER_IP_NONE: &str = "None";

/// `spec.externalTrafficPolicy` of a Service.
pub mod traffic_policy {
    pub const CLUSTER: &str = "Cluster";
    pub const LOCAL: &str = "Local";
}

/// `spec.sessionAffinity` of a Service.
pub mod session_affinity {
    pub const NONE: &str = "None";
    pub const CLIENT_IP: &str = "ClientIP";
    /// Kubernetes' default `timeoutSeconds` (3 hours).
    pub const DEFAULT_TIMEOUT_SECONDS: i32 = 10800;
    /// Kubernetes' maximum `timeoutSeconds` (1 day).
    pub const MAX_TIMEOUT_SECONDS: i32 = 86400;
}

/// `spec.dnsPolicy` of a Pod.
pub mod dns_policy {
    pub const CLUSTER_FIRST: &str = "ClusterFirst";
    pub const DEFAULT: &str = "Default";
    pub const NONE: &str = "None";
}

/// Node heartbeats as Leases (Kubernetes' coordination.k8s.io).
pub mod lease {
    /// The namespace of the node Leases (one per node, named after it).
    pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
    /// `spec.lease_duration_seconds` of a node Lease (kubelet's default).
    pub const NODE_LEASE_DURATION_SECONDS: i32 = 40;
}

/// kubectl's STATUS for a pod still running its init containers (`Init:1/2`,
/// `Init:Error`, `Init:CrashLoopBackOff`, `Init:ExitCode:3`), or None once they all
/// completed. `statuses`: `(state, reason, exit_code)` of each init container status, in
/// order; `total`: the number of init containers in the spec.
pub fn init_status_text<'a>(
    statuses: impl IntoIterator<Item = (&'a str, &'a str, i32)>,
    total: usize,
) -> Option<String> {
    for (i, (state, why, code)) in statuses.into_iter().enumerate() {
        match state {
            container_state::TERMINATED if code == 0 => continue,
            container_state::TERMINATED if why.is_empty() => {
                return Some(format!("Init:ExitCode:{code}"))
            }
            container_state::TERMINATED => return Some(format!("Init:{why}")),
            container_state::WAITING
                if !why.is_empty()
                    && why != reason::POD_INITIALIZING
                    && why != reason::CONTAINER_CREATING =>
            {
                return Some(format!("Init:{why}"))
            }
            _ => return Some(format!("Init:{i}/{total}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_status_like_kubectl() {
        let done = ("Terminated", "Completed", 0);
        assert_eq!(
            init_status_text([done, ("Running", "", 0)], 2).as_deref(),
            Some("Init:1/2")
        );
        assert_eq!(
            init_status_text([("Waiting", "ContainerCreating", 0)], 2).as_deref(),
            Some("Init:0/2")
        );
        assert_eq!(
            init_status_text([("Terminated", "Error", 1)], 1).as_deref(),
            Some("Init:Error")
        );
        assert_eq!(
            init_status_text([("Terminated", "", 3)], 1).as_deref(),
            Some("Init:ExitCode:3")
        );
        assert_eq!(
            init_status_text([("Waiting", "CrashLoopBackOff", 0)], 1).as_deref(),
            Some("Init:CrashLoopBackOff")
        );
        assert_eq!(init_status_text([done, done], 2), None);
        assert_eq!(init_status_text([], 0), None);
    }
}
