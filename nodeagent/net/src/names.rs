//! Names of the things the datapath creates: pure functions, unit-tested.

/// Linux limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Name of a pod's network namespace: `<prefix>-<uid>` where `<uid>` is the pod uid with
/// every character outside `[A-Za-z0-9_-]` replaced by `_` (namespace names are file names
/// under /run/netns). Every pod netns of an agent therefore starts with
/// [`pod_netns_prefix`]`(prefix)`, which is what cleanup lists.
pub fn pod_netns_name(prefix: &str, pod_uid: &str) -> String {
    let uid: String = pod_uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}{uid}", pod_netns_prefix(prefix))
}

/// The common start of every pod netns name made with `prefix` (`"<prefix>-"`).
pub fn pod_netns_prefix(prefix: &str) -> String {
    format!("{prefix}-")
}

/// MAC address of a pod's `eth0`, derived from its IP: `0a:58:<ip bytes>` (locally
/// administered, unicast; the scheme OVN-Kubernetes uses). A pod that gets an IP a
/// deleted pod had also gets that pod's MAC, so ARP entries that nodes and other pods
/// still hold for the IP stay right: without it the first connections to a reused IP go
/// to the old, gone MAC until the neighbour entry expires (seconds).
pub fn pod_mac(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x0a, 0x58, a, b, c, d]
}

/// Host side of a pod's veth: `klv` + 10 hex digits of a 64-bit FNV-1a hash of the pod
/// uid (13 characters, under the 15-character limit). Stable across agent restarts, so an
/// agent finds the veth of a pod it adopts.
pub fn host_if_name(pod_uid: &str) -> String {
    format!("{HOST_IF_PREFIX}{:010x}", fnv1a64(pod_uid.as_bytes()) >> 24)
}

/// Prefix of every host-side veth name (see [`host_if_name`]).
pub const HOST_IF_PREFIX: &str = "klv";

/// 64-bit FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether `name` is usable as a Linux interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Whether `name` is usable as a named netns (a file name under /run/netns).
pub fn valid_netns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_mac_follows_the_ip() {
        let mac = pod_mac("10.0.1.4".parse().unwrap());
        assert_eq!(mac, [0x0a, 0x58, 10, 0, 1, 4]);
        // Locally administered (bit 1 of the first byte), unicast (bit 0 clear).
        assert_eq!(mac[0] & 0b11, 0b10);
    }

    #[test]
    fn host_if_is_short_stable_and_hex() {
        let a = host_if_name("2f1c8a64-0c8e-4b7e-9d7a-3b6f0d2c1e55");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("klv"));
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(valid_ifname(&a));
        assert_eq!(a, host_if_name("2f1c8a64-0c8e-4b7e-9d7a-3b6f0d2c1e55"));
        assert_ne!(a, host_if_name("2f1c8a64-0c8e-4b7e-9d7a-3b6f0d2c1e56"));
    }

    #[test]
    fn host_if_names_do_not_collide_for_many_uids() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            assert!(seen.insert(host_if_name(&format!("pod-uid-{i}"))));
        }
    }

    #[test]
    fn netns_name_has_prefix_and_safe_chars() {
        assert_eq!(pod_netns_name("kl1a2b", "abc-123"), "kl1a2b-abc-123");
        assert_eq!(pod_netns_name("kl", "a/b c"), "kl-a_b_c");
        assert!(pod_netns_name("klx-n0", "u").starts_with(&pod_netns_prefix("klx-n0")));
    }

    #[test]
    fn ifname_validation() {
        assert!(valid_ifname("kl0"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("0123456789abcdef"));
        assert!(!valid_ifname("a/b"));
    }
}
