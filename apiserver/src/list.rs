//! List paging with Kubernetes semantics: `limit` items per page and a `continue`
//! token bound to the revision of the first page. The store keeps only the current
//! state (no MVCC), so the first page of a paged list takes a snapshot of what matched
//! (the keys' objects, shared, not copied) and the following pages are served from it:
//! every page of one list is consistent at the first page's revision, as with etcd.
//!
//! Snapshots are bounded: each lives [`SNAPSHOT_TTL`] after the first page (Kubernetes'
//! tokens last until etcd compacts the revision, 5 minutes by default), at most
//! [`MAX_SNAPSHOTS`] are held and at most [`MAX_HELD_ITEMS`] items in all (the oldest
//! go first); the last page drops its snapshot. A token whose snapshot is gone is
//! OUT_OF_RANGE (Kubernetes: 410 Gone) with Kubernetes' message: start a new list.
//!
//! Tokens are `v1:<revision>:<snapshot id>:<offset>`; clients treat them as opaque.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::resource::{Kind, Object};

/// How long the pages of one list can be fetched after its first page.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(300);
/// Paged lists in progress held at once.
pub const MAX_SNAPSHOTS: usize = 1024;
/// Items held by all snapshots together (pointers; the objects are shared).
pub const MAX_HELD_ITEMS: usize = 4_000_000;
/// Longest token accepted.
const MAX_TOKEN_LEN: usize = 100;

/// What a continue token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub rev: u64,
    pub id: u64,
    pub offset: usize,
}

impl Token {
    pub fn encode(&self) -> String {
        format!("v1:{}:{}:{}", self.rev, self.id, self.offset)
    }

    /// Parses a token; INVALID_ARGUMENT naming `continue` when it is not one of ours.
    pub fn parse(s: &str) -> Result<Token, ApiError> {
        let bad = || ApiError::invalid("continue", "is not a continue token returned by List");
        if s.len() > MAX_TOKEN_LEN {
            return Err(bad());
        }
        let mut it = s.split(':');
        if it.next() != Some("v1") {
            return Err(bad());
        }
        let mut num = || {
            it.next()
                .and_then(|x| x.parse::<u64>().ok())
                .ok_or_else(bad)
        };
        let t = Token {
            rev: num()?,
            id: num()?,
            offset: usize::try_from(num()?).map_err(|_| bad())?,
        };
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(t)
    }
}

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Arc<Object>>,
    /// The revision every page of this list is consistent at.
    pub rev: u64,
    /// Empty on the last page.
    pub token: String,
    /// Items after this page.
    pub remaining: u64,
}

struct Snapshot {
    kind: Kind,
    /// The request's filters: a token continues only the list it came from.
    filters: String,
    rev: u64,
    items: Arc<Vec<Arc<Object>>>,
    made: Instant,
}

#[derive(Default)]
struct Snapshots {
    next_id: u64,
    by_id: BTreeMap<u64, Snapshot>,
    held: usize,
}

/// The paged lists in progress.
pub struct Pager {
    inner: Mutex<Snapshots>,
}

impl Default for Pager {
    fn default() -> Pager {
        // Ids from the clock: a token of an earlier run never names a new snapshot.
        let next_id = kube_lite_core::time::now_ms().max(0) as u64 * 1000;
        Pager {
            inner: Mutex::new(Snapshots {
                next_id,
                ..Default::default()
            }),
        }
    }
}

fn expired() -> ApiError {
    ApiError::Gone(
        "The provided continue parameter is too old to display a consistent list result. \
         You can start a new list without the continue parameter."
            .into(),
    )
}

impl Pager {
    /// Snapshots held now.
    pub fn held(&self) -> (usize, usize) {
        let s = self.inner.lock().expect("lock");
        (s.by_id.len(), s.held)
    }

    /// The first page of a list of `all` (what matched, in key order, at `rev`):
    /// everything when `limit` is 0 or enough, else `limit` items and a token.
    pub fn first(
        &self,
        kind: Kind,
        filters: &str,
        rev: u64,
        mut all: Vec<Arc<Object>>,
        limit: usize,
        now: Instant,
    ) -> Page {
        if limit == 0 || all.len() <= limit {
            return Page {
                items: all,
                rev,
                ..Default::default()
            };
        }
        let items = all[..limit].to_vec();
        let remaining = (all.len() - limit) as u64;
        all.shrink_to_fit();
        let mut s = self.inner.lock().expect("lock");
        s.expire(now);
        let id = s.next_id;
        s.next_id += 1;
        let n = all.len();
        while !s.by_id.is_empty() && (s.by_id.len() >= MAX_SNAPSHOTS || s.held + n > MAX_HELD_ITEMS)
        {
            s.drop_oldest();
        }
        s.held += n;
        s.by_id.insert(
            id,
            Snapshot {
                kind,
                filters: filters.to_string(),
                rev,
                items: Arc::new(all),
                made: now,
            },
        );
        Page {
            items,
            rev,
            token: Token {
                rev,
                id,
                offset: limit,
            }
            .encode(),
            remaining,
        }
    }

    /// The page after `token`: `limit` items (0: all the rest).
    pub fn next(
        &self,
        kind: Kind,
        filters: &str,
        token: &str,
        limit: usize,
        now: Instant,
    ) -> Result<Page, ApiError> {
        let t = Token::parse(token)?;
        let mut s = self.inner.lock().expect("lock");
        s.expire(now);
        let snap = s.by_id.get(&t.id).ok_or_else(expired)?;
        if snap.rev != t.rev || t.offset > snap.items.len() || t.offset == 0 {
            return Err(ApiError::invalid(
                "continue",
                "is not a continue token returned by List",
            ));
        }
        if snap.kind != kind || snap.filters != filters {
            return Err(ApiError::invalid(
                "continue",
                "belongs to another list: namespace, label_selector and node_name must be those of the first page",
            ));
        }
        let total = snap.items.len();
        let end = if limit == 0 {
            total
        } else {
            t.offset.saturating_add(limit).min(total)
        };
        let items = snap.items[t.offset..end].to_vec();
        let rev = snap.rev;
        let page = if end == total {
            let n = snap.items.len();
            s.by_id.remove(&t.id);
            s.held -= n;
            Page {
                items,
                rev,
                ..Default::default()
            }
        } else {
            Page {
                items,
                rev,
                token: Token {
                    rev,
                    id: t.id,
                    offset: end,
                }
                .encode(),
                remaining: (total - end) as u64,
            }
        };
        Ok(page)
    }
}

impl Snapshots {
    fn expire(&mut self, now: Instant) {
        while let Some((_, s)) = self.by_id.first_key_value() {
            if now.saturating_duration_since(s.made) < SNAPSHOT_TTL {
                break;
            }
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, s)) = self.by_id.pop_first() {
            self.held -= s.items.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::Resource;
    use kube_lite_proto::v1::Pod;

    fn pods(n: usize) -> Vec<Arc<Object>> {
        (0..n)
            .map(|i| {
                let mut p = Pod::default();
                p.meta_mut().name = format!("p{i:03}");
                Arc::new(Object::Pod(p))
            })
            .collect()
    }

    fn names(p: &Page) -> Vec<String> {
        p.items.iter().map(|o| o.meta().name.clone()).collect()
    }

    #[test]
    fn pages_walk_the_snapshot_of_the_first_page() {
        let pager = Pager::default();
        let t0 = Instant::now();
        let p1 = pager.first(Kind::Pod, "f", 7, pods(10), 4, t0);
        assert_eq!(names(&p1), ["p000", "p001", "p002", "p003"]);
        assert_eq!((p1.rev, p1.remaining), (7, 6));
        assert!(p1.token.starts_with("v1:7:"), "{}", p1.token);
        assert_eq!(pager.held(), (1, 10));
        let p2 = pager.next(Kind::Pod, "f", &p1.token, 4, t0).unwrap();
        assert_eq!(names(&p2), ["p004", "p005", "p006", "p007"]);
        assert_eq!((p2.rev, p2.remaining), (7, 2));
        // A token can be used again (a retried request).
        let again = pager.next(Kind::Pod, "f", &p1.token, 4, t0).unwrap();
        assert_eq!(names(&again), names(&p2));
        let p3 = pager.next(Kind::Pod, "f", &p2.token, 4, t0).unwrap();
        assert_eq!(names(&p3), ["p008", "p009"]);
        assert_eq!((p3.token.as_str(), p3.remaining, p3.rev), ("", 0, 7));
        assert_eq!(pager.held(), (0, 0), "the last page drops the snapshot");
    }

    #[test]
    fn small_or_unlimited_lists_hold_nothing() {
        let pager = Pager::default();
        let p = pager.first(Kind::Pod, "", 3, pods(5), 0, Instant::now());
        assert_eq!((p.items.len(), p.token.as_str()), (5, ""));
        let p = pager.first(Kind::Pod, "", 3, pods(5), 5, Instant::now());
        assert_eq!((p.items.len(), p.token.as_str()), (5, ""));
        assert_eq!(pager.held(), (0, 0));
        // limit 0 on a continue: the rest at once.
        let p1 = pager.first(Kind::Pod, "", 3, pods(5), 2, Instant::now());
        let rest = pager
            .next(Kind::Pod, "", &p1.token, 0, Instant::now())
            .unwrap();
        assert_eq!(rest.items.len(), 3);
    }

    #[test]
    fn expired_tokens_are_gone_with_kubernetes_message() {
        let pager = Pager::default();
        let t0 = Instant::now();
        let p1 = pager.first(Kind::Pod, "", 9, pods(10), 3, t0);
        let later = t0 + SNAPSHOT_TTL + Duration::from_secs(1);
        let e = pager.next(Kind::Pod, "", &p1.token, 3, later).unwrap_err();
        assert!(
            matches!(&e, ApiError::Gone(m) if m.starts_with("The provided continue parameter is too old")),
            "{e:?}"
        );
        assert_eq!(pager.held(), (0, 0));
        // A token of another run (unknown id) too.
        let e = pager.next(Kind::Pod, "", "v1:9:12:3", 3, t0).unwrap_err();
        assert!(matches!(e, ApiError::Gone(_)));
    }

    #[test]
    fn bad_or_foreign_tokens_are_invalid() {
        let pager = Pager::default();
        let t0 = Instant::now();
        let p1 = pager.first(Kind::Pod, "ns=a", 9, pods(10), 3, t0);
        let t = Token::parse(&p1.token).unwrap();
        for bad in [
            "",
            "x",
            "v1:9",
            "v2:9:1:3",
            "v1:9:1:3:4",
            "v1:-1:1:3",
            &"9".repeat(200),
        ] {
            let e = pager.next(Kind::Pod, "ns=a", bad, 3, t0).unwrap_err();
            assert!(matches!(&e, ApiError::Invalid(_)), "{bad:?}: {e:?}");
        }
        let forged = Token { rev: 8, ..t }.encode();
        assert!(matches!(
            pager.next(Kind::Pod, "ns=a", &forged, 3, t0),
            Err(ApiError::Invalid(_))
        ));
        let past_end = Token { offset: 11, ..t }.encode();
        assert!(pager.next(Kind::Pod, "ns=a", &past_end, 3, t0).is_err());
        let e = pager.next(Kind::Pod, "ns=b", &p1.token, 3, t0).unwrap_err();
        assert!(
            format!("{e:?}").contains("belongs to another list"),
            "{e:?}"
        );
        assert!(pager.next(Kind::Node, "ns=a", &p1.token, 3, t0).is_err());
        assert_eq!(Token::parse(&t.encode()).unwrap(), t);
    }

    #[test]
    fn held_items_are_bounded_oldest_first() {
        let pager = Pager::default();
        let t0 = Instant::now();
        let first = pager.first(Kind::Pod, "", 1, pods(10), 1, t0);
        for _ in 0..MAX_SNAPSHOTS {
            pager.first(Kind::Pod, "", 1, pods(3), 1, t0);
        }
        let (n, held) = pager.held();
        assert_eq!((n, held), (MAX_SNAPSHOTS, MAX_SNAPSHOTS * 3));
        assert!(matches!(
            pager.next(Kind::Pod, "", &first.token, 1, t0),
            Err(ApiError::Gone(_))
        ));
    }
}
