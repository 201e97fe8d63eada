//! Watch over real gRPC + real sled: resume without gap or duplicate, relist, bookmarks,
//! filtered watches, slow watchers, restart.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{self, del_now};
use tonic::{Code, Streaming};

/// Pre-bound to `n0`: keeps the scheduler out of these tests.
fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p = fixtures::pod(name, labels);
    p.spec.as_mut().unwrap().node_name = "n0".into();
    p
}

fn rv_of(p: &Pod) -> u64 {
    p.metadata.as_ref().unwrap().resource_version
}

fn name_of(p: &Pod) -> String {
    p.metadata.as_ref().unwrap().name.clone()
}

async fn next(s: &mut Streaming<PodEvent>) -> PodEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("watch event within 10s")
        .expect("stream open")
        .expect("event ok")
}

/// Next non-bookmark event.
async fn next_change(s: &mut Streaming<PodEvent>) -> PodEvent {
    loop {
        let e = next(s).await;
        if e.r#type != EventType::Bookmark as i32 {
            return e;
        }
    }
}

fn watch_req(rv: u64) -> WatchRequest {
    WatchRequest {
        resource_version: rv,
        ..Default::default()
    }
}

#[tokio::test]
async fn live_events_added_modified_deleted() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    let mut w = pods.watch(watch_req(0)).await.unwrap().into_inner();
    let c = pods.create(pod("a", &[])).await.unwrap().into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(e.r#type, EventType::Added as i32);
    assert_eq!(e.resource_version, rv_of(&c));
    assert_eq!(e.object.as_ref().unwrap(), &c);
    let mut u = c.clone();
    u.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("x".into(), "1".into());
    let u = pods.update(u).await.unwrap().into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(e.r#type, EventType::Modified as i32);
    assert_eq!(e.object.as_ref().unwrap(), &u);
    let d = pods.delete(del_now("a")).await.unwrap().into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(e.r#type, EventType::Deleted as i32);
    assert_eq!(e.resource_version, rv_of(&d));
    assert!(rv_of(&d) > rv_of(&u));
    assert_eq!(
        e.object.unwrap().metadata.unwrap().resource_version,
        e.resource_version
    );
}

/// 1,000 concurrent writes (creates, updates, deletes); a watch from a List's revision
/// replays every change once, in order, and folding it over the List gives the final state.
/// A List of a brand-new, empty store returns a revision a Watch can resume from
/// (not 0, which means "from now"): a write between the List and the Watch is delivered.
#[tokio::test]
async fn list_of_empty_store_then_watch_misses_nothing() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    let list = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.items.is_empty());
    assert!(list.resource_version > 0, "{}", list.resource_version);
    // Written after the List, before the Watch starts.
    let c = pods.create(pod("between", &[])).await.unwrap().into_inner();
    let mut w = pods
        .watch(watch_req(list.resource_version))
        .await
        .unwrap()
        .into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(e.r#type, EventType::Added as i32);
    assert_eq!(e.object.as_ref().unwrap(), &c);
}

#[tokio::test]
async fn resume_across_1000_writes_no_gap_no_duplicate() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    for i in 0..20 {
        pods.create(pod(&format!("seed-{i}"), &[])).await.unwrap();
    }
    let list = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let start = list.resource_version;

    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = s.pods();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..125 {
                let name = format!("w{t}-{i}");
                let p = c.create(pod(&name, &[])).await.unwrap().into_inner();
                revs.push(rv_of(&p));
                if i % 3 == 1 {
                    let mut u = p.clone();
                    u.metadata
                        .as_mut()
                        .unwrap()
                        .labels
                        .insert("i".into(), i.to_string());
                    revs.push(rv_of(&c.update(u).await.unwrap().into_inner()));
                }
                if i % 5 == 2 {
                    let d = c
                        .delete(DeleteRequest {
                            name,
                            grace_period_seconds: 0,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    revs.push(rv_of(&d));
                }
            }
            revs
        }));
    }
    let mut written: Vec<u64> = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    assert!(written.len() >= 1000, "{} writes", written.len());
    let final_list = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Replay from the first List's revision up to the final one.
    let mut state: BTreeMap<String, Pod> =
        list.items.into_iter().map(|p| (name_of(&p), p)).collect();
    let mut w = pods.watch(watch_req(start)).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let mut last = start;
    while last < final_list.resource_version {
        let e = next_change(&mut w).await;
        assert!(
            e.resource_version > last,
            "out of order or duplicate: {} after {last}",
            e.resource_version
        );
        last = e.resource_version;
        seen.push(e.resource_version);
        let p = e.object.unwrap();
        match EventType::try_from(e.r#type).unwrap() {
            EventType::Added => assert!(state.insert(name_of(&p), p).is_none(), "ADDED twice"),
            EventType::Modified => {
                assert!(state.insert(name_of(&p), p).is_some(), "MODIFIED unknown")
            }
            EventType::Deleted => assert!(state.remove(&name_of(&p)).is_some(), "DELETED unknown"),
            t => panic!("unexpected {t:?}"),
        }
    }
    for r in &written {
        assert!(
            seen.binary_search(r).is_ok(),
            "write at revision {r} missing from the watch"
        );
    }
    let expect: BTreeMap<String, Pod> = final_list
        .items
        .into_iter()
        .map(|p| (name_of(&p), p))
        .collect();
    assert_eq!(state, expect);

    // A second watcher resuming from the middle sees exactly the suffix.
    let mid = seen[seen.len() / 2];
    let mut w2 = pods.watch(watch_req(mid)).await.unwrap().into_inner();
    for want in seen.iter().filter(|r| **r > mid) {
        assert_eq!(next_change(&mut w2).await.resource_version, *want);
    }
}

#[tokio::test]
async fn too_old_resource_version_says_relist() {
    let cfg = apiserver::Config {
        watch_window: 10,
        ..Default::default()
    };
    let s = TestApiServer::start_with(cfg).await;
    let mut pods = s.pods();
    for i in 0..30 {
        pods.create(pod(&format!("p{i}"), &[])).await.unwrap();
    }
    let e = pods.watch(watch_req(1)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(
        e.message().contains("too old resource version: 1"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("relist"), "{}", e.message());
    // Within the window works.
    let rev = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .resource_version;
    // The store's revisions are global (a controller's write to another kind takes one
    // too), so the first pod change after rev - 5 is within (rev - 5, rev].
    let mut w = pods.watch(watch_req(rev - 5)).await.unwrap().into_inner();
    let first = next_change(&mut w).await.resource_version;
    assert!(
        first > rev - 5 && first <= rev,
        "first change {first} after {} (list at {rev})",
        rev - 5
    );
}

#[tokio::test]
async fn bookmarks_carry_current_revision() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    let p = pods.create(pod("a", &[])).await.unwrap().into_inner();
    // Writes of another kind move the revision too.
    let n = s
        .nodes()
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "n".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut w = pods
        .watch(WatchRequest {
            resource_version: rv_of(&p),
            bookmark_interval_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = next(&mut w).await;
    assert_eq!(e.r#type, EventType::Bookmark as i32);
    let n_rv = n.metadata.unwrap().resource_version;
    assert!(
        e.resource_version >= n_rv,
        "bookmark {} < {}",
        e.resource_version,
        n_rv
    );
    let o = e.object.unwrap();
    assert_eq!(o.metadata.unwrap().resource_version, e.resource_version);
    assert!(o.spec.is_none());
}

#[tokio::test]
async fn filtered_watch_added_deleted_on_match_change() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    let mut w = pods
        .watch(WatchRequest {
            label_selector: "app=web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut wn = pods
        .watch(WatchRequest {
            node_name: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    pods.create(pod("other", &[("app", "db")])).await.unwrap();
    let p = pods
        .create(pod("a", &[("app", "web")]))
        .await
        .unwrap()
        .into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(
        (e.r#type, name_of(e.object.as_ref().unwrap())),
        (EventType::Added as i32, "a".into())
    );
    let mut u = p.clone();
    u.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "db".into());
    let u = pods.update(u).await.unwrap().into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(e.r#type, EventType::Deleted as i32);
    assert_eq!(e.resource_version, rv_of(&u));
    let mut u2 = u.clone();
    u2.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "web".into());
    pods.update(u2).await.unwrap();
    assert_eq!(next_change(&mut w).await.r#type, EventType::Added as i32);

    // node_name filter: an unbound pod bound to n1 is ADDED for n1's watcher.
    let mut unbound = pod("b", &[]);
    unbound.spec.as_mut().unwrap().node_name.clear();
    let b = pods.create(unbound).await.unwrap().into_inner();
    let mut bind = b.clone();
    bind.metadata.as_mut().unwrap().resource_version = 0;
    bind.spec.as_mut().unwrap().node_name = "n1".into();
    pods.update(bind).await.unwrap();
    let e = next_change(&mut wn).await;
    assert_eq!(
        (e.r#type, name_of(e.object.as_ref().unwrap())),
        (EventType::Added as i32, "b".into())
    );
    pods.delete(del_now("b")).await.unwrap();
    assert_eq!(next_change(&mut wn).await.r#type, EventType::Deleted as i32);
}

/// A watcher that does not read is ended with the relist status; writers never wait.
#[tokio::test]
async fn slow_watcher_is_ended_writers_unaffected() {
    let cfg = apiserver::Config {
        watch_buffer: 16,
        ..Default::default()
    };
    let s = TestApiServer::start_with(cfg).await;
    let mut pods = s.pods();
    // The slow client has small HTTP/2 windows, so the server's buffer fills quickly.
    let ch = s
        .connect_with(|e| {
            e.initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
        })
        .await;
    let mut slow = pod_api_client::PodApiClient::new(ch)
        .watch(watch_req(0))
        .await
        .unwrap()
        .into_inner();
    let mut fast = pods.watch(watch_req(0)).await.unwrap().into_inner();
    let big = "x".repeat(1024);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut c = s.pods();
        let big = big.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let mut p = pod(&format!("s{t}-{i}"), &[]);
                p.metadata
                    .as_mut()
                    .unwrap()
                    .annotations
                    .insert("big".into(), big.clone());
                c.create(p).await.unwrap();
            }
        }));
    }
    // The fast watcher keeps up and sees all 800 creates.
    let mut n = 0;
    while n < 800 {
        if next_change(&mut fast).await.r#type == EventType::Added as i32 {
            n += 1;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The slow one: some events, then OUT_OF_RANGE.
    let mut got = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("slow stream ends")
        {
            Some(Ok(_)) => got += 1,
            Some(Err(st)) => break st,
            None => panic!("slow watcher ended without status after {got} events"),
        }
    };
    assert!(got < 800, "slow watcher got every event");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("relist"), "{}", status.message());
}

#[tokio::test]
async fn restart_keeps_objects_revision_and_watch_resumes() {
    let mut s = TestApiServer::start().await;
    let mut pods = s.pods();
    let a = pods
        .create(pod("a", &[("k", "v")]))
        .await
        .unwrap()
        .into_inner();
    let b = pods.create(pod("b", &[])).await.unwrap().into_inner();
    let node = s
        .nodes()
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let before = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    s.restart().await;
    let mut pods = s.pods();
    let after = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.items, before.items);
    // Not lower; it may be higher: the controller manager records Events (the pods'
    // FailedScheduling) asynchronously, around the restart.
    assert!(
        after.resource_version >= before.resource_version,
        "{} < {}",
        after.resource_version,
        before.resource_version
    );
    let n2 = s
        .nodes()
        .get(fixtures::get("n1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n2, node);
    // Subnet allocation survived: the next node gets the next subnet.
    let n3 = s
        .nodes()
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "n2".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n3.spec.unwrap().pod_cidr, "10.0.2.0/24");
    let c = pods.create(pod("c", &[])).await.unwrap().into_inner();
    assert!(rv_of(&c) > before.resource_version);
    // A watch from before the restart resumes: sees n2's revision gap (other kind) and c.
    let mut w = pods.watch(watch_req(rv_of(&a))).await.unwrap().into_inner();
    let e = next_change(&mut w).await;
    assert_eq!(e.resource_version, rv_of(&b));
    let e = next_change(&mut w).await;
    assert_eq!(e.resource_version, rv_of(&c));
    assert_eq!(e.r#type, EventType::Added as i32);
}

/// A watcher that stops reading altogether is ended with OUT_OF_RANGE "too slow …
/// relist" however long it stays stuck (the status is delivered ahead of its buffered
/// events; it used to wait 30 s for buffer room and then end the stream with OK).
#[tokio::test]
async fn stuck_watcher_gets_relist_status_not_ok() {
    let cfg = apiserver::Config {
        watch_buffer: 16,
        ..Default::default()
    };
    let s = TestApiServer::start_with(cfg).await;
    let ch = s
        .connect_with(|e| {
            e.initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
        })
        .await;
    let mut stuck = pod_api_client::PodApiClient::new(ch)
        .watch(watch_req(0))
        .await
        .unwrap()
        .into_inner();
    let mut pods = s.pods();
    let big = "x".repeat(4096);
    for i in 0..200 {
        let mut p = pod(&format!("st-{i}"), &[]);
        p.metadata
            .as_mut()
            .unwrap()
            .annotations
            .insert("big".into(), big.clone());
        pods.create(p).await.unwrap();
    }
    // Stay stuck past the old 30 s wait for buffer room.
    tokio::time::sleep(Duration::from_secs(32)).await;
    let mut got = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.next())
            .await
            .expect("stuck stream ends")
        {
            Some(Ok(_)) => got += 1,
            Some(Err(st)) => break st,
            None => panic!("stuck watcher ended with OK after {got} events"),
        }
    };
    assert!(got < 200, "stuck watcher got every event");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too slow") && status.message().contains("relist"),
        "{}",
        status.message()
    );
}

/// A Watch from a revision the server has not reached fails at once, naming the
/// current revision, instead of silently delivering nothing.
#[tokio::test]
async fn watch_from_a_future_revision_fails_clearly() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    let created = pods.create(pod("f", &[])).await.unwrap().into_inner();
    let current = created.metadata.unwrap().resource_version;
    for from in [current + 1_000, i64::MAX as u64] {
        let err = pods
            .watch(watch_req(from))
            .await
            .expect_err("future revision accepted");
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        assert!(
            err.message().contains("too large resource version")
                && err.message().contains(&format!("current: {current}")),
            "{}",
            err.message()
        );
    }
    // The current revision itself is fine.
    pods.watch(watch_req(current))
        .await
        .expect("watch from now");
}
