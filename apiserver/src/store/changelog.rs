//! The change-log record (`l/<rev>` in sled, and the watch window's entries): the
//! object as written, and of the previous state only what watch filters read (labels;
//! a pod's node), not the whole previous object, so a record costs one object, not two.

use std::collections::HashMap;
use std::sync::Arc;

use kube_lite_proto::v1::{EventType, ObjectMeta, Pod, PodSpec};
use prost::Message;

use super::Event;
use crate::resource::{Kind, Object};

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogEntry {
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(int32, tag = "2")]
    pub typ: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub obj: Vec<u8>,
    /// The whole previous object (records written before the filter summary below).
    #[prost(bytes = "vec", optional, tag = "4")]
    pub prev: Option<Vec<u8>>,
    /// MODIFIED: the previous state's labels and (pods) node, which is all that
    /// [`crate::watch::Filter`] reads besides the namespace, which never changes.
    #[prost(bool, tag = "5")]
    pub has_prev: bool,
    #[prost(map = "string, string", tag = "6")]
    pub prev_labels: HashMap<String, String>,
    #[prost(string, tag = "7")]
    pub prev_node_name: String,
    /// On disk only: `obj` is in the value file of this record's revision, `obj_len`
    /// bytes long (see [`super::values`]); the watch window holds the record with
    /// `obj` in place.
    #[prost(bool, tag = "8")]
    pub obj_file: bool,
    #[prost(uint64, tag = "9")]
    pub obj_len: u64,
}

impl LogEntry {
    /// The record with `obj` (read from its value file) in place.
    pub fn with_obj(mut self, obj: Vec<u8>) -> Vec<u8> {
        self.obj = obj;
        self.obj_file = false;
        self.obj_len = 0;
        self.encode_to_vec()
    }
}

/// Encodes `ev` as a change-log record; `obj` is `ev.obj` already encoded.
pub fn encode(ev: &Event, obj: Vec<u8>) -> Vec<u8> {
    LogEntry { obj, ..record(ev) }.encode_to_vec()
}

/// Encodes `ev` as the change-log record kept on disk when its object (`obj_len`
/// bytes encoded) is in the value file of its revision.
pub fn encode_file(ev: &Event, obj_len: usize) -> Vec<u8> {
    LogEntry {
        obj_file: true,
        obj_len: obj_len as u64,
        ..record(ev)
    }
    .encode_to_vec()
}

fn record(ev: &Event) -> LogEntry {
    let mut e = LogEntry {
        kind: ev.kind as u32,
        typ: ev.typ as i32,
        ..Default::default()
    };
    if let (EventType::Modified, Some(p)) = (ev.typ, &ev.prev) {
        e.has_prev = true;
        e.prev_labels = p.meta().labels.clone();
        e.prev_node_name = node_name(p).to_string();
    }
    e
}

fn node_name(o: &Object) -> &str {
    o.as_pod()
        .and_then(|p| p.spec.as_ref())
        .map(|s| s.node_name.as_str())
        .unwrap_or("")
}

/// Decodes a record of revision `rev`. The previous state (MODIFIED) is an object of
/// the same kind carrying only what filters read.
pub fn decode(rev: u64, bytes: &[u8]) -> Result<Event, String> {
    let e = LogEntry::decode(bytes).map_err(|e| format!("change log record {rev}: {e}"))?;
    let kind =
        Kind::from_u32(e.kind).ok_or_else(|| format!("change log record {rev}: bad kind"))?;
    let typ = EventType::try_from(e.typ).unwrap_or(EventType::Modified);
    let obj = Object::decode(kind, &e.obj).map_err(|e| format!("change log record {rev}: {e}"))?;
    let prev = if let Some(p) = &e.prev {
        Some(Object::decode(kind, p).map_err(|e| format!("change log record {rev}: {e}"))?)
    } else if e.has_prev {
        Some(filter_view(kind, &obj, e.prev_labels, e.prev_node_name))
    } else {
        None
    };
    Ok(Event {
        rev,
        kind,
        typ,
        obj: Arc::new(obj),
        prev: prev.map(Arc::new),
    })
}

/// An object of `kind` in `obj`'s namespace with these labels and (pods) node.
fn filter_view(kind: Kind, obj: &Object, labels: HashMap<String, String>, node: String) -> Object {
    let meta = ObjectMeta {
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        labels,
        ..Default::default()
    };
    let mut o = match kind {
        Kind::Pod => Object::Pod(Pod {
            spec: Some(PodSpec {
                node_name: node,
                ..Default::default()
            }),
            ..Default::default()
        }),
        Kind::Node => Object::Node(Default::default()),
        Kind::Service => Object::Service(Default::default()),
        Kind::Endpoints => Object::Endpoints(Default::default()),
        Kind::Lease => Object::Lease(Default::default()),
    };
    *o.meta_mut() = meta;
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Filter;

    fn pod(labels: &[(&str, &str)], node: &str, big: usize) -> Arc<Object> {
        Arc::new(Object::Pod(Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                namespace: "blue".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: [("big".to_string(), "x".repeat(big))].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: None,
        }))
    }

    fn ev(typ: EventType, obj: Arc<Object>, prev: Option<Arc<Object>>) -> Event {
        Event {
            rev: 7,
            kind: Kind::Pod,
            typ,
            obj,
            prev,
        }
    }

    #[test]
    fn a_record_costs_one_object_and_filters_see_the_same() {
        let web = pod(&[("app", "web")], "n1", 10_000);
        let db = pod(&[("app", "db")], "n2", 10_000);
        let e = ev(EventType::Modified, db.clone(), Some(web.clone()));
        let bytes = encode(&e, db.encode());
        assert!(bytes.len() < db.encode().len() + 100, "{}", bytes.len());
        let back = decode(7, &bytes).unwrap();
        assert_eq!(
            (back.rev, back.kind, back.typ),
            (7, Kind::Pod, EventType::Modified)
        );
        assert_eq!(*back.obj, *db);
        for f in [
            Filter::new(Kind::Pod, "", "app=web", "").unwrap(),
            Filter::new(Kind::Pod, "", "app=db", "").unwrap(),
            Filter::new(Kind::Pod, "blue", "", "n1").unwrap(),
            Filter::new(Kind::Pod, "blue", "", "n2").unwrap(),
            Filter::new(Kind::Pod, "red", "", "").unwrap(),
            Filter::default(),
        ] {
            assert_eq!(f.view(&back), f.view(&e), "{f:?}");
        }
    }

    #[test]
    fn added_and_deleted_carry_no_previous_state() {
        let p = pod(&[], "", 0);
        for typ in [EventType::Added, EventType::Deleted] {
            let e = ev(typ, p.clone(), Some(p.clone()));
            let back = decode(7, &encode(&e, p.encode())).unwrap();
            assert_eq!(back.typ, typ);
            assert!(back.prev.is_none());
        }
    }

    #[test]
    fn a_record_with_its_object_in_a_file_becomes_the_full_record() {
        let web = pod(&[("app", "web")], "n1", 100);
        let db = pod(&[("app", "db")], "n2", 100);
        let e = ev(EventType::Modified, db.clone(), Some(web));
        let full = encode(&e, db.encode());
        let on_disk = LogEntry::decode(&encode_file(&e, db.encode().len())[..]).unwrap();
        assert!(on_disk.obj_file && on_disk.obj.is_empty());
        assert_eq!(on_disk.obj_len, db.encode().len() as u64);
        assert_eq!(on_disk.with_obj(db.encode()), full);
    }

    #[test]
    fn older_records_with_the_whole_previous_object_still_decode() {
        let (web, db) = (pod(&[("app", "web")], "", 0), pod(&[("app", "db")], "", 0));
        let old = LogEntry {
            kind: Kind::Pod as u32,
            typ: EventType::Modified as i32,
            obj: db.encode(),
            prev: Some(web.encode()),
            ..Default::default()
        };
        let back = decode(3, &old.encode_to_vec()).unwrap();
        assert_eq!(back.prev.as_deref(), Some(&*web));
        assert!(decode(3, b"\xff\xff").is_err());
    }
}
