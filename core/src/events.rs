//! Event naming, shared by the apiserver's recorder and the node agent's: an Event's
//! name is its involved object's name plus a hash of its dedup key, so the same
//! (object, type, reason, message, source) is one Event whose `count` grows, whoever
//! writes it and across restarts.

/// `<object>.<16 hex of the FNV-1a hash of key>` (the object's name cut at 200 chars).
pub fn event_name(object: &str, key: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in key {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let base: String = object.chars().take(200).collect();
    format!("{base}.{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_key() {
        let a = event_name("web", &["Pod", "u", "Warning", "x"]);
        assert!(a.starts_with("web.") && a.len() == 4 + 16);
        assert_eq!(a, event_name("web", &["Pod", "u", "Warning", "x"]));
        assert_ne!(a, event_name("web", &["Pod", "u", "Warning", "y"]));
        // Parts are separated: ("ab","c") is not ("a","bc").
        assert_ne!(event_name("w", &["ab", "c"]), event_name("w", &["a", "bc"]));
    }
}
