//! `get -w` after the first listing: every change, through the client crate's watcher
//! (which resumes from the last revision and relists on OUT_OF_RANGE). Which objects a
//! change prints ([`Changes`]) and how a change is printed ([`Printer`]) are pure.

use super::ctx::Ctx;
use crate::api::Api;
use crate::api::Channel;
use crate::output::{self, Format, Show, Table};
use anyhow::{anyhow, Result};
use futures::future::BoxFuture;
use futures::StreamExt;
use kube_lite_client::{
    watcher_from, ClientError, Event, ListResult, RawStream, WatchApi, WatchParams,
};
use kube_lite_core::time::now_ms;
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::{ListRequest, WatchRequest};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tonic::Status;

/// Which objects `get -w` prints (`--field-selector`).
type Filter<T> = Box<dyn Fn(&T) -> bool + Send>;

/// The objects `get -w` last printed or listed, and which of them it follows.
pub struct Changes<T> {
    known: BTreeMap<ObjectRef, T>,
    /// Only these names (all when empty).
    names: Vec<String>,
    /// Only objects this accepts (`--field-selector`), when set.
    filter: Option<Filter<T>>,
}

impl<T: Api> Changes<T> {
    /// `items`: what the first listing printed.
    pub fn new(items: Vec<T>, names: Vec<String>) -> Self {
        Changes {
            known: items.into_iter().map(|o| (o.object_ref(), o)).collect(),
            names,
            filter: None,
        }
    }

    /// Follows only the objects `f` accepts (a changed object that stops matching is not
    /// printed, as Kubernetes' filtered watch would send it as deleted).
    pub fn with_filter(mut self, f: impl Fn(&T) -> bool + Send + 'static) -> Self {
        self.filter = Some(Box::new(f));
        self
    }

    fn wanted(&self, o: &T) -> bool {
        (self.names.is_empty() || self.names.iter().any(|n| n == o.name()))
            && self.filter.as_ref().is_none_or(|f| f(o))
    }

    /// One watcher event → the objects to print, in order. A relist prints the objects
    /// that went away while the watch was broken (their last known state), then those that
    /// are new or changed (by resource version), each in (namespace, name) order.
    pub fn apply(&mut self, ev: Event<T>) -> Vec<T> {
        let changed = match ev {
            Event::Applied(o) => {
                self.known.insert(o.object_ref(), o.clone());
                vec![o]
            }
            Event::Deleted(o) => {
                self.known.remove(&o.object_ref());
                vec![o]
            }
            Event::Bookmark(_) => vec![],
            Event::Restarted(items, _) => {
                let fresh: BTreeMap<_, _> =
                    items.into_iter().map(|o| (o.object_ref(), o)).collect();
                let mut changed: Vec<T> = self
                    .known
                    .iter()
                    .filter(|(k, _)| !fresh.contains_key(k))
                    .map(|(_, old)| old.clone())
                    .collect();
                changed.extend(
                    fresh
                        .iter()
                        .filter(|(k, o)| {
                            self.known
                                .get(k)
                                .is_none_or(|old| old.resource_version() != o.resource_version())
                        })
                        .map(|(_, o)| o.clone()),
                );
                self.known = fresh;
                changed
            }
        };
        changed.into_iter().filter(|o| self.wanted(o)).collect()
    }
}

/// How `get -w` prints one change: a table row lined up with the first table (its header
/// first when the listing printed none), one JSON object, a `---` YAML document, or
/// `kind/name`.
pub struct Printer {
    output: Option<Format>,
    table: Table,
    with_ns: bool,
}

impl Printer {
    /// `table`: the first listing's (remembers its column widths).
    pub fn new(output: Option<Format>, table: Table, with_ns: bool) -> Self {
        Printer {
            output,
            table,
            with_ns,
        }
    }

    /// The text for one changed object, `now_ms` for its age.
    pub fn render<T: Show>(&mut self, o: &T, now_ms: i64) -> Result<String> {
        let wide = self.output == Some(Format::Wide);
        Ok(match self.output {
            None | Some(Format::Wide) => {
                let mut text = String::new();
                if self.table.is_empty() {
                    let (header, _) = output::table_rows::<T>(&[], 0, wide, self.with_ns);
                    text.push_str(&self.table.render(&header, &[]));
                }
                let row = output::row_of(o, now_ms, wide, self.with_ns);
                text.push_str(&self.table.render_row(&row));
                text
            }
            Some(Format::Json) => output::to_json_text(&output::object_json(o)),
            Some(Format::Yaml) => {
                format!(
                    "---\n{}",
                    output::to_yaml_text(&output::object_json(o)).map_err(|e| anyhow!(e))?
                )
            }
            Some(Format::Name) => format!("{}/{}\n", T::SINGULAR, o.name()),
        })
    }
}

/// List and Watch through kubectl-lite's own calls ([`Api`]), remembering which of the
/// two ran last so that an error names it (`list pods: …` or `watch pods: …`).
struct Calls<T> {
    ch: Channel,
    listing: Arc<AtomicBool>,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Calls<T> {
    fn clone(&self) -> Self {
        Calls {
            ch: self.ch.clone(),
            listing: self.listing.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T: Api> WatchApi for Calls<T> {
    type Obj = T;
    fn list(&mut self, req: ListRequest) -> BoxFuture<'_, ListResult<T>> {
        self.listing.store(true, Ordering::Relaxed);
        Box::pin(T::list(&self.ch, req))
    }
    fn watch(&mut self, req: WatchRequest) -> BoxFuture<'_, Result<RawStream<T>, Status>> {
        self.listing.store(false, Ordering::Relaxed);
        Box::pin(T::watch(&self.ch, req))
    }
}

/// Prints every change from revision `from` on until interrupted (or stdout closes). A
/// failed List or Watch ends it with one line; a broken stream is resumed, a resume point
/// that is gone is relisted.
pub async fn follow<T: Show>(
    ctx: &Ctx,
    params: WatchParams,
    from: u64,
    mut changes: Changes<T>,
    mut printer: Printer,
) -> Result<()> {
    let listing = Arc::new(AtomicBool::new(false));
    let api = Calls::<T> {
        ch: ctx.ch.clone(),
        listing: listing.clone(),
        _kind: PhantomData,
    };
    let mut events = std::pin::pin!(watcher_from(api, params, from));
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                for o in changes.apply(ev) {
                    let text = printer.render(&o, now_ms())?;
                    super::ctx::out(format_args!("{text}"))?;
                }
            }
            Err(ClientError::Status(s)) => {
                let what = if listing.load(Ordering::Relaxed) {
                    "list"
                } else {
                    "watch"
                };
                return Err(ctx.error::<T>(&format!("{what} {}", T::PLURAL), "", s));
            }
            Err(e) => return Err(anyhow!(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::Resource;
    use kube_lite_proto::v1::{ObjectMeta, Pod, PodStatus};

    const NOW: i64 = 1_800_000_000_000;

    fn pod(ns: &str, name: &str, rv: u64) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: ns.into(),
                resource_version: rv,
                creation_timestamp: NOW - 5_000,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Pending".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| format!("{}/{}@{}", p.namespace(), p.name(), p.resource_version()))
            .collect()
    }

    #[test]
    fn every_change_is_printed_and_bookmarks_are_not() {
        let mut c = Changes::new(vec![pod("default", "a", 1)], vec![]);
        assert_eq!(
            names(&c.apply(Event::Applied(pod("default", "b", 2)))),
            ["default/b@2"]
        );
        assert_eq!(
            names(&c.apply(Event::Deleted(pod("default", "a", 3)))),
            ["default/a@3"]
        );
        assert!(c.apply(Event::Bookmark(9)).is_empty());
    }

    #[test]
    fn a_relist_prints_what_went_away_then_what_is_new_or_changed() {
        let mut c = Changes::new(
            vec![
                pod("default", "same", 1),
                pod("default", "gone", 2),
                pod("dev", "changed", 3),
                pod("a", "gone-too", 4),
            ],
            vec![],
        );
        let printed = c.apply(Event::Restarted(
            vec![
                pod("dev", "changed", 7),
                pod("default", "same", 1),
                pod("b", "new", 8),
            ],
            9,
        ));
        assert_eq!(
            names(&printed),
            ["a/gone-too@4", "default/gone@2", "b/new@8", "dev/changed@7"]
        );
        // What the relist found is what is known now.
        assert!(c
            .apply(Event::Restarted(vec![pod("default", "same", 1)], 10))
            .iter()
            .all(|p| p.name() != "same"));
    }

    #[test]
    fn named_objects_only() {
        let mut c = Changes::new(vec![pod("default", "x", 1)], vec!["x".into()]);
        assert!(c.apply(Event::Applied(pod("default", "y", 2))).is_empty());
        assert_eq!(
            names(&c.apply(Event::Applied(pod("default", "x", 3)))),
            ["default/x@3"]
        );
        let printed = c.apply(Event::Restarted(
            vec![pod("default", "y", 4), pod("default", "x", 5)],
            5,
        ));
        assert_eq!(names(&printed), ["default/x@5"]);
        // Gone while the watch was broken: its last state.
        assert_eq!(
            names(&c.apply(Event::Restarted(vec![], 6))),
            ["default/x@5"]
        );
    }

    #[test]
    fn rows_line_up_with_the_first_table_or_bring_their_header() {
        let mut t = Table::default();
        let (h, r) = output::table_rows(&[pod("default", "a-long-name", 1)], NOW, false, false);
        let first = t.render(&h, &r);
        assert!(first.starts_with("NAME          READY"), "{first}");
        let mut p = Printer::new(None, t, false);
        assert_eq!(
            p.render(&pod("default", "b", 2), NOW).unwrap(),
            "b             0/0     Pending   0          5s\n"
        );
        // Nothing listed: the header comes with the first row (sized by the header alone,
        // as kubectl's first -w row is); with -A the namespace too.
        let mut p = Printer::new(None, Table::default(), true);
        assert_eq!(
            p.render(&pod("dev", "b", 2), NOW).unwrap(),
            "NAMESPACE   NAME   READY   STATUS   RESTARTS   AGE\n\
             dev         b      0/0     Pending   0          5s\n"
        );
    }

    #[test]
    fn documents_and_names_one_per_change() {
        let o = pod("default", "b", 2);
        let mut p = Printer::new(Some(Format::Name), Table::default(), false);
        assert_eq!(p.render(&o, NOW).unwrap(), "pod/b\n");
        let mut p = Printer::new(Some(Format::Json), Table::default(), false);
        assert_eq!(
            p.render(&o, NOW).unwrap(),
            output::to_json_text(&output::object_json(&o))
        );
        let mut p = Printer::new(Some(Format::Yaml), Table::default(), false);
        let yaml = p.render(&o, NOW).unwrap();
        assert!(yaml.starts_with("---\napiVersion: v1\n"), "{yaml}");
    }
}
