//! In-process controllers, one per file. Each is a [`Hook`] of the store: it keeps its
//! own indexes from the changes it observes, and its writes join the batch that
//! triggered them (so e.g. a Running pod and the Endpoints that include it commit
//! together). Each file has the controller's decisions as pure functions with unit
//! tests, and a thin `impl Hook` that feeds them from the store and writes the result.
//!
//! - [`node_subnets`]: a pod CIDR per Node, allocated at create;
//! - [`cluster_ips`]: a ClusterIP per Service, allocated at create;
//! - [`node_ports`]: node ports of NodePort/LoadBalancer Services (create, update);
//! - [`load_balancer`]: LoadBalancer Services' ingress (the Ready nodes' addresses,
//!   ServiceLB's way) and port clash condition;
//! - [`node_health`]: silent nodes go NotReady and their pods are evicted (on
//!   [`run_ticks`]); a deleted node's pods too; its timing and disruption mode are the
//!   pure state machine [`node_lifecycle`] (silence timed from the controller's own
//!   observations, so an apiserver outage evicts nothing by itself);
//! - [`scheduler`]: binds pending pods.
//!
//! A new controller is a new file here and one line in [`all`].
//!
//! The workload controllers (garbage collection, namespaces, ReplicaSets, Deployments,
//! events) work across objects and run asynchronously instead, in [`manager`]: a
//! List + Watch client of the committed state inside the apiserver process (as
//! kube-controller-manager), so they never lengthen a write batch. So does
//! [`endpoints`] (one Endpoints per Service with a selector), a task of its own with
//! label and selector indexes, writing in batches.

pub mod cluster_ips;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod load_balancer;
pub mod manager;
pub mod node_health;
pub mod node_lifecycle;
pub mod node_ports;
pub mod node_subnets;
pub mod pods_per_node;
pub mod replicaset;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::ApiError;
use crate::store::{Hook, Store};

/// Every controller, in the order they run at the end of a batch (node health's
/// evictions before the scheduler, which places the evicted pods).
pub fn all(cfg: &Config) -> Vec<Box<dyn Hook>> {
    vec![
        Box::new(node_subnets::NodeSubnets::new(cfg)),
        Box::new(cluster_ips::ClusterIps::new(cfg)),
        Box::new(node_ports::NodePorts::new(cfg)),
        Box::new(node_health::NodeHealth::new(cfg)),
        Box::new(scheduler::Scheduler::default()),
        Box::new(load_balancer::LoadBalancers::default()),
    ]
}

/// How often the controllers' periodic work runs: a quarter of the node grace period,
/// between 50 ms and 1 s.
pub fn tick_period(cfg: &Config) -> Duration {
    (cfg.node_grace_period / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs the controllers' periodic work ([`Hook::tick`]) in the writer until shutdown.
pub async fn run_ticks(store: Arc<Store>) {
    let mut tick = tokio::time::interval(tick_period(&store.cfg));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *store.closing.borrow() {
            return;
        }
        let r = store
            .write(|txn| {
                txn.tick();
                Ok(None)
            })
            .await;
        if let Err(ApiError::Unavailable(_)) = r {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_period_is_a_quarter_of_the_grace_clamped() {
        let with = |ms| Config {
            node_grace_period: Duration::from_millis(ms),
            ..Default::default()
        };
        assert_eq!(tick_period(&with(40_000)), Duration::from_secs(1));
        assert_eq!(tick_period(&with(2_000)), Duration::from_millis(500));
        assert_eq!(tick_period(&with(100)), Duration::from_millis(50));
        assert_eq!(all(&Config::default()).len(), 6);
    }
}
