//! When to sync: the burst coalescing of [`crate::run`] as a pure state machine.
//!
//! Fed with "there is unsynced work at `t`" ([`Coalescer::change`]), "the timer fired at
//! `t`" ([`Coalescer::tick`]) and "a sync finished at `t`" ([`Coalescer::synced`]); it
//! answers "sync now" or "sleep until". No clock, no I/O: time is an argument.
//!
//! The rules: the first change after a quiet period is synced at once (leading edge);
//! changes arriving while a sync runs, or in a burst, are synced once none came for
//! `debounce`, but at most `max_coalesce` after the first unsynced one; a failed sync
//! holds the next one back for `retry_after`.

use std::time::{Duration, Instant};

/// A steady stream of events still gets a sync this often.
pub const MAX_COALESCE: Duration = Duration::from_millis(250);

/// How long a failed sync holds the next one back.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run a sync now (then report it with [`Coalescer::synced`]).
    SyncNow,
    /// Nothing due yet: wake up at this instant.
    SleepUntil(Instant),
    /// Nothing to do until the next change.
    Idle,
}

/// Burst coalescing state.
#[derive(Debug, Clone)]
pub struct Coalescer {
    debounce: Duration,
    max_coalesce: Duration,
    retry_after: Duration,
    /// When the next sync runs (`None` = nothing pending).
    due: Option<Instant>,
    /// When the first unsynced change was seen.
    first_pending: Option<Instant>,
    /// Back-off after a failed sync: no sync before this.
    not_before: Option<Instant>,
    last_sync: Option<Instant>,
}

impl Coalescer {
    /// `debounce`: quiet time that ends a burst; the cap is [`MAX_COALESCE`] and the
    /// back-off after a failure [`RETRY_AFTER`].
    pub fn new(debounce: Duration) -> Coalescer {
        Coalescer::with_limits(debounce, MAX_COALESCE, RETRY_AFTER)
    }

    pub fn with_limits(debounce: Duration, max_coalesce: Duration, retry_after: Duration) -> Self {
        Coalescer {
            debounce,
            max_coalesce,
            retry_after,
            due: None,
            first_pending: None,
            not_before: None,
            last_sync: None,
        }
    }

    /// There is unsynced work at `now` (called after every event while work is
    /// pending): (re)computes when the sync is due.
    pub fn change(&mut self, now: Instant) {
        let mut at = match self.first_pending {
            Some(first) => (now + self.debounce).min(first + self.max_coalesce),
            None => {
                self.first_pending = Some(now);
                match self.last_sync {
                    Some(t) if now < t + self.debounce => t + self.debounce,
                    _ => now,
                }
            }
        };
        if let Some(nb) = self.not_before {
            at = at.max(nb);
        }
        self.due = Some(at);
    }

    /// When to wake up next (`None` = only a change can make a sync due).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.due
    }

    /// The timer fired (or a poll) at `now`. On [`Decision::SyncNow`] the pending state
    /// is consumed: the caller runs the sync and reports it with [`Coalescer::synced`].
    pub fn tick(&mut self, now: Instant) -> Decision {
        match self.due {
            None => Decision::Idle,
            Some(at) if now < at => Decision::SleepUntil(at),
            Some(_) => {
                self.due = None;
                self.first_pending = None;
                self.not_before = None;
                Decision::SyncNow
            }
        }
    }

    /// A sync finished at `now`; `ok` = it succeeded (else the next one waits for the
    /// back-off).
    pub fn synced(&mut self, now: Instant, ok: bool) {
        self.last_sync = Some(now);
        if !ok {
            self.not_before = Some(now + self.retry_after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the timer as `run` does: sync at the due instant.
    fn fire(c: &mut Coalescer) -> Instant {
        let at = c.next_wakeup().expect("a sync is due");
        assert_eq!(c.tick(at), Decision::SyncNow);
        at
    }

    #[test]
    fn idle_without_changes() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        assert_eq!(c.next_wakeup(), None);
        assert_eq!(c.tick(t0), Decision::Idle);
        assert_eq!(c.tick(t0 + ms(5000)), Decision::Idle);
    }

    #[test]
    fn first_change_after_quiet_syncs_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        c.change(t0);
        assert_eq!(c.next_wakeup(), Some(t0));
        assert_eq!(c.tick(t0), Decision::SyncNow);
        c.synced(t0 + ms(2), true);
        assert_eq!(c.tick(t0 + ms(3)), Decision::Idle);
        // Long after the last sync: leading edge again.
        c.change(t0 + ms(500));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(500)));
    }

    #[test]
    fn changes_during_a_burst_wait_for_quiet() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        c.change(t0);
        c.change(t0 + ms(1));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(11)));
        c.change(t0 + ms(6));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(16)));
        assert_eq!(c.tick(t0 + ms(11)), Decision::SleepUntil(t0 + ms(16)));
        assert_eq!(fire(&mut c), t0 + ms(16));
    }

    #[test]
    fn a_steady_stream_is_synced_every_max_coalesce() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        let mut t = t0;
        c.change(t);
        let mut syncs = Vec::new();
        // An event every 5 ms for 1 s: never 10 ms quiet.
        for _ in 0..200 {
            t += ms(5);
            if let Some(at) = c.next_wakeup() {
                if at <= t {
                    assert_eq!(c.tick(at), Decision::SyncNow);
                    c.synced(at, true);
                    syncs.push(at);
                }
            }
            c.change(t);
        }
        // Leading edge at t0; the change right after it waits for `debounce` after
        // that sync (t0+10); from then on the stream is never quiet for 10 ms, so the
        // cap syncs it every 250 ms.
        let want: Vec<Instant> = [0, 10, 260, 510, 760].iter().map(|&m| t0 + ms(m)).collect();
        assert_eq!(syncs, want);
        // The cap itself: first unsynced change at t, due no later than t + 250 ms.
        let mut c = Coalescer::new(D);
        c.change(t0);
        for k in 1..100 {
            c.change(t0 + ms(k * 5));
        }
        assert_eq!(c.next_wakeup(), Some(t0 + MAX_COALESCE));
    }

    #[test]
    fn a_change_right_after_a_sync_waits_for_debounce() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        c.change(t0);
        fire(&mut c);
        c.synced(t0 + ms(3), true);
        // 4 ms after the sync ended: not a leading edge, wait until 10 ms after it.
        c.change(t0 + ms(7));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(13)));
        // Exactly `debounce` later it is a leading edge again.
        let mut c = Coalescer::new(D);
        c.change(t0);
        fire(&mut c);
        c.synced(t0, true);
        c.change(t0 + D);
        assert_eq!(c.next_wakeup(), Some(t0 + D));
    }

    #[test]
    fn a_failed_sync_backs_off() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        c.change(t0);
        fire(&mut c);
        c.synced(t0 + ms(2), false);
        // Work is still pending (a resync): due after the back-off, not at once.
        c.change(t0 + ms(2));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(2) + RETRY_AFTER));
        assert_eq!(
            c.tick(t0 + ms(500)),
            Decision::SleepUntil(t0 + ms(2) + RETRY_AFTER)
        );
        // Further events do not pull it forward.
        c.change(t0 + ms(600));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(2) + RETRY_AFTER));
        assert_eq!(fire(&mut c), t0 + ms(2) + RETRY_AFTER);
        // The back-off is consumed by that sync.
        c.synced(t0 + ms(1010), true);
        c.change(t0 + ms(2000));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(2000)));
    }

    #[test]
    fn tick_late_still_syncs_and_clears_state() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(D);
        c.change(t0);
        c.change(t0 + ms(1));
        assert_eq!(c.tick(t0 + ms(400)), Decision::SyncNow);
        assert_eq!(c.next_wakeup(), None);
        c.synced(t0 + ms(401), true);
        // A new burst starts its own cap window.
        c.change(t0 + ms(1000));
        c.change(t0 + ms(1001));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(1011)));
    }

    #[test]
    fn custom_limits() {
        let t0 = Instant::now();
        let mut c = Coalescer::with_limits(ms(50), ms(100), ms(300));
        c.change(t0);
        c.change(t0 + ms(10));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(60)));
        c.change(t0 + ms(80));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(100)));
        fire(&mut c);
        c.synced(t0 + ms(100), false);
        c.change(t0 + ms(100));
        assert_eq!(c.next_wakeup(), Some(t0 + ms(400)));
    }
}
