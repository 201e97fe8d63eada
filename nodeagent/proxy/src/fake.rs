//! A recording fake of [`Exec`] for unit tests (no root, no processes): an in-memory
//! "kernel" of nat and filter chains that applies `iptables-restore --noflush` input
//! the way the real tool does (declaring a chain flushes it, `-X` needs an empty,
//! unreferenced chain, a jump needs its target, all or nothing per call), answers
//! `iptables-save` from it, keeps the proxy's routes, and records every call.

use crate::exec::{Exec, ExecError};
use crate::render::{is_builtin, Table, Tables};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

/// One call the proxier made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Restore(String),
    Save,
    Conntrack(Ipv4Addr, Option<Ipv4Addr>),
    ListRoutes,
    Addresses(String),
    UpdateRoutes {
        dev: String,
        add: Vec<Ipv4Addr>,
        del: Vec<Ipv4Addr>,
    },
    SysctlGet,
    SysctlSet(String, String),
}

/// The fake kernel state (and knobs).
#[derive(Debug)]
pub struct FakeKernel {
    pub tables: Tables,
    pub routes: BTreeSet<Ipv4Addr>,
    /// `ip addr show dev` answers.
    pub addresses: BTreeMap<String, Vec<ipnet::Ipv4Net>>,
    pub calls: Vec<Call>,
    /// Fail this many of the next restores (after recording them).
    pub fail_restores: usize,
    pub have_conntrack: bool,
}

const TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "REJECT",
    "MARK",
    "LOG",
];

impl Default for FakeKernel {
    fn default() -> Self {
        let mut tables = Tables::default();
        for c in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
            tables.nat.insert(c.to_string(), vec![]);
        }
        for c in ["INPUT", "FORWARD", "OUTPUT"] {
            tables.filter.insert(c.to_string(), vec![]);
        }
        FakeKernel {
            tables,
            routes: BTreeSet::new(),
            addresses: BTreeMap::new(),
            calls: Vec::new(),
            fail_restores: 0,
            have_conntrack: true,
        }
    }
}

fn target(spec: &str) -> Option<&str> {
    let mut w = spec.split_whitespace();
    while let Some(x) = w.next() {
        if x == "-j" || x == "-g" {
            return w.next();
        }
    }
    None
}

impl FakeKernel {
    /// Applies `iptables-restore --noflush` input: all of it or (on error) nothing.
    pub fn apply_restore(&mut self, text: &str) -> Result<(), String> {
        let mut t = self.tables.clone();
        let mut cur: Option<Table> = None;
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if cur.is_some() {
                    return Err(format!("line {n}: table inside a table"));
                }
                cur = Some(match name {
                    "nat" => Table::Nat,
                    "filter" => Table::Filter,
                    _ => return Err(format!("line {n}: unknown table {name}")),
                });
                continue;
            }
            let Some(table) = cur else {
                return Err(format!("line {n}: outside a table: {line}"));
            };
            let chains = t.get_mut(table);
            if line == "COMMIT" {
                for rules in chains.values() {
                    for r in rules {
                        if let Some(to) = target(r) {
                            if !TARGETS.contains(&to) && !chains.contains_key(to) {
                                return Err(format!("line {n}: jump to missing chain {to}"));
                            }
                        }
                    }
                }
                cur = None;
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                chains.insert(name.to_string(), vec![]);
                continue;
            }
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let exists = chains.contains_key(chain);
            match op {
                "-A" | "-I" | "-D" | "-F" | "-X" if !exists => {
                    return Err(format!("line {n}: no chain {chain}"));
                }
                "-A" => chains
                    .get_mut(chain)
                    .unwrap()
                    .push(format!("-A {chain} {spec}")),
                "-I" => {
                    let (pos, spec) = match spec.split_once(' ') {
                        Some((p, s)) if p.parse::<usize>().is_ok() => (p.parse().unwrap(), s),
                        _ => (1, spec),
                    };
                    let rules = chains.get_mut(chain).unwrap();
                    if pos == 0 || pos > rules.len() + 1 {
                        return Err(format!("line {n}: bad position {pos}"));
                    }
                    rules.insert(pos - 1, format!("-A {chain} {spec}"));
                }
                "-D" => {
                    let rules = chains.get_mut(chain).unwrap();
                    let line = format!("-A {chain} {spec}");
                    let Some(i) = rules.iter().position(|r| *r == line) else {
                        return Err(format!("line {n}: no such rule: {line}"));
                    };
                    rules.remove(i);
                }
                "-F" => chains.get_mut(chain).unwrap().clear(),
                "-N" if exists => return Err(format!("line {n}: chain {chain} exists")),
                "-N" => {
                    chains.insert(chain.to_string(), vec![]);
                }
                "-X" => {
                    if is_builtin(table, chain) || !chains[chain].is_empty() {
                        return Err(format!("line {n}: cannot delete chain {chain}"));
                    }
                    if chains.values().flatten().any(|r| target(r) == Some(chain)) {
                        return Err(format!("line {n}: chain {chain} is referenced"));
                    }
                    chains.remove(chain);
                }
                _ => return Err(format!("line {n}: unsupported: {line}")),
            }
        }
        if cur.is_some() {
            return Err("COMMIT expected".to_string());
        }
        self.tables = t;
        Ok(())
    }

    /// `iptables-save` output of both tables.
    pub fn save_text(&self) -> String {
        let mut out = String::new();
        for table in [Table::Filter, Table::Nat] {
            let chains = self.tables.get(table);
            out.push_str(&format!("*{}\n", table.name()));
            // Built-in chains first, as iptables-save prints them.
            let order: Vec<&String> = chains
                .keys()
                .filter(|c| is_builtin(table, c))
                .chain(chains.keys().filter(|c| !is_builtin(table, c)))
                .collect();
            for c in &order {
                let policy = if is_builtin(table, c) { "ACCEPT" } else { "-" };
                out.push_str(&format!(":{c} {policy} [0:0]\n"));
            }
            for c in &order {
                for r in &chains[*c] {
                    out.push_str(r);
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// Cheap to clone; clones share the kernel.
#[derive(Debug, Clone, Default)]
pub struct FakeExec {
    kernel: Arc<Mutex<FakeKernel>>,
}

impl FakeExec {
    pub fn new() -> FakeExec {
        FakeExec::default()
    }
    pub fn kernel(&self) -> MutexGuard<'_, FakeKernel> {
        self.kernel.lock().unwrap()
    }
    /// Changes the rules behind the proxier's back (drift), in restore syntax.
    pub fn iptables(&self, text: &str) {
        self.kernel()
            .apply_restore(text)
            .expect("valid restore text");
    }
    /// The recorded calls so far (clears the record); the background sysctl check is
    /// left out.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.kernel().calls)
            .into_iter()
            .filter(|c| !matches!(c, Call::SysctlGet | Call::SysctlSet(..)))
            .collect()
    }
    /// The restore inputs among [`FakeExec::take_calls`].
    pub fn take_restores(&self) -> Vec<String> {
        self.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Restore(t) => Some(t),
                _ => None,
            })
            .collect()
    }
    pub fn rules(&self, table: Table, chain: &str) -> Option<Vec<String>> {
        self.kernel().tables.get(table).get(chain).cloned()
    }
    fn record(&self, c: Call) {
        self.kernel().calls.push(c);
    }
}

impl Exec for FakeExec {
    type Save = String;

    fn have_conntrack(&self) -> bool {
        self.kernel().have_conntrack
    }
    async fn restore(&self, text: &str) -> Result<(), ExecError> {
        let mut k = self.kernel();
        k.calls.push(Call::Restore(text.to_string()));
        let failed = |stderr: String| ExecError::Failed {
            program: "iptables-restore".into(),
            status: "exit status: 1".into(),
            stderr,
        };
        if k.fail_restores > 0 {
            k.fail_restores -= 1;
            return Err(failed("injected failure".into()));
        }
        k.apply_restore(text).map_err(failed)
    }
    fn start_save(&self) -> Result<String, ExecError> {
        self.record(Call::Save);
        Ok(self.kernel().save_text())
    }
    async fn finish_save(&self, save: String) -> Result<String, ExecError> {
        Ok(save)
    }
    async fn save(&self) -> Result<String, ExecError> {
        self.record(Call::Save);
        Ok(self.kernel().save_text())
    }
    async fn conntrack_flush_udp(
        &self,
        orig_dst: Ipv4Addr,
        dnat_to: Option<Ipv4Addr>,
    ) -> Result<(), ExecError> {
        self.record(Call::Conntrack(orig_dst, dnat_to));
        Ok(())
    }
    async fn list_routes(&self) -> Result<Vec<Ipv4Addr>, ExecError> {
        let mut k = self.kernel();
        k.calls.push(Call::ListRoutes);
        Ok(k.routes.iter().copied().collect())
    }
    async fn addresses(&self, dev: &str) -> Result<Vec<ipnet::Ipv4Net>, ExecError> {
        let mut k = self.kernel();
        k.calls.push(Call::Addresses(dev.to_string()));
        Ok(k.addresses.get(dev).cloned().unwrap_or_default())
    }
    async fn update_routes(
        &self,
        dev: &str,
        add: &[Ipv4Addr],
        del: &[Ipv4Addr],
    ) -> Result<(), ExecError> {
        if add.is_empty() && del.is_empty() {
            return Ok(()); // as the real runner: no process
        }
        let mut k = self.kernel();
        k.calls.push(Call::UpdateRoutes {
            dev: dev.to_string(),
            add: add.to_vec(),
            del: del.to_vec(),
        });
        for ip in del {
            k.routes.remove(ip);
        }
        k.routes.extend(add.iter().copied());
        Ok(())
    }
    async fn sysctl_get(&self, keys: &[&str]) -> Vec<(String, String)> {
        self.record(Call::SysctlGet);
        keys.iter()
            .map(|k| (k.to_string(), "1".to_string()))
            .collect()
    }
    async fn sysctl_set(&self, key: &str, value: &str) -> Result<(), ExecError> {
        self.record(Call::SysctlSet(key.to_string(), value.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_is_all_or_nothing_and_checks_references() {
        let mut k = FakeKernel::default();
        k.apply_restore(
            "*nat\n:X - [0:0]\n-A X -j DNAT --to-destination 10.0.0.1:1\n-A OUTPUT -j X\nCOMMIT\n",
        )
        .unwrap();
        let before = k.tables.clone();
        // Jump to a missing chain: nothing applied.
        let e = k
            .apply_restore("*nat\n:X - [0:0]\n-A OUTPUT -j Y\nCOMMIT\n")
            .unwrap_err();
        assert!(e.contains("missing chain Y"), "{e}");
        assert_eq!(k.tables, before);
        // A referenced chain cannot go; a flushed, unreferenced one can.
        assert!(k.apply_restore("*nat\n:X - [0:0]\n-X X\nCOMMIT\n").is_err());
        k.apply_restore("*nat\n:X - [0:0]\n-D OUTPUT -j X\n-X X\nCOMMIT\n")
            .unwrap();
        assert!(!k.tables.nat.contains_key("X"));
        assert_eq!(k.tables.nat["OUTPUT"], Vec::<String>::new());
        // Missing COMMIT, unknown rule, -D of an absent rule.
        assert!(k.apply_restore("*nat\n:Z - [0:0]\n").is_err());
        assert!(k
            .apply_restore("*nat\n-D OUTPUT -j ACCEPT\nCOMMIT\n")
            .is_err());
        assert!(k.apply_restore("*nat\n-Z OUTPUT\nCOMMIT\n").is_err());
    }

    #[test]
    fn save_round_trips_through_parse_save() {
        let mut k = FakeKernel::default();
        k.apply_restore(
            "*nat\n:KL-A - [0:0]\n-A KL-A -j MASQUERADE\n-I POSTROUTING 1 -j KL-A\nCOMMIT\n\
             *filter\n-A INPUT -j ACCEPT\n-I INPUT 1 -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let parsed = crate::render::parse_save(&k.save_text());
        assert_eq!(parsed, k.tables);
        assert_eq!(
            k.tables.filter["INPUT"],
            vec!["-A INPUT -j DROP", "-A INPUT -j ACCEPT"]
        );
    }
}
