//! kubectl-lite: a kubectl-style CLI for kube-lite.
//!
//! A short tour: [`cli`] declares the command line; [`commands`] holds one module per
//! command (parse → call → print), each written once for every kind through [`api::Api`]
//! (the gRPC calls, an extension of `kube_lite_core::Resource`, which names the kinds) and
//! [`output::Show`] (table rows and Kubernetes-shaped JSON); `get -w` follows changes with
//! `kube_lite_client::watcher`. [`manifest`] turns Kubernetes manifests into kube-lite
//! objects, naming every unsupported field by its path, and applies the server's defaults
//! (`kube_lite_core::defaults`) to compare them with stored objects; [`describe`] renders
//! `describe`; [`util`] holds the pure helpers (age, timestamps, flag parsers). Everything
//! except the calls in `commands` is pure and unit-tested.

pub mod api;
pub mod cli;
pub mod commands;
pub mod describe;
pub mod field_selector;
pub mod manifest;
pub mod output;
pub mod util;
