//! The containerd image runtime (`--runtime containerd`): pods' containers as
//! containerd containers from images loaded offline from archives.
//!
//! - [`names`]: image references normalised as Kubernetes does.
//! - [`archive`]: docker-archive and OCI layout archives → import plans (pure parts).
//! - [`client`]: the gRPC channel with the kube-lite containerd namespace.
//! - [`import`]: blobs into the content store, layers into snapshots, image records.
//! - [`images`]: image lookup for the runtime and the node's image list.
//! - [`spec`]: the OCI runtime spec from image config + container (pure).
//! - [`runtime`]: [`runtime::ContainerdRuntime`], the `Runtime` trait over containerd.
//! - [`exec`]: commands in containers (exec probes, hooks, `kubectl exec`) through
//!   containerd's Task Exec API, I/O over FIFOs.
//! - [`logger`]: the shim's `binary://` log writer (this executable, `kl-log`).
//! - [`service`]: image loading from the NodeAgent API and the import directory,
//!   `status.images`.

pub mod archive;
pub mod client;
pub mod exec;
pub mod images;
pub mod import;
pub mod logger;
pub mod names;
pub mod runtime;
pub mod service;
pub mod spec;
