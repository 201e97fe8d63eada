//! The small traits the pod executor does its I/O through, and their real
//! implementations: [`PodNetwork`] (kube-lite-net's [`NodeNet`]), [`StateStore`] (the
//! [`StateDir`]) and [`PodApi`] (the apiserver's Pods service). The container runtime
//! is [`crate::runtime::Runtime`]. Unit tests use the in-memory fakes of
//! `pods::fakes`.

use crate::state::{ExitInfo, PodRecord, StateDir};
use futures::future::BoxFuture;
use kube_lite_client::Clients;
use kube_lite_net::{NodeNet, PodNet};
use kube_lite_proto::v1::{DeleteRequest, GetRequest, ListRequest, Pod};
use std::collections::BTreeMap;
use tonic::Status;

/// Pod network namespaces and veths of this node.
pub trait PodNetwork: Send + Sync + 'static {
    /// Idempotent: netns, veth on the bridge, address and routes.
    fn create<'a>(&'a self, p: &'a PodNet) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Idempotent: veth and netns gone.
    fn delete<'a>(&'a self, netns: &'a str, host_if: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Named network namespaces starting with `prefix`.
    fn list_netns(&self, prefix: &str) -> anyhow::Result<Vec<String>>;
    /// Host interfaces of the node namespace starting with `prefix`.
    fn list_host_ifs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<String>>>;
}

impl PodNetwork for NodeNet {
    fn create<'a>(&'a self, p: &'a PodNet) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.create_pod_net(p).await?) })
    }
    fn delete<'a>(&'a self, netns: &'a str, host_if: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.delete_pod_net(netns, host_if).await?) })
    }
    fn list_netns(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        Ok(NodeNet::list_netns(prefix)?)
    }
    fn list_host_ifs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<String>>> {
        Box::pin(async move { Ok(NodeNet::list_host_ifs(self, prefix).await?) })
    }
}

/// Pod records and exit files.
pub trait StateStore: Send + Sync + 'static {
    fn save(&self, rec: &PodRecord) -> std::io::Result<()>;
    fn remove(&self, uid: &str) -> std::io::Result<()>;
    /// Readable records, and the uids of unreadable ones.
    fn load_all(&self) -> (Vec<PodRecord>, Vec<String>);
    fn read_exit(&self, uid: &str, container: &str) -> Option<ExitInfo>;
    /// The file a container's termination message is written to (None: the store has
    /// no files, as the executor's fakes).
    fn termination_log(&self, _uid: &str, _container: &str) -> Option<std::path::PathBuf> {
        None
    }
    /// The container's current log file.
    fn log_path(&self, _uid: &str, _container: &str) -> Option<std::path::PathBuf> {
        None
    }
}

impl StateStore for StateDir {
    fn save(&self, rec: &PodRecord) -> std::io::Result<()> {
        StateDir::save(self, rec)
    }
    fn remove(&self, uid: &str) -> std::io::Result<()> {
        StateDir::remove(self, uid)
    }
    fn load_all(&self) -> (Vec<PodRecord>, Vec<String>) {
        StateDir::load_all(self)
    }
    fn read_exit(&self, uid: &str, container: &str) -> Option<ExitInfo> {
        StateDir::read_exit(self, uid, container)
    }
    fn termination_log(&self, uid: &str, container: &str) -> Option<std::path::PathBuf> {
        Some(StateDir::termination_log_path(self, uid, container))
    }
    fn log_path(&self, uid: &str, container: &str) -> Option<std::path::PathBuf> {
        Some(StateDir::log_path(self, uid, container))
    }
}

/// What the executor asks of and tells the apiserver about pods.
pub trait PodApi: Send + Sync + 'static {
    /// The pods bound to `node`.
    fn list_node_pods(&self, node: &str) -> BoxFuture<'static, Result<Vec<Pod>, Status>>;
    fn get(&self, req: GetRequest) -> BoxFuture<'static, Result<Pod, Status>>;
    /// A status-only update (metadata: name, namespace, uid).
    fn update_status(&self, pod: Pod) -> BoxFuture<'static, Result<(), Status>>;
    fn delete(&self, req: DeleteRequest) -> BoxFuture<'static, Result<(), Status>>;
    /// A ConfigMap's data + binaryData (issue 13: env sources, volumes).
    fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<BTreeMap<String, Vec<u8>>, Status>> {
        let _ = (namespace, name);
        Box::pin(async { Err(Status::unimplemented("config maps")) })
    }
    /// A Secret's data.
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<BTreeMap<String, Vec<u8>>, Status>> {
        let _ = (namespace, name);
        Box::pin(async { Err(Status::unimplemented("secrets")) })
    }
}

/// [`PodApi`] over the apiserver's gRPC clients.
pub struct GrpcPodApi(pub Clients);

impl PodApi for GrpcPodApi {
    fn list_node_pods(&self, node: &str) -> BoxFuture<'static, Result<Vec<Pod>, Status>> {
        let mut c = self.0.pods.clone();
        let req = ListRequest {
            node_name: node.to_string(),
            ..Default::default()
        };
        Box::pin(async move { Ok(c.list(req).await?.into_inner().items) })
    }
    fn get(&self, req: GetRequest) -> BoxFuture<'static, Result<Pod, Status>> {
        let mut c = self.0.pods.clone();
        Box::pin(async move { Ok(c.get(req).await?.into_inner()) })
    }
    fn update_status(&self, pod: Pod) -> BoxFuture<'static, Result<(), Status>> {
        let mut c = self.0.pods.clone();
        Box::pin(async move { c.update_status(pod).await.map(|_| ()) })
    }
    fn delete(&self, req: DeleteRequest) -> BoxFuture<'static, Result<(), Status>> {
        let mut c = self.0.pods.clone();
        Box::pin(async move { c.delete(req).await.map(|_| ()) })
    }
    fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<BTreeMap<String, Vec<u8>>, Status>> {
        let mut c = self.0.config_maps.clone();
        let req = GetRequest {
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        Box::pin(async move {
            let cm = c.get(req).await?.into_inner();
            let mut out: BTreeMap<String, Vec<u8>> = cm.binary_data.into_iter().collect();
            out.extend(cm.data.into_iter().map(|(k, v)| (k, v.into_bytes())));
            Ok(out)
        })
    }
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<BTreeMap<String, Vec<u8>>, Status>> {
        let mut c = self.0.secrets.clone();
        let req = GetRequest {
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        Box::pin(async move { Ok(c.get(req).await?.into_inner().data.into_iter().collect()) })
    }
}
