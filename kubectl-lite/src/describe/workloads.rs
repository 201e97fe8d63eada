//! `describe` texts of Deployment, ReplicaSet, Namespace, ConfigMap, Secret and Event,
//! and the Events section every text ends with.

use super::{meta_fields, or_none, time, Text};
use crate::output::selector_text;
use crate::util::human_duration;
use kube_lite_core::workloads as wl;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Event, Namespace, PodTemplateSpec, ReplicaSet, Secret,
};

/// A pod template as `describe` prints it (also `rollout history --revision`).
pub fn template_text(t: &PodTemplateSpec) -> String {
    let m = t.metadata.clone().unwrap_or_default();
    let spec = t.spec.clone().unwrap_or_default();
    let mut x = Text::new(20);
    x.line("Pod Template:");
    x.field(2, "Labels", super::map_lines(&m.labels));
    if !m.annotations.is_empty() {
        x.field(2, "Annotations", super::map_lines(&m.annotations));
    }
    x.line("  Containers:");
    for c in &spec.containers {
        x.line(format!("   {}:", c.name));
        x.field(4, "Image", &c.image);
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol))
            .collect();
        x.field(
            4,
            "Port",
            if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(", ")
            },
        );
        if !c.command.is_empty() {
            x.field(4, "Command", c.command.join(" "));
        }
        if !c.args.is_empty() {
            x.field(4, "Args", c.args.join(" "));
        }
        let env: Vec<String> = c
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        x.field(
            4,
            "Environment",
            if env.is_empty() {
                "<none>".into()
            } else {
                env.join("\n")
            },
        );
    }
    x.out
}

/// `Events:` and a table of the object's events (or `<none>`), as kubectl ends every
/// describe.
pub fn events_section(events: &[Event], now_ms: i64) -> String {
    if events.is_empty() {
        return "Events:            <none>\n".into();
    }
    let mut rows = vec![vec![
        "Type".to_string(),
        "Reason".into(),
        "Age".into(),
        "From".into(),
        "Message".into(),
    ]];
    rows.push(rows[0].iter().map(|h| "-".repeat(h.len())).collect());
    for e in events {
        let first = if e.first_timestamp != 0 {
            e.first_timestamp
        } else {
            e.last_timestamp
        };
        let age = if e.count > 1 {
            format!(
                "{} (x{} over {})",
                human_duration(now_ms - e.last_timestamp),
                e.count,
                human_duration(now_ms - first)
            )
        } else {
            human_duration(now_ms - first)
        };
        let src = e.source.clone().unwrap_or_default();
        let from = if src.host.is_empty() {
            src.component
        } else {
            format!("{}, {}", src.component, src.host)
        };
        rows.push(vec![
            e.r#type.clone(),
            e.reason.clone(),
            age,
            from,
            e.message.clone(),
        ]);
    }
    let mut out = String::from("Events:\n");
    for l in super::table_lines(2, &[8, 18, 8, 20], &rows) {
        out.push_str(&crate::util::escape_control(&l));
        out.push('\n');
    }
    out
}

fn replicas_line(desired: i32, updated: Option<i32>, total: i32, available: i32) -> String {
    let unavailable = (total.max(desired) - available).max(0);
    match updated {
        Some(u) => format!(
            "{desired} desired | {u} updated | {total} total | {available} available | {unavailable} unavailable"
        ),
        None => format!("{total} current / {desired} desired"),
    }
}

pub fn describe_deployment(d: &Deployment, new_rs: &str, old_rs: &str) -> String {
    let meta = d.metadata.clone().unwrap_or_default();
    let spec = wl::deployment_spec(d);
    let st = d.status.clone().unwrap_or_default();
    let mut t = Text::new(24);
    meta_fields(&mut t, &meta, true);
    t.field(0, "Selector", selector_text(spec.selector.as_ref()));
    t.field(
        0,
        "Replicas",
        replicas_line(
            wl::replicas(spec.replicas),
            Some(st.updated_replicas),
            st.replicas,
            st.available_replicas,
        ),
    );
    let strat = spec.strategy.clone().unwrap_or_default();
    t.field(0, "StrategyType", &strat.r#type);
    t.field(0, "MinReadySeconds", spec.min_ready_seconds.to_string());
    if let Some(ru) = &strat.rolling_update {
        t.field(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                ru.max_unavailable, ru.max_surge
            ),
        );
    }
    if spec.paused {
        t.field(0, "Paused", "true");
    }
    t.out
        .push_str(&template_text(&spec.template.clone().unwrap_or_default()));
    if !st.conditions.is_empty() {
        t.line("Conditions:");
        let mut rows = vec![
            vec!["Type".to_string(), "Status".into(), "Reason".into()],
            vec!["----".to_string(), "------".into(), "------".into()],
        ];
        for c in &st.conditions {
            rows.push(vec![c.r#type.clone(), c.status.clone(), c.reason.clone()]);
        }
        for l in super::table_lines(2, &[16, 8], &rows) {
            t.line(l);
        }
    }
    t.field(0, "OldReplicaSets", or_none(old_rs));
    t.field(0, "NewReplicaSet", or_none(new_rs));
    t.out
}

pub fn describe_replica_set(rs: &ReplicaSet, controlled_by: &str) -> String {
    let meta = rs.metadata.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let st = rs.status.clone().unwrap_or_default();
    let mut t = Text::new(20);
    meta_fields(&mut t, &meta, true);
    t.field(0, "Selector", selector_text(spec.selector.as_ref()));
    t.field(0, "Controlled By", or_none(controlled_by));
    t.field(
        0,
        "Replicas",
        replicas_line(
            wl::replicas(spec.replicas),
            None,
            st.replicas,
            st.available_replicas,
        ),
    );
    t.field(
        0,
        "Pods Status",
        format!(
            "{} Ready / {} Available",
            st.ready_replicas, st.available_replicas
        ),
    );
    t.out
        .push_str(&template_text(&spec.template.clone().unwrap_or_default()));
    t.out
}

pub fn describe_namespace(n: &Namespace) -> String {
    let meta = n.metadata.clone().unwrap_or_default();
    let mut t = Text::new(14);
    t.field(0, "Name", &meta.name);
    t.field(0, "Labels", super::map_lines(&meta.labels));
    t.field(0, "Annotations", super::map_lines(&meta.annotations));
    let phase = n.status.clone().unwrap_or_default().phase;
    t.field(
        0,
        "Status",
        if phase.is_empty() {
            "Active".into()
        } else {
            phase
        },
    );
    t.out
}

pub fn describe_config_map(c: &ConfigMap) -> String {
    let meta = c.metadata.clone().unwrap_or_default();
    let mut t = Text::new(14);
    meta_fields(&mut t, &meta, true);
    t.line("");
    t.line("Data");
    t.line("====");
    let mut keys: Vec<_> = c.data.iter().collect();
    keys.sort();
    for (k, v) in keys {
        t.line(format!("{k}:\n----\n{v}\n"));
    }
    t.line("");
    t.line("BinaryData");
    t.line("====");
    let mut keys: Vec<_> = c.binary_data.iter().collect();
    keys.sort();
    for (k, v) in keys {
        t.line(format!("{k}: {} bytes", v.len()));
    }
    t.out
}

/// Values are never printed, only their sizes (as kubectl).
pub fn describe_secret(s: &Secret) -> String {
    let meta = s.metadata.clone().unwrap_or_default();
    let mut t = Text::new(14);
    meta_fields(&mut t, &meta, true);
    t.line("");
    t.field(0, "Type", &s.r#type);
    t.line("");
    t.line("Data");
    t.line("====");
    let mut keys: Vec<_> = s.data.iter().collect();
    keys.sort();
    for (k, v) in keys {
        t.line(format!("{k}:  {} bytes", v.len()));
    }
    t.out
}

pub fn describe_event(e: &Event) -> String {
    let meta = e.metadata.clone().unwrap_or_default();
    let o = e.involved_object.clone().unwrap_or_default();
    let mut t = Text::new(20);
    meta_fields(&mut t, &meta, true);
    t.field(
        0,
        "Involved Object",
        format!("{} {}/{}", o.kind, o.namespace, o.name),
    );
    t.field(0, "Type", &e.r#type);
    t.field(0, "Reason", &e.reason);
    t.field(0, "Message", &e.message);
    t.field(0, "Count", e.count.to_string());
    t.field(0, "First Timestamp", time(e.first_timestamp));
    t.field(0, "Last Timestamp", time(e.last_timestamp));
    let src = e.source.clone().unwrap_or_default();
    t.field(
        0,
        "Source",
        format!("{} {}", src.component, src.host).trim(),
    );
    t.out
}
