//! The node health timing as a pure state machine ([`Lifecycle`]), after Kubernetes'
//! node lifecycle controller:
//!
//! - Silence is timed from the controller's OWN observations: a node counts as heard
//!   when the controller sees its heartbeat (or its Lease renewal) change, and every
//!   node known at start is heard at start. So an apiserver outage of any length evicts
//!   nothing by itself: after a restart every node has the full grace period again.
//! - A node silent longer than the grace period is NotReady; longer than grace +
//!   eviction timeout (and with pods), it is due for eviction.
//! - Evictions are rate limited (a token bucket, burst 1) by the cluster's state
//!   ([`Mode`]): `Normal` at the primary rate (Kubernetes' `--node-eviction-rate`,
//!   0.1 nodes/s); `PartialDisruption` (more than 2 nodes silent and at least
//!   `unhealthy_threshold` = 0.55 of all) at the secondary rate (0.01 nodes/s) when the
//!   cluster is larger than `large_cluster` (50) nodes, else not at all;
//!   `FullDisruption` (no node heard within the grace period) not at all. Leaving full
//!   disruption restarts every node's clock (as Kubernetes does), so the nodes that come
//!   back late get their grace period instead of an eviction.
//!
//! The whole cluster is one zone (kube-lite nodes carry no zone label).

use std::collections::BTreeMap;

/// The settings of [`Lifecycle`] (milliseconds, nodes per second).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub grace_ms: i64,
    /// Grace period + pod eviction timeout.
    pub evict_after_ms: i64,
    pub unhealthy_threshold: f64,
    pub large_cluster: usize,
    pub primary_rate: f64,
    pub secondary_rate: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            grace_ms: 40_000,
            evict_after_ms: 100_000,
            unhealthy_threshold: 0.55,
            large_cluster: 50,
            primary_rate: 0.1,
            secondary_rate: 0.01,
        }
    }
}

/// The cluster's health state, as Kubernetes' zone states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    PartialDisruption,
    FullDisruption,
}

impl Mode {
    /// `silent` of `total` nodes silent past the grace period.
    pub fn of(silent: usize, total: usize, unhealthy_threshold: f64) -> Mode {
        if total > 0 && silent == total {
            Mode::FullDisruption
        } else if silent > 2 && silent as f64 / total as f64 >= unhealthy_threshold {
            Mode::PartialDisruption
        } else {
            Mode::Normal
        }
    }
}

/// What one [`Lifecycle::step`] decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    pub mode: Mode,
    /// Every node silent past the grace period (to be marked NotReady), by name.
    pub not_ready: Vec<String>,
    /// Nodes whose pods are evicted now (oldest silence first).
    pub evict: Vec<String>,
    /// Nodes due for eviction but held back (rate limit or disruption).
    pub held: usize,
}

#[derive(Debug)]
pub struct Lifecycle {
    p: Params,
    /// Node → when the controller last heard from it (its clock, ms).
    heard: BTreeMap<String, i64>,
    mode: Mode,
    tokens: f64,
    last_step: Option<i64>,
}

impl Lifecycle {
    pub fn new(p: Params) -> Lifecycle {
        Lifecycle {
            p,
            heard: BTreeMap::new(),
            mode: Mode::Normal,
            tokens: 1.0,
            last_step: None,
        }
    }

    /// The node showed a sign of life at `now` (a new heartbeat or Lease renewal, its
    /// creation, or it was found at start).
    pub fn heard(&mut self, node: &str, now: i64) {
        match self.heard.get_mut(node) {
            Some(t) => *t = (*t).max(now),
            None => {
                self.heard.insert(node.to_string(), now);
            }
        }
    }

    /// A sign of life of a node only if it is known (a Lease renewal: a Lease may
    /// outlive its node or come before it).
    pub fn heard_known(&mut self, node: &str, now: i64) {
        if let Some(t) = self.heard.get_mut(node) {
            *t = (*t).max(now);
        }
    }

    /// The node was deleted.
    pub fn forget(&mut self, node: &str) {
        self.heard.remove(node);
    }

    /// How long `node` has been silent at `now` (`None`: unknown node).
    pub fn silent_ms(&self, node: &str, now: i64) -> Option<i64> {
        self.heard.get(node).map(|t| now - t)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Judges every node at `now`; `has_pods(node)` tells whether eviction would do
    /// anything.
    pub fn step(&mut self, now: i64, has_pods: impl Fn(&str) -> bool) -> Step {
        let total = self.heard.len();
        let silent = self
            .heard
            .values()
            .filter(|&&t| now - t > self.p.grace_ms)
            .count();
        let mode = Mode::of(silent, total, self.p.unhealthy_threshold);
        let eased = matches!(
            (self.mode, mode),
            (Mode::FullDisruption, Mode::PartialDisruption | Mode::Normal)
                | (Mode::PartialDisruption, Mode::Normal)
        );
        if eased {
            // Out of full disruption (as Kubernetes) or back to normal from a partial
            // one (kube-lite's choice: the nodes that come back are not all heard in
            // the same instant, and the last ones must not be evicted for a silence
            // the disruption explained): everyone gets a fresh grace period.
            for t in self.heard.values_mut() {
                *t = (*t).max(now);
            }
        }
        self.mode = mode;
        let rate = match mode {
            Mode::Normal => self.p.primary_rate,
            Mode::PartialDisruption if total > self.p.large_cluster => self.p.secondary_rate,
            _ => 0.0,
        };
        if let Some(last) = self.last_step {
            let dt = (now - last).max(0) as f64 / 1000.0;
            self.tokens = (self.tokens + rate * dt).min(1.0);
        }
        self.last_step = Some(now);

        let mut out = Step {
            mode,
            ..Default::default()
        };
        let mut due: Vec<(i64, &String)> = Vec::new();
        for (name, &t) in &self.heard {
            let age = now - t;
            if age > self.p.grace_ms {
                out.not_ready.push(name.clone());
                if age > self.p.evict_after_ms && has_pods(name) {
                    due.push((t, name));
                }
            }
        }
        due.sort();
        for (_, name) in due {
            // (a little slack for the float sums of the refill)
            if rate > 0.0 && self.tokens >= 1.0 - 1e-9 {
                self.tokens -= 1.0;
                out.evict.push(name.clone());
            } else {
                out.held += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 1_000;
    const EVICT: i64 = 3_000;

    fn lc() -> Lifecycle {
        Lifecycle::new(Params {
            grace_ms: GRACE,
            evict_after_ms: EVICT,
            ..Default::default()
        })
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    /// Steps every 250 ms from `from` to `to`, `beat(name, now)` deciding who is heard
    /// first; returns every node evicted with its time.
    fn run(
        l: &mut Lifecycle,
        names: &[String],
        from: i64,
        to: i64,
        beat: impl Fn(&str, i64) -> bool,
    ) -> Vec<(i64, String)> {
        let mut evicted = Vec::new();
        let mut now = from;
        while now <= to {
            for n in names {
                if beat(n, now) {
                    l.heard(n, now);
                }
            }
            let done: Vec<(i64, String)> = evicted.clone();
            let s = l.step(now, |n| !done.iter().any(|(_, d)| d == n));
            evicted.extend(s.evict.into_iter().map(|n| (now, n)));
            now += 250;
        }
        evicted
    }

    #[test]
    fn outage_of_any_length_evicts_nothing() {
        // The controller starts after a long outage: every stored node is heard at
        // start, whatever its stored heartbeat says, and the agents come back within
        // the grace period.
        let names = nodes(5);
        for outage in [0i64, 10_000, 86_400_000] {
            let mut l = lc();
            let start = outage;
            for n in &names {
                l.heard(n, start);
            }
            // Agents reconnect at different times, all within the grace period, then
            // heartbeat at every step.
            let evicted = run(&mut l, &names, start, start + 20_000, |n, now| {
                now >= start + 200 * n[1..].parse::<i64>().unwrap()
            });
            assert!(evicted.is_empty(), "outage {outage}: {evicted:?}");
            assert_eq!(l.mode(), Mode::Normal);
        }
    }

    #[test]
    fn one_silent_node_is_evicted_after_the_timeout() {
        let names = nodes(4);
        let mut l = lc();
        for n in &names {
            l.heard(n, 0);
        }
        let evicted = run(&mut l, &names, 0, 10_000, |n, _| n != "n2");
        assert_eq!(evicted.len(), 1, "{evicted:?}");
        let (at, who) = &evicted[0];
        assert_eq!(who, "n2");
        // First step past grace + eviction timeout (steps every 250 ms).
        assert_eq!(*at, EVICT + 250);
        // NotReady past the grace period already.
        let s = l.step(10_250, |_| true);
        assert_eq!(s.not_ready, vec!["n2".to_string()]);
        assert_eq!(s.mode, Mode::Normal);
    }

    #[test]
    fn most_nodes_silent_at_once_evicts_nothing() {
        // 10 nodes, 6 go silent together (0.6 ≥ 0.55): a small cluster in partial
        // disruption evicts nothing.
        let names = nodes(10);
        let mut l = lc();
        for n in &names {
            l.heard(n, 0);
        }
        let silent = |n: &str| n[1..].parse::<usize>().unwrap() < 6;
        let evicted = run(&mut l, &names, 0, 60_000, |n, _| !silent(n));
        assert!(evicted.is_empty(), "{evicted:?}");
        let s = l.step(60_250, |_| true);
        assert_eq!(s.mode, Mode::PartialDisruption);
        assert_eq!(s.not_ready.len(), 6);
        assert_eq!(s.held, 6);

        // Every node silent: full disruption, nothing evicted either.
        let mut l = lc();
        for n in &names {
            l.heard(n, 0);
        }
        assert!(run(&mut l, &names, 0, 60_000, |_, _| false).is_empty());
        assert_eq!(l.step(60_250, |_| true).mode, Mode::FullDisruption);
    }

    #[test]
    fn below_the_threshold_evictions_go_on() {
        // 10 nodes, 5 silent (0.5 < 0.55): normal mode, evicted one by one at the
        // primary rate (0.1 nodes/s: one at once, then one every 10 s).
        let names = nodes(10);
        let mut l = lc();
        for n in &names {
            l.heard(n, 0);
        }
        let silent = |n: &str| n[1..].parse::<usize>().unwrap() < 5;
        let evicted = run(&mut l, &names, 0, 45_000, |n, _| !silent(n));
        let times: Vec<i64> = evicted.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![3_250, 13_250, 23_250, 33_250, 43_250]);
        let mut who: Vec<&str> = evicted.iter().map(|(_, n)| n.as_str()).collect();
        who.sort();
        assert_eq!(who, ["n0", "n1", "n2", "n3", "n4"]);
    }

    #[test]
    fn large_cluster_in_partial_disruption_evicts_at_the_secondary_rate() {
        let names = nodes(60);
        let mut l = lc();
        for n in &names {
            l.heard(n, 0);
        }
        let silent = |n: &str| n[1..].parse::<usize>().unwrap() < 40;
        let evicted = run(&mut l, &names, 0, 250_000, |n, _| !silent(n));
        let times: Vec<i64> = evicted.iter().map(|(t, _)| *t).collect();
        // One at once (burst), the next after 100 s (0.01 nodes/s), and so on.
        assert_eq!(times, vec![3_250, 103_250, 203_250]);
        assert_eq!(l.mode(), Mode::PartialDisruption);
    }

    #[test]
    fn leaving_full_disruption_gives_everyone_a_fresh_grace_period() {
        let names = nodes(3);
        let mut l = lc();
        for n in &names {
            l.heard(n, 0);
        }
        let s = l.step(5_000, |_| true);
        assert_eq!(
            (s.mode, s.evict.len(), s.held),
            (Mode::FullDisruption, 0, 3)
        );
        // n0 comes back; n1 and n2 are not back yet but get a new grace period.
        l.heard("n0", 5_100);
        let s = l.step(5_250, |_| true);
        assert_eq!(s.mode, Mode::Normal);
        assert!(s.not_ready.is_empty() && s.evict.is_empty(), "{s:?}");
        assert_eq!(l.silent_ms("n1", 5_250), Some(0));
        // Still silent past grace + eviction timeout from then: evicted, at the rate.
        l.heard("n0", 8_000);
        let s = l.step(8_500, |_| true);
        assert_eq!(s.evict, vec!["n1".to_string()]);
        assert_eq!(s.held, 1);
    }

    #[test]
    fn deleted_nodes_are_forgotten_and_heartbeats_never_go_back() {
        let mut l = lc();
        l.heard("a", 1_000);
        l.heard("a", 500);
        assert_eq!(l.silent_ms("a", 1_200), Some(200));
        l.heard_known("b", 1_100);
        assert_eq!(l.silent_ms("b", 1_200), None, "unknown nodes stay unknown");
        l.heard_known("a", 1_100);
        assert_eq!(l.silent_ms("a", 1_200), Some(100));
        l.forget("a");
        assert_eq!(l.silent_ms("a", 1_200), None);
        assert_eq!(l.step(10_000, |_| true), Step::default());
        assert_eq!(Mode::of(0, 0, 0.55), Mode::Normal);
        assert_eq!(Mode::of(2, 2, 0.55), Mode::FullDisruption);
        assert_eq!(
            Mode::of(2, 3, 0.55),
            Mode::Normal,
            "at most 2 silent: normal"
        );
        assert_eq!(Mode::of(3, 5, 0.55), Mode::PartialDisruption);
        assert_eq!(Mode::of(3, 6, 0.55), Mode::Normal);
    }
}
