//! The watch window: the most recent changes, bounded by age AND by bytes (and by a
//! count, a cap that rarely binds) (pure; the hub holds one). So a watch can resume
//! from any revision of the last `--watch-window-duration` whatever the write rate,
//! as long as that fits `--watch-window-bytes`. Entries are the encoded change-log records ([`RingEntry`]), so the
//! window's memory is exactly what it counts, and resuming a watch decodes one entry
//! at a time. The change log on disk holds the same entries (the store deletes what
//! the window evicts), so a restart loads at most one window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::resource::Kind;

/// Bytes an entry costs beyond its payload (struct, Arc and deque slot), so that a
/// window of tiny events is bounded too.
pub const ENTRY_OVERHEAD: usize = 64;

/// One retained change: its revision, kind and encoded change-log record
/// ([`super::changelog::LogEntry`]).
#[derive(Debug)]
pub struct RingEntry {
    pub rev: u64,
    pub kind: Kind,
    pub data: sled::IVec,
    /// When it entered the window (entries loaded at start: the start).
    pub at: Instant,
}

impl RingEntry {
    pub fn cost(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD
    }
}

/// Recent entries in revision order, none older than `max_age` (than the newest entry),
/// at most `max_len` of them and at most `max_bytes` of [`RingEntry::cost`] in all (the
/// newest entry is kept even when it alone is larger, so a window with `max_len > 0`
/// is never empty after a write).
#[derive(Debug, Default)]
pub struct Window {
    entries: VecDeque<Arc<RingEntry>>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
    max_age: Option<Duration>,
}

impl Window {
    pub fn new(max_len: usize, max_bytes: usize) -> Window {
        Window {
            entries: VecDeque::new(),
            bytes: 0,
            max_len,
            max_bytes,
            max_age: None,
        }
    }

    /// The window with an age bound as well.
    pub fn with_max_age(mut self, max_age: Duration) -> Window {
        self.max_age = Some(max_age);
        self
    }

    /// Whether an entry of `cost` bytes would fit behind `len` entries of `bytes`
    /// (used when loading the window from the newest entry backwards).
    pub fn fits(&self, len: usize, bytes: usize, cost: usize) -> bool {
        self.max_len > 0 && (len == 0 || (len < self.max_len && bytes + cost <= self.max_bytes))
    }

    /// Appends the newest entry; returns the revisions it evicted (oldest first).
    pub fn push(&mut self, e: Arc<RingEntry>) -> Vec<u64> {
        if self.max_len == 0 {
            return vec![e.rev];
        }
        debug_assert!(self.entries.back().is_none_or(|b| b.rev < e.rev));
        self.bytes += e.cost();
        let cutoff = self.max_age.and_then(|a| e.at.checked_sub(a));
        self.entries.push_back(e);
        let mut evicted = Vec::new();
        while self.entries.len() > 1
            && (self.entries.len() > self.max_len
                || self.bytes > self.max_bytes
                || cutoff.is_some_and(|c| self.entries[0].at < c))
        {
            let old = self.entries.pop_front().expect("non-empty");
            self.bytes -= old.cost();
            evicted.push(old.rev);
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Revision of the oldest retained entry.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.front().map(|e| e.rev)
    }

    /// The retained entries of `kind` with a revision above `from`, oldest first.
    pub fn since(&self, kind: Kind, from: u64) -> Vec<Arc<RingEntry>> {
        let start = self.entries.partition_point(|e| e.rev <= from);
        self.entries
            .range(start..)
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rev: u64, kind: Kind, len: usize) -> Arc<RingEntry> {
        entry_at(rev, kind, len, Instant::now())
    }

    fn entry_at(rev: u64, kind: Kind, len: usize, at: Instant) -> Arc<RingEntry> {
        Arc::new(RingEntry {
            rev,
            kind,
            data: sled::IVec::from(vec![0u8; len]),
            at,
        })
    }

    #[test]
    fn bounded_by_age_whatever_the_rate() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = Window::new(1_000_000, usize::MAX).with_max_age(10 * s);
        // 100 changes a second for 10 s: all kept.
        for r in 1..=1000u64 {
            let at = t0 + s.mul_f64(r as f64 / 100.0);
            assert!(w.push(entry_at(r, Kind::Lease, 10, at)).is_empty());
        }
        // Later entries push out everything older than 10 s before them.
        let ev = w.push(entry_at(1001, Kind::Lease, 10, t0 + 15 * s));
        assert_eq!(ev, (1..=499).collect::<Vec<u64>>());
        assert_eq!(w.oldest(), Some(500));
        // After a long silence the newest stays (a window is never empty after a write).
        let ev = w.push(entry_at(1002, Kind::Lease, 10, t0 + 100 * s));
        assert_eq!(ev.len(), 502);
        assert_eq!((w.len(), w.oldest()), (1, Some(1002)));
        // Bytes still bound it within the age.
        let mut w = Window::new(1_000_000, 10 * (10 + ENTRY_OVERHEAD)).with_max_age(10 * s);
        for r in 1..=20 {
            w.push(entry_at(r, Kind::Lease, 10, t0));
        }
        assert_eq!((w.len(), w.oldest()), (10, Some(11)));
    }

    #[test]
    fn bounded_by_count() {
        let mut w = Window::new(3, usize::MAX);
        for r in 1..=3 {
            assert!(w.push(entry(r, Kind::Pod, 10)).is_empty());
        }
        assert_eq!(w.push(entry(4, Kind::Pod, 10)), vec![1]);
        assert_eq!((w.len(), w.oldest()), (3, Some(2)));
        assert_eq!(w.bytes(), 3 * (10 + ENTRY_OVERHEAD));
    }

    #[test]
    fn bounded_by_bytes_keeping_the_newest() {
        let cost = 1000 + ENTRY_OVERHEAD;
        let mut w = Window::new(100, 3 * cost);
        for r in 1..=3 {
            assert!(w.push(entry(r, Kind::Pod, 1000)).is_empty());
        }
        assert_eq!(w.push(entry(4, Kind::Pod, 1000)), vec![1]);
        // One entry larger than the whole window evicts everything else but stays.
        assert_eq!(w.push(entry(5, Kind::Pod, 10_000)), vec![2, 3, 4]);
        assert_eq!((w.len(), w.oldest()), (1, Some(5)));
        assert_eq!(w.bytes(), 10_000 + ENTRY_OVERHEAD);
        assert_eq!(w.push(entry(6, Kind::Pod, 1)), vec![5]);
        assert_eq!(w.bytes(), 1 + ENTRY_OVERHEAD);
    }

    #[test]
    fn disabled_window_keeps_nothing() {
        let mut w = Window::new(0, 1 << 20);
        assert_eq!(w.push(entry(1, Kind::Pod, 1)), vec![1]);
        assert!(w.is_empty() && w.oldest().is_none());
        assert!(!w.fits(0, 0, 1));
    }

    #[test]
    fn since_filters_kind_and_revision() {
        let mut w = Window::new(10, usize::MAX);
        w.push(entry(5, Kind::Pod, 1));
        w.push(entry(6, Kind::Node, 1));
        w.push(entry(7, Kind::Pod, 1));
        w.push(entry(9, Kind::Pod, 1));
        let revs = |v: Vec<Arc<RingEntry>>| v.iter().map(|e| e.rev).collect::<Vec<_>>();
        assert_eq!(revs(w.since(Kind::Pod, 4)), vec![5, 7, 9]);
        assert_eq!(revs(w.since(Kind::Pod, 5)), vec![7, 9]);
        assert_eq!(revs(w.since(Kind::Pod, 8)), vec![9]);
        assert_eq!(revs(w.since(Kind::Node, 0)), vec![6]);
        assert!(w.since(Kind::Pod, 9).is_empty());
    }

    #[test]
    fn fits_when_loading_backwards() {
        let w = Window::new(3, 100);
        assert!(w.fits(0, 0, 1000), "the newest always fits");
        assert!(w.fits(1, 50, 50));
        assert!(!w.fits(1, 50, 51));
        assert!(!w.fits(3, 0, 1));
    }
}
