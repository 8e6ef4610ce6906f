//! Progress of the two passes of a check, counted by the workers and handed to a
//! [`ProgressSink`] at most five times a second. The library never prints: the
//! binary's sink draws a line on a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Where a check reports how far it got. Called from worker threads.
pub trait ProgressSink: Sync {
    /// `done` of `total` `what` ("store blobs", "tree entries") after `secs`
    /// seconds, `bytes` hashed so far in this phase.
    fn update(&self, what: &'static str, done: u64, total: u64, bytes: u64, secs: f64);
    /// The phase `what` is over.
    fn finish(&self, what: &'static str);
}

/// The counters of one phase.
pub struct Progress<'a> {
    /// What is counted ("store blobs", "tree entries").
    pub(crate) what: &'static str,
    pub total: u64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    pub(crate) sink: Option<&'a dyn ProgressSink>,
    pub(crate) start: Instant,
    /// Milliseconds since `start` of the last report.
    pub(crate) last: AtomicU64,
}

/// Reports are this far apart at least.
const EVERY_MS: u64 = 200;

impl<'a> Progress<'a> {
    pub fn new(what: &'static str, total: u64, sink: Option<&'a dyn ProgressSink>) -> Self {
        Progress {
            what,
            total,
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sink,
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Counts `n` more items and `bytes` more bytes.
    pub fn tick(&self, n: u64, bytes: u64) {
        let d = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let Some(sink) = self.sink else {
            return;
        };
        let ms = self.start.elapsed().as_millis() as u64;
        let last = self.last.load(Ordering::Relaxed);
        // One thread wins each report slot; the others carry on counting.
        if ms >= last + EVERY_MS && self.last.compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            sink.update(self.what, d, self.total, self.bytes.load(Ordering::Relaxed), ms as f64 / 1000.0);
        }
    }

    pub fn finish(&self) {
        if let Some(sink) = self.sink {
            sink.finish(self.what);
        }
    }
}

/// Batches progress updates: two shared atomics per entry cost more than the
/// `stat` when the workers run on different cores.
pub(crate) struct Tally<'a, 'p> {
    pub(crate) progress: &'a Progress<'p>,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

impl<'a, 'p> Tally<'a, 'p> {
    pub(crate) fn new(progress: &'a Progress<'p>) -> Self {
        Tally { progress, entries: 0, bytes: 0 }
    }

    pub(crate) fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
        if self.entries >= 512 {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        self.progress.tick(std::mem::take(&mut self.entries), std::mem::take(&mut self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<(u64, u64)>>, Mutex<bool>);

    impl ProgressSink for Seen {
        fn update(&self, _: &'static str, done: u64, total: u64, _: u64, _: f64) {
            self.0.lock().unwrap().push((done, total));
        }
        fn finish(&self, _: &'static str) {
            *self.1.lock().unwrap() = true;
        }
    }

    #[test]
    pub(crate) fn reports_are_rate_limited_and_finished() {
        let seen = Seen::default();
        let p = Progress::new("x", 1000, Some(&seen));
        for _ in 0..1000 {
            p.tick(1, 10);
        }
        p.finish();
        // All within 200 ms of the start: counted, not reported.
        assert!(seen.0.lock().unwrap().is_empty());
        assert!(*seen.1.lock().unwrap());
        assert_eq!(p.done.load(Ordering::Relaxed), 1000);
        assert_eq!(p.bytes.load(Ordering::Relaxed), 10_000);
    }
}
