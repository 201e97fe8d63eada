//! kubectl-lite: a kubectl-style CLI for kube-lite.
//!
//! A short tour: [`cli`] declares the command line; [`commands`] runs each command once
//! for every kind through [`api::Resource`] (names and gRPC calls of Pod, Service, Node,
//! Endpoints) and [`output::Show`] (table rows and Kubernetes-shaped JSON); [`manifest`]
//! turns Kubernetes manifests into kube-lite objects, naming every unsupported field by
//! its path; [`describe`] renders `describe`; [`util`] holds the pure helpers (age,
//! timestamps, flag parsers). Everything except `commands` is pure and unit-tested.

pub mod api;
pub mod cli;
pub mod commands;
pub mod describe;
pub mod manifest;
pub mod output;
pub mod util;
