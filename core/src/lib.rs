//! kube-lite's shared vocabulary, in the spirit of kube-rs' `kube-core`: pure types and
//! rules with no I/O, used by the apiserver, the client crate, the node agent and
//! kubectl-lite so that each concept is written once.
//!
//! - [`Resource`]: what every API object has (kind names, metadata, key).
//! - [`ObjectRef`]: the (namespace, name) key of an object, with the default-namespace rule.
//! - [`defaults`]: the server's defaulting rules, which the CLI also applies to compare a
//!   manifest with what is stored.
//! - [`consts`]: phases, condition types and statuses, reasons, restart policies, protocols.
//! - [`quantity`]: Kubernetes quantities (`100m`, `128Mi`), requests/limits, QoS class.
//! - [`events`]: Event names (the dedup key's hash), for every event writer.
//! - [`exec`]: the bounds of an exec session (command, stdin chunks, terminal size).
//! - [`size`]: the byte-size syntax of flags (`64Mi`, `10M`).
//! - [`time`]: unix-millisecond clock and the duration syntax of flags (`40s`, `500ms`).

pub mod consts;
pub mod defaults;
pub mod events;
pub mod exec;
mod object_ref;
pub mod quantity;
mod resource;
pub mod security;
pub mod size;
pub mod time;
pub mod workloads;

pub use object_ref::ObjectRef;
pub use resource::Resource;

/// The namespace an object lands in when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";
