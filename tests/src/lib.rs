//! Test kit shared by the end-to-end tests of every crate: a real apiserver on
//! loopback with sled in a temp dir (`apiserver`), and real multi-node clusters made of
//! network namespaces and node agents (`cluster`); object builders for the tests
//! (`fixtures`); a private containerd (`containerd`); kubectl-lite runs (`cli`).

pub mod apiserver;
pub mod cli;
pub mod cluster;
pub mod containerd;
pub mod fixtures;
pub mod k8s_tools;
pub mod raw;
