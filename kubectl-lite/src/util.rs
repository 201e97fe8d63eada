//! Pure helpers: kubectl's age format, RFC 3339 timestamps, and the parsers for
//! command-line values (`k=v,…` maps, `K=V` env entries, service port specs).

use kube_lite_core::consts::protocol;
use std::collections::{BTreeMap, HashMap};

/// kubectl's `HumanDuration` (k8s.io/apimachinery/pkg/util/duration): `5s`, `2m30s`,
/// `15m`, `3h20m`, `2d4h`, … for the AGE columns.
pub fn human_duration(millis: i64) -> String {
    let seconds = millis.div_euclid(1000);
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of an object created at `created_ms` (unix millis) seen at `now_ms`;
/// `<unknown>` when the timestamp is unset.
pub fn age(created_ms: i64, now_ms: i64) -> String {
    if created_ms <= 0 {
        return "<unknown>".into();
    }
    human_duration(now_ms - created_ms)
}

/// Unix millis → RFC 3339 UTC with second precision, as Kubernetes prints
/// timestamps (`2026-11-26T23:47:10Z`).
pub fn rfc3339(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `a=b,c=d` → map (for `--labels` and `--selector`). Empty input → empty map.
pub fn parse_map(flag: &str, input: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{flag} {part:?}: expected key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{flag} {part:?}: empty key"));
        }
        if out.insert(k.to_string(), v.trim().to_string()).is_some() {
            return Err(format!("{flag}: key {k:?} given twice"));
        }
    }
    Ok(out)
}

/// `K=V` for `--env` (the value may contain `=`).
pub fn parse_env(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("--env {input:?}: expected NAME=VALUE")),
    }
}

/// A parsed `--port PORT[:TARGET][/tcp|/udp]` of `create service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub port: i32,
    pub target_port: i32,
    pub protocol: String,
}

impl PortSpec {
    /// The port's name: `<port>-<protocol>` (e.g. `80-tcp`), unique among the ports of
    /// one service as long as no port/protocol pair is repeated.
    pub fn name(&self) -> String {
        format!("{}-{}", self.port, self.protocol.to_ascii_lowercase())
    }
}

pub fn parse_port_spec(input: &str) -> Result<PortSpec, String> {
    let bad = |why: &str| format!("--port {input:?}: {why} (expected PORT[:TARGET][/tcp|/udp])");
    let (ports, protocol) = match input.split_once('/') {
        Some((p, proto)) => match proto.to_ascii_lowercase().as_str() {
            "tcp" => (p, protocol::TCP),
            "udp" => (p, protocol::UDP),
            _ => return Err(bad(&format!("unknown protocol {proto:?}"))),
        },
        None => (input, protocol::TCP),
    };
    let num = |s: &str| -> Result<i32, String> {
        match s.trim().parse::<i32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n),
            _ => Err(bad(&format!(
                "{s:?} is not a port number between 1 and 65535"
            ))),
        }
    };
    let (port, target_port) = match ports.split_once(':') {
        Some((p, t)) => (num(p)?, num(t)?),
        None => {
            let p = num(ports)?;
            (p, p)
        }
    };
    Ok(PortSpec {
        port,
        target_port,
        protocol: protocol.to_string(),
    })
}

/// `k=v` pairs sorted by key, joined by `sep`; `<none>` when empty.
/// User-controlled text made safe for a terminal: control characters (C0 including
/// newline, tab and ESC, DEL, and C1) become visible escapes (`\n`, `\t`, `\x1b`,
/// `\u{9b}`), so a value cannot add lines, move the cursor or set the terminal title.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `k=v` pairs sorted by key, joined by `sep`; keys and values escaped
/// ([`escape_control`]).
pub fn format_map(map: &HashMap<String, String>, sep: &str) -> String {
    if map.is_empty() {
        return "<none>".into();
    }
    let sorted: BTreeMap<_, _> = map.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", escape_control(k), escape_control(v)))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("plain text é"), "plain text é");
        assert_eq!(escape_control("a\nName: evil"), "a\\nName: evil");
        assert_eq!(escape_control("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape_control("nul\0\t\r\x7f"), "nul\\x00\\t\\r\\x7f");
        assert_eq!(escape_control("csi\u{9b}"), "csi\\u{9b}");
        let m: HashMap<String, String> = [("k".to_string(), "v\nInjected: 1".to_string())].into();
        assert_eq!(format_map(&m, "\n"), "k=v\\nInjected: 1");
    }

    #[test]
    fn human_duration_matches_kubectl() {
        let s = 1000;
        let cases = [
            (-5 * s, "<invalid>"),
            (-500, "0s"),
            (0, "0s"),
            (5 * s, "5s"),
            (119 * s, "119s"),
            (120 * s, "2m"),
            (150 * s, "2m30s"),
            (10 * 60 * s, "10m"),
            (179 * 60 * s, "179m"),
            (3 * 3600 * s, "3h"),
            (3 * 3600 * s + 20 * 60 * s, "3h20m"),
            (8 * 3600 * s, "8h"),
            (47 * 3600 * s, "47h"),
            (48 * 3600 * s, "2d"),
            (52 * 3600 * s, "2d4h"),
            (10 * 86400 * s, "10d"),
            (800 * 86400 * s, "2y70d"),
            (9 * 365 * 86400 * s, "9y"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration(ms), want, "{ms} ms");
        }
        assert_eq!(age(0, 5000), "<unknown>");
        assert_eq!(age(1000, 6000), "5s");
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_823_230_999), "2026-11-27T23:47:10Z");
        assert_eq!(rfc3339(1_709_251_199_000), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn parses_port_specs() {
        let p = parse_port_spec("80:8080/udp").unwrap();
        assert_eq!(
            p,
            PortSpec {
                port: 80,
                target_port: 8080,
                protocol: "UDP".into()
            }
        );
        assert_eq!(p.name(), "80-udp");
        let p = parse_port_spec("3001").unwrap();
        assert_eq!(
            (p.port, p.target_port, p.protocol.as_str()),
            (3001, 3001, "TCP")
        );
        let p = parse_port_spec("53/TCP").unwrap();
        assert_eq!(
            (p.port, p.target_port, p.protocol.as_str()),
            (53, 53, "TCP")
        );
        for bad in ["", "0", "70000", "80:x", "80/sctp", "a:b", "80:"] {
            let err = parse_port_spec(bad).unwrap_err();
            assert!(err.starts_with("--port"), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_maps_and_env() {
        let m = parse_map("--labels", "app=web, tier=front").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["tier"], "front");
        assert_eq!(format_map(&m, ","), "app=web,tier=front");
        assert!(parse_map("--labels", "").unwrap().is_empty());
        assert!(parse_map("--labels", "novalue")
            .unwrap_err()
            .contains("key=value"));
        assert!(parse_map("--labels", "a=1,a=2")
            .unwrap_err()
            .contains("twice"));
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
    }
}
