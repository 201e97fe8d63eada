//! One kind's REST verbs, generic over [`Stored`] + [`K8sKind`], through the same
//! handlers as the gRPC face ([`crate::api::Api`]'s `do_*`): validation, conflicts,
//! admission and watch are theirs, so both faces behave alike.
//!
//! Choices where Kubernetes leaves room or kube-lite has less:
//! - List is a consistent snapshot at its `resourceVersion`; `limit`/`continue` page
//!   through the current state in key order (the continue token is the last key, so
//!   a later page reflects writes made in between; no 410 for old tokens).
//! - Watch without `resourceVersion` (or `0`) starts with ADDED events for every
//!   matching object, then follows changes after that list's revision; with
//!   `sendInitialEvents=true` (WatchList) they end with a BOOKMARK annotated
//!   `k8s.io/initial-events-end`, whatever `resourceVersion` says. A revision
//!   older than the change log is an ERROR event carrying a 410 `Expired` Status (as
//!   Kubernetes' watch cache does). `timeoutSeconds` ends the stream (default 30 min).
//! - Field selectors: `metadata.name`, `metadata.namespace` and each kind's
//!   [`K8sKind::SELECTABLE_FIELDS`]; in a watch an object that stops matching is sent
//!   as DELETED.
//! - `dryRun` is refused (400): kube-lite has no dry-run admission.
//! - `propagationPolicy` is checked and passed on as over gRPC (the garbage collector).
//! - Patches are applied to the current object's Kubernetes JSON and written with its
//!   resourceVersion, retried on a conflict (up to 5 times) unless the patch itself
//!   sets `metadata.resourceVersion`. Server-side apply is a strategic merge of the
//!   applied intent (creating the object when it is missing), without field managers.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use bytes::Bytes;
use kube_lite_core::ObjectRef;
use kube_lite_k8s::K8sKind;
use kube_lite_proto::v1::{DeleteRequest, LogsRequest, Pod, WatchRequest};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::patch::{self, PatchType};
use super::query::{FieldSelector, Query};
use super::status::{self, About, Failure};
use super::table::{self, Include};
use super::{json_response, BoxFuture, KindInfo, Req, Rest, Served};
use crate::authz::Verb;
use crate::resource::{Kind, Object, Stored};
use crate::watch::Filter;

type Res = Result<Response<Body>, Failure>;

/// Longest watch (`timeoutSeconds` is capped to it; also the default).
pub const MAX_WATCH: Duration = Duration::from_secs(1800);
/// Events buffered per REST watch before the watch waits for the client.
const WATCH_BUFFER: usize = 256;
/// Attempts of a patch that meets a concurrent write.
const PATCH_ATTEMPTS: usize = 5;

pub struct KindHandler<R> {
    info: KindInfo,
    _r: PhantomData<fn() -> R>,
}

/// The [`Served`] of `R`.
pub fn served<R: Stored + K8sKind>() -> Arc<dyn Served> {
    Arc::new(KindHandler::<R> {
        info: KindInfo {
            group: R::GROUP,
            version: R::VERSION,
            kind: R::KIND,
            plural: R::PLURAL,
            singular: R::SINGULAR,
            namespaced: R::NAMESPACED,
            short_names: R::SHORT_NAMES,
            categories: R::CATEGORIES,
            subresources: R::SUBRESOURCES,
            merge_keys: R::MERGE_KEYS,
            sample: R::schema_sample().to_json(),
        },
        _r: PhantomData,
    })
}

impl<R: Stored + K8sKind> Served for KindHandler<R> {
    fn info(&self) -> &KindInfo {
        &self.info
    }
    fn handle(&self, rest: Rest, req: Req) -> BoxFuture<Response<Body>> {
        Box::pin(async move {
            match dispatch::<R>(rest, req).await {
                Ok(r) => r,
                Err(f) => super::failure_response(f),
            }
        })
    }
}

fn about<R: K8sKind>(name: &str) -> About<'_> {
    About {
        kind: R::KIND,
        plural: R::PLURAL,
        name,
    }
}

fn grpc<R: K8sKind>(name: &str) -> impl Fn(tonic::Status) -> Failure + '_ {
    move |st| status::from_grpc(&st, &about::<R>(name))
}

async fn dispatch<R: Stored + K8sKind>(rest: Rest, req: Req) -> Res {
    let t = &req.target;
    if !R::NAMESPACED && t.namespace.is_some() {
        return Err(status::not_found(format!(
            "{} are not namespaced",
            R::PLURAL
        )));
    }
    if req.query.get("dryRun").is_some_and(|d| !d.is_empty()) {
        return Err(status::bad_request("dryRun is not supported by kube-lite"));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone();
    let sub = t.sub.as_deref();
    if let Some(s) = sub {
        if !R::SUBRESOURCES.contains(&s) {
            return Err(status::not_found(format!(
                "{} has no subresource {s:?}",
                R::PLURAL
            )));
        }
    }
    let m = &req.method;
    // Reads served from the store here are authorized here; writes again by the
    // shared handlers.
    let v = verb(m, name.is_some(), sub, req.query.flag("watch"));
    rest.api
        .authorize(&req.ext, v, R::PLURAL, &ns, name.as_deref().unwrap_or(""))
        .map_err(|st| status::from_grpc(&st, &about::<R>(name.as_deref().unwrap_or(""))))?;
    match (name, sub) {
        (None, _) if *m == Method::GET => {
            if req.query.flag("watch") {
                watch::<R>(&rest, &ns, &req).await
            } else {
                list::<R>(&rest, &ns, &req)
            }
        }
        (None, _) if *m == Method::POST => create::<R>(&rest, &ns, &req, None).await,
        (None, _) if *m == Method::DELETE => delete_collection::<R>(&rest, &ns, &req).await,
        (Some(n), None | Some("status")) if *m == Method::GET => get::<R>(&rest, &ns, &n, &req),
        (Some(n), None) if *m == Method::PUT => update::<R>(&rest, &ns, &n, &req, false).await,
        (Some(n), Some("status")) if *m == Method::PUT => {
            update::<R>(&rest, &ns, &n, &req, true).await
        }
        (Some(n), None) if *m == Method::PATCH => patch::<R>(&rest, &ns, &n, &req, false).await,
        (Some(n), Some("status")) if *m == Method::PATCH => {
            patch::<R>(&rest, &ns, &n, &req, true).await
        }
        (Some(n), None) if *m == Method::DELETE => delete::<R>(&rest, &ns, &n, &req).await,
        (Some(n), Some("scale")) if *m == Method::GET => get_scale::<R>(&rest, &ns, &n),
        (Some(n), Some("scale")) if *m == Method::PUT || *m == Method::PATCH => {
            put_scale::<R>(&rest, &ns, &n, &req).await
        }
        (Some(n), Some("log")) if *m == Method::GET && R::STORED_KIND == Kind::Pod => {
            logs(&rest, &ns, &n, &req).await
        }
        (Some(n), Some("binding")) if *m == Method::POST && R::STORED_KIND == Kind::Pod => {
            binding(&rest, &ns, &n, &req).await
        }
        _ => Err(status::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method,
            R::PLURAL
        ))),
    }
}

/// A request for the shared handlers, carrying the caller's identity.
fn treq<T>(req: &Req, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    *r.extensions_mut() = req.ext.clone();
    r
}

/// The verb the authorizer sees for a request.
fn verb(m: &Method, name: bool, sub: Option<&str>, watch: bool) -> Verb {
    match (m.as_str(), name, sub) {
        (_, _, Some("log")) => Verb::Logs,
        (_, _, Some("binding")) => Verb::Update,
        ("GET", true, _) => Verb::Get,
        ("GET", false, _) if watch => Verb::Watch,
        ("GET", false, _) => Verb::List,
        ("POST", _, _) => Verb::Create,
        ("PUT" | "PATCH", _, Some("status")) => Verb::UpdateStatus,
        ("PUT" | "PATCH", _, _) => Verb::Update,
        _ => Verb::Delete,
    }
}

fn key<R: Stored>(ns: &str, name: &str) -> ObjectRef {
    R::STORED_KIND.object_ref(ns, name)
}

/// A JSON (or YAML) request body as a value.
fn body_value(req: &Req) -> Result<Value, Failure> {
    if req.body.is_empty() {
        return Err(status::bad_request("the request has no body"));
    }
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.starts_with(kube_lite_k8s::protobuf::MEDIA_TYPE) {
        return kube_lite_k8s::protobuf::to_json(&req.body).map_err(|e| {
            status::bad_request(format!("the request body is not valid protobuf: {e}"))
        });
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| status::bad_request("the request body is not UTF-8"))?;
    if ct.contains("yaml") {
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| status::bad_request(format!("the request body is not valid YAML: {e}")))
    } else {
        serde_json::from_str(text)
            .map_err(|e| status::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

fn decode<R: K8sKind>(v: Value, name: &str) -> Result<R, Failure> {
    R::from_json(v).map_err(|errs| {
        if errs.len() == 1 && errs[0].field == "body" {
            return status::bad_request(format!("{} {}", R::KIND, errs[0].message));
        }
        let causes: Vec<(String, String)> =
            errs.into_iter().map(|e| (e.field, e.message)).collect();
        status::invalid(&about::<R>(name), &causes)
    })
}

/// Puts the request's namespace into the object's metadata (a different one is 400).
fn set_namespace<R: K8sKind>(v: &mut Value, ns: &str) -> Result<(), Failure> {
    if !R::NAMESPACED || ns.is_empty() {
        return Ok(());
    }
    if !v.is_object() {
        return Err(status::bad_request("the request body must be an object"));
    }
    let meta = v
        .as_object_mut()
        .expect("object")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if !meta.is_object() {
        return Err(status::bad_request("metadata must be an object"));
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != ns => Err(status::bad_request(format!(
            "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
        ))),
        _ => {
            meta["namespace"] = json!(ns);
            Ok(())
        }
    }
}

/// `metadata.generateName` + 5 random characters when no name is given.
fn generate_name(v: &mut Value) {
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if has_name {
        return;
    }
    if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
        use rand::Rng;
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut rng = rand::rng();
        let suffix: String = (0..5)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect();
        let name = format!("{prefix}{suffix}");
        meta.insert("name".into(), json!(name));
    }
}

fn object_response<R: K8sKind>(code: u16, o: &R) -> Response<Body> {
    json_response(code, &o.to_json())
}

fn get<R: Stored + K8sKind>(rest: &Rest, ns: &str, name: &str, req: &Req) -> Res {
    let k = key::<R>(ns, name);
    let o = rest.store.get(R::STORED_KIND, &k).ok_or_else(|| {
        status::from_grpc(
            &tonic::Status::not_found(format!("{} {name:?} not found", R::PLURAL)),
            &about::<R>(name),
        )
    })?;
    let o = R::from_object(&o);
    if let Some(v) = table_version(req) {
        let t = table::table::<R>(
            &[&o],
            0,
            Include::of(req.query.get("includeObject")),
            v,
            kube_lite_core::time::now_ms(),
        );
        return Ok(json_response(200, &t));
    }
    Ok(object_response(200, &o))
}

fn table_version(req: &Req) -> Option<&'static str> {
    req.headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(table::wants_table)
}

struct Selection {
    label: String,
    fields: FieldSelector,
}

fn selection<R: K8sKind>(q: &Query) -> Result<Selection, Failure> {
    let fields = FieldSelector::parse::<R>(q.str("fieldSelector")).map_err(status::bad_request)?;
    super::query::label_selector(q.str("labelSelector")).map_err(status::bad_request)?;
    Ok(Selection {
        label: q.str("labelSelector").to_string(),
        fields,
    })
}

fn filter<R: Stored>(ns: &str, sel: &Selection) -> Result<Filter, Failure> {
    let node = sel.fields.node_name().unwrap_or("");
    Filter::new(R::STORED_KIND, ns, &sel.label, node)
        .map_err(|e| status::from_grpc(&tonic::Status::from(e), &About::default()))
}

/// The matching objects (in key order) and the revision they are at.
fn snapshot<R: Stored + K8sKind>(
    rest: &Rest,
    ns: &str,
    sel: &Selection,
) -> Result<(Vec<R>, u64), Failure> {
    let f = filter::<R>(ns, sel)?;
    let sh = rest.store.shared.read().expect("lock");
    let pick = |o: &Arc<Object>| -> Option<R> {
        if !f.matches(o) {
            return None;
        }
        let r = R::from_object(o);
        sel.fields.matches(&r).then_some(r)
    };
    let items: Vec<R> = match &f.namespace {
        Some(ns) => sh
            .objects
            .in_namespace(R::STORED_KIND, ns)
            .filter_map(|(_, o)| pick(o))
            .collect(),
        None => sh
            .objects
            .of(R::STORED_KIND)
            .values()
            .filter_map(pick)
            .collect(),
    };
    Ok((items, sh.rev))
}

fn continue_token(k: &ObjectRef) -> String {
    format!("{}/{}", k.namespace, k.name)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_continue(s: &str) -> Option<ObjectRef> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (ns, name) = text.split_once('/')?;
    Some(ObjectRef::new(ns, name))
}

fn list<R: Stored + K8sKind>(rest: &Rest, ns: &str, req: &Req) -> Res {
    let sel = selection::<R>(&req.query)?;
    let (mut items, rev) = snapshot::<R>(rest, ns, &sel)?;
    let limit = req.query.int("limit").map_err(status::bad_request)?;
    let mut next = None;
    let mut remaining = 0;
    if let Some(after) = req.query.get("continue").filter(|c| !c.is_empty()) {
        let after = parse_continue(after)
            .ok_or_else(|| status::bad_request("continue: invalid continue token"))?;
        items.retain(|o| o.object_ref() > after);
    }
    if let Some(limit) = limit.filter(|l| *l > 0) {
        let limit = limit as usize;
        if items.len() > limit {
            remaining = items.len() - limit;
            items.truncate(limit);
            next = items.last().map(|o| continue_token(&o.object_ref()));
        }
    }
    if let Some(v) = table_version(req) {
        let refs: Vec<&R> = items.iter().collect();
        let mut t = table::table::<R>(
            &refs,
            rev,
            Include::of(req.query.get("includeObject")),
            v,
            kube_lite_core::time::now_ms(),
        );
        if let Some(c) = &next {
            t["metadata"]["continue"] = json!(c);
            t["metadata"]["remainingItemCount"] = json!(remaining);
        }
        return Ok(json_response(200, &t));
    }
    // Written directly: a list of 10,000 pods is one buffer, not a Value tree.
    let mut out = Vec::with_capacity(64 + items.len() * 700);
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = &next {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(remaining);
    }
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            R::KIND,
            R::api_version(),
            meta
        )
        .as_bytes(),
    );
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &o.to_k8s())
            .map_err(|e| status::failure(500, "InternalError", &e.to_string()))?;
    }
    out.extend_from_slice(b"]}");
    let mut r = Response::new(Body::from(out));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn event_line(typ: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": typ, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn event_object<R: K8sKind>(o: &R, tv: Option<&'static str>, include: Include) -> Value {
    match tv {
        Some(v) => table::table::<R>(&[o], 0, include, v, kube_lite_core::time::now_ms()),
        None => o.to_json(),
    }
}

async fn watch<R: Stored + K8sKind>(rest: &Rest, ns: &str, req: &Req) -> Res {
    let q = &req.query;
    let sel = selection::<R>(q)?;
    let rv = q.str("resourceVersion");
    let start = kube_lite_k8s::meta::parse_resource_version(rv)
        .map_err(|e| status::bad_request(format!("resourceVersion: {}", e.message)))?;
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = match q.int("timeoutSeconds").map_err(status::bad_request)? {
        Some(s) if s > 0 => Duration::from_secs(s as u64).min(MAX_WATCH),
        _ => MAX_WATCH,
    };
    let tv = table_version(req);
    let include = Include::of(q.get("includeObject"));
    // WatchList (client-go's default since 1.35): the current state as ADDED events,
    // then a BOOKMARK annotated `k8s.io/initial-events-end` at the state's revision.
    let send_initial = q.flag("sendInitialEvents");
    // No revision (or sendInitialEvents): the current state as ADDED events first.
    let (initial, from) = if start == 0 || send_initial {
        let (items, rev) = snapshot::<R>(rest, ns, &sel)?;
        (items, rev)
    } else {
        (Vec::new(), start)
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(WATCH_BUFFER);
    let wr = WatchRequest {
        namespace: ns.to_string(),
        label_selector: sel.label.clone(),
        node_name: sel.fields.node_name().unwrap_or("").to_string(),
        resource_version: from,
        bookmark_interval_ms: 0,
    };
    let stream = match rest.api.do_watch::<R>(treq(req, wr)) {
        Ok(s) => Some(s.into_inner()),
        Err(st) if st.code() == tonic::Code::OutOfRange => {
            // As Kubernetes: 200, then one ERROR event with the 410 Status.
            let f = status::from_grpc(&st, &About::default());
            let _ = tx.try_send(Ok(event_line("ERROR", &f.body)));
            None
        }
        Err(st) => return Err(grpc::<R>("")(st)),
    };
    if let Some(mut stream) = stream {
        let fields = sel.fields.clone();
        tokio::spawn(async move {
            let mut matching: HashSet<ObjectRef> = HashSet::new();
            for o in &initial {
                matching.insert(o.object_ref());
                if tx
                    .send(Ok(event_line("ADDED", &event_object(o, tv, include))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            drop(initial);
            if send_initial {
                let mut o = R::default();
                o.meta_mut().resource_version = from;
                let mut v = o.to_json();
                v["metadata"] = json!({
                    "resourceVersion": from.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                });
                if tx.send(Ok(event_line("BOOKMARK", &v))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                };
                let line = match item {
                    None => return,
                    Some(Err(st)) => {
                        let f = status::from_grpc(&st, &About::default());
                        let _ = tx.send(Ok(event_line("ERROR", &f.body))).await;
                        return;
                    }
                    Some(Ok(ev)) => {
                        let (typ, obj, rev) = R::split_event(ev);
                        match (typ, obj) {
                            (4, _) => {
                                if !bookmarks {
                                    continue;
                                }
                                let mut o = R::default();
                                o.meta_mut().resource_version = rev;
                                let mut v = o.to_json();
                                v["metadata"] = json!({"resourceVersion": rev.to_string()});
                                event_line("BOOKMARK", &v)
                            }
                            (t, Some(o)) => {
                                let k = o.object_ref();
                                let mut name = match t {
                                    1 => "ADDED",
                                    2 => "MODIFIED",
                                    _ => "DELETED",
                                };
                                if !fields.is_empty() {
                                    let now = fields.matches(&o);
                                    let before = matching.contains(&k);
                                    match (name, before, now) {
                                        ("DELETED", b, _) => {
                                            matching.remove(&k);
                                            if !b && !now {
                                                continue;
                                            }
                                        }
                                        (_, _, true) => {
                                            matching.insert(k);
                                        }
                                        (_, true, false) => {
                                            matching.remove(&k);
                                            name = "DELETED";
                                        }
                                        (_, false, false) => continue,
                                    }
                                }
                                event_line(name, &event_object(&o, tv, include))
                            }
                            _ => continue,
                        }
                    }
                };
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        });
    }
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

async fn create<R: Stored + K8sKind>(rest: &Rest, ns: &str, req: &Req, body: Option<Value>) -> Res {
    let mut v = match body {
        Some(v) => v,
        None => body_value(req)?,
    };
    set_namespace::<R>(&mut v, if ns.is_empty() { "" } else { ns })?;
    generate_name(&mut v);
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut obj: R = decode(v, &name)?;
    if R::NAMESPACED && obj.namespace().is_empty() {
        obj.meta_mut().namespace = kube_lite_core::ObjectRef::of::<R>("", "").namespace;
    }
    // Server-set fields are the server's.
    obj.meta_mut().resource_version = 0;
    let out = rest
        .api
        .do_create::<R>(treq(req, obj))
        .await
        .map_err(grpc::<R>(&name))?
        .into_inner();
    Ok(object_response(201, &out))
}

async fn update<R: Stored + K8sKind>(
    rest: &Rest,
    ns: &str,
    name: &str,
    req: &Req,
    status_only: bool,
) -> Res {
    let mut v = body_value(req)?;
    set_namespace::<R>(&mut v, ns)?;
    let given = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !given.is_empty() && given != name {
        return Err(status::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let mut obj: R = decode(v, name)?;
    obj.meta_mut().name = name.to_string();
    let out = rest
        .api
        .do_update::<R>(treq(req, obj), status_only)
        .await
        .map_err(grpc::<R>(name))?
        .into_inner();
    Ok(object_response(200, &out))
}

async fn patch<R: Stored + K8sKind>(
    rest: &Rest,
    ns: &str,
    name: &str,
    req: &Req,
    status_only: bool,
) -> Res {
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pt = PatchType::of(ct).ok_or_else(|| {
        status::failure(
            415,
            "UnsupportedMediaType",
            &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
        )
    })?;
    let body = body_value(req)?;
    let user_rv = body.pointer("/metadata/resourceVersion").is_some();
    let k = key::<R>(ns, name);
    for attempt in 1..=PATCH_ATTEMPTS {
        let Some(cur) = rest.store.get(R::STORED_KIND, &k) else {
            if pt == PatchType::Apply && !status_only {
                let mut v = body.clone();
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.entry("name").or_insert_with(|| json!(name));
                }
                return create::<R>(rest, ns, req, Some(v)).await;
            }
            return Err(status::from_grpc(
                &tonic::Status::not_found(format!("{} {name:?} not found", R::PLURAL)),
                &about::<R>(name),
            ));
        };
        let cur = R::from_object(&cur);
        let cur_json = cur.to_json();
        let new_json = patch::apply(pt, &cur_json, &body, R::MERGE_KEYS)
            .map_err(|e| status::failure(422, "Invalid", &format!("{} {name:?}: {e}", R::KIND)))?;
        let mut obj: R = decode(new_json, name)?;
        obj.meta_mut().name = name.to_string();
        obj.meta_mut().namespace = cur.namespace().to_string();
        if !user_rv {
            obj.meta_mut().resource_version = cur.resource_version();
        }
        match rest.api.do_update::<R>(treq(req, obj), status_only).await {
            Ok(out) => return Ok(object_response(200, &out.into_inner())),
            Err(st)
                if st.code() == tonic::Code::Aborted && !user_rv && attempt < PATCH_ATTEMPTS =>
            {
                continue
            }
            Err(st) => return Err(grpc::<R>(name)(st)),
        }
    }
    unreachable!("the last attempt returns")
}

/// The `autoscaling/v1` Scale of a workload (`/scale`).
fn scale_json<R: K8sKind>(o: &R) -> Option<Value> {
    let s = o.scale()?;
    let m = kube_lite_k8s::meta::to_k8s(o.meta(), R::NAMESPACED);
    Some(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.name, "namespace": m.namespace, "uid": m.uid,
            "resourceVersion": m.resource_version, "creationTimestamp": m.creation_timestamp,
        },
        "spec": {"replicas": s.spec_replicas},
        "status": {"replicas": s.status_replicas, "selector": s.selector},
    }))
}

fn current<R: Stored + K8sKind>(rest: &Rest, ns: &str, name: &str) -> Result<R, Failure> {
    let o = rest
        .store
        .get(R::STORED_KIND, &key::<R>(ns, name))
        .ok_or_else(|| {
            status::from_grpc(
                &tonic::Status::not_found(format!("{} {name:?} not found", R::PLURAL)),
                &about::<R>(name),
            )
        })?;
    Ok(R::from_object(&o))
}

fn get_scale<R: Stored + K8sKind>(rest: &Rest, ns: &str, name: &str) -> Res {
    let o: R = current(rest, ns, name)?;
    let v =
        scale_json(&o).ok_or_else(|| status::not_found(format!("{} do not scale", R::PLURAL)))?;
    Ok(json_response(200, &v))
}

/// PUT (a whole Scale) or PATCH (any patch type, applied to the current Scale) of
/// `/scale`: only `spec.replicas` is taken; a `metadata.resourceVersion` in the body is
/// a precondition (409 when stale), as in Kubernetes.
async fn put_scale<R: Stored + K8sKind>(rest: &Rest, ns: &str, name: &str, req: &Req) -> Res {
    let body = body_value(req)?;
    for attempt in 1..=PATCH_ATTEMPTS {
        let mut o: R = current(rest, ns, name)?;
        let cur = scale_json(&o)
            .ok_or_else(|| status::not_found(format!("{} do not scale", R::PLURAL)))?;
        let new = if req.method == Method::PATCH {
            let ct = req
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::of(ct).ok_or_else(|| {
                status::failure(
                    415,
                    "UnsupportedMediaType",
                    &format!("unknown patch type {ct:?}"),
                )
            })?;
            patch::apply(pt, &cur, &body, &[])
                .map_err(|e| status::failure(422, "Invalid", &format!("Scale {name:?}: {e}")))?
        } else {
            body.clone()
        };
        let replicas = new
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !(0..=i64::from(i32::MAX)).contains(&replicas) {
            return Err(status::invalid(
                &about::<R>(name),
                &[(
                    "spec.replicas".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        let given_rv = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty() && req.method == Method::PUT)
            .map(kube_lite_k8s::meta::parse_resource_version)
            .transpose()
            .map_err(|e| status::bad_request(format!("metadata.resourceVersion: {}", e.message)))?;
        if let Some(rv) = given_rv {
            o.meta_mut().resource_version = rv;
        }
        o.set_replicas(replicas as i32);
        match rest.api.do_update::<R>(treq(req, o), false).await {
            Ok(out) => {
                let v = scale_json(&out.into_inner()).unwrap_or_default();
                return Ok(json_response(200, &v));
            }
            Err(st)
                if st.code() == tonic::Code::Aborted
                    && given_rv.is_none()
                    && attempt < PATCH_ATTEMPTS =>
            {
                continue
            }
            Err(st) => return Err(grpc::<R>(name)(st)),
        }
    }
    unreachable!("the last attempt returns")
}

/// DeleteOptions from the body and the query (the query wins, as in Kubernetes).
struct DeleteOpts {
    grace: i64,
    rv: u64,
    uid: String,
    /// `Orphan` | `Background` | `Foreground`; empty: the kind's default.
    propagation: String,
}

fn delete_opts(req: &Req) -> Result<DeleteOpts, Failure> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        body_value(req).map_err(|f| {
            status::bad_request(format!(
                "DeleteOptions: {}",
                f.body["message"]
                    .as_str()
                    .unwrap_or("the request body does not decode")
            ))
        })?
    };
    let mut grace = body.get("gracePeriodSeconds").and_then(Value::as_i64);
    if let Some(g) = req
        .query
        .int("gracePeriodSeconds")
        .map_err(status::bad_request)?
    {
        grace = Some(g);
    }
    let policy = req
        .query
        .get("propagationPolicy")
        .map(String::from)
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from)
        });
    if let Some(p) = &policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(status::bad_request(format!(
                "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    let pre = body.get("preconditions").cloned().unwrap_or(json!({}));
    let rv = kube_lite_k8s::meta::parse_resource_version(
        pre.get("resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| status::bad_request(format!("preconditions.resourceVersion: {}", e.message)))?;
    Ok(DeleteOpts {
        // Kubernetes: a negative grace is 1 s... kube-lite's -1 is "the pod's own".
        grace: grace.map_or(-1, |g| g.max(0)),
        rv,
        uid: pre
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        propagation: policy.unwrap_or_default(),
    })
}

async fn delete_one<R: Stored + K8sKind>(
    rest: &Rest,
    req: &Req,
    ns: &str,
    name: &str,
    o: &DeleteOpts,
) -> Result<R, Failure> {
    if !o.uid.is_empty() {
        if let Some(cur) = rest.store.get(R::STORED_KIND, &key::<R>(ns, name)) {
            if cur.meta().uid != o.uid {
                return Err(status::failure(
                    409,
                    "Conflict",
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        o.uid,
                        cur.meta().uid
                    ),
                ));
            }
        }
    }
    let r = DeleteRequest {
        name: name.to_string(),
        namespace: ns.to_string(),
        resource_version: o.rv,
        grace_period_seconds: o.grace,
        propagation_policy: o.propagation.clone(),
    };
    Ok(rest
        .api
        .do_delete::<R>(treq(req, r))
        .await
        .map_err(grpc::<R>(name))?
        .into_inner())
}

async fn delete<R: Stored + K8sKind>(rest: &Rest, ns: &str, name: &str, req: &Req) -> Res {
    let o = delete_opts(req)?;
    let out = delete_one::<R>(rest, req, ns, name, &o).await?;
    Ok(object_response(200, &out))
}

async fn delete_collection<R: Stored + K8sKind>(rest: &Rest, ns: &str, req: &Req) -> Res {
    let o = delete_opts(req)?;
    let sel = selection::<R>(&req.query)?;
    let (items, _) = snapshot::<R>(rest, ns, &sel)?;
    let mut deleted = Vec::new();
    for i in items {
        match delete_one::<R>(rest, req, i.namespace(), i.name(), &o).await {
            Ok(d) => deleted.push(d.to_json()),
            Err(f) if f.code == 404 => {}
            Err(f) => return Err(f),
        }
    }
    let rev = rest.store.shared.read().expect("lock").rev;
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", R::KIND), "apiVersion": R::api_version(),
                "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
    ))
}

async fn logs(rest: &Rest, ns: &str, name: &str, req: &Req) -> Res {
    let q = &req.query;
    let tail = q
        .int("tailLines")
        .map_err(status::bad_request)?
        .unwrap_or(0);
    let r = LogsRequest {
        name: name.to_string(),
        namespace: ns.to_string(),
        container: q.str("container").to_string(),
        follow: q.flag("follow"),
        tail_lines: tail,
        previous: q.flag("previous"),
    };
    let mut stream = rest
        .api
        .do_logs(treq(req, r))
        .await
        .map_err(grpc::<Pod>(name))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => return,
            };
            match item {
                Some(Ok(chunk)) => {
                    if tx.send(Ok(Bytes::from(chunk.data))).await.is_err() {
                        return;
                    }
                }
                Some(Err(st)) => {
                    tracing::debug!(error = %st.message(), "REST log stream ended with an error");
                    return;
                }
                None => return,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

async fn binding(rest: &Rest, ns: &str, name: &str, req: &Req) -> Res {
    let v = body_value(req)?;
    let node = v
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(status::invalid(
            &about::<Pod>(name),
            &[("target.name".into(), "Required value".into())],
        ));
    }
    let k = key::<Pod>(ns, name);
    let cur = rest.store.get(Kind::Pod, &k).ok_or_else(|| {
        status::from_grpc(
            &tonic::Status::not_found(format!("pods {name:?} not found")),
            &about::<Pod>(name),
        )
    })?;
    let mut pod = Pod::from_object(&cur);
    let spec = pod.spec.get_or_insert_with(Default::default);
    if !spec.node_name.is_empty() {
        return Err(status::failure(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on pods/binding {name:?}: pod {name} is already assigned to node {:?}",
                spec.node_name
            ),
        ));
    }
    spec.node_name = node;
    rest.api
        .do_update::<Pod>(treq(req, pod), false)
        .await
        .map_err(grpc::<Pod>(name))?;
    Ok(json_response(201, &status::success(201)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let k = ObjectRef::new("default", "web-1");
        let t = continue_token(&k);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(parse_continue(&t), Some(k));
        assert_eq!(parse_continue("zz"), None);
        assert_eq!(parse_continue("abc"), None);
    }

    #[test]
    fn generated_names_and_namespaces() {
        let mut v = json!({"metadata": {"generateName": "web-"}});
        generate_name(&mut v);
        let n = v["metadata"]["name"].as_str().unwrap();
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        let mut v = json!({"metadata": {"name": "x", "namespace": "a"}});
        assert!(set_namespace::<Pod>(&mut v, "b").is_err());
        let mut v = json!({});
        set_namespace::<Pod>(&mut v, "b").unwrap();
        assert_eq!(v["metadata"]["namespace"], "b");
    }
}
