//! Progress of long work on a terminal: one line on stderr, redrawn in place —
//! counted work with its rate and the time left (the libraries' counters reach
//! it through [`ProgressSink`]), steps whose size is not counted as a line
//! naming the step. Nothing at all when stderr is not a terminal (a pipe, a
//! log, a test) or the output is JSON: a program reading lifeboat sees only
//! results. PID 1's console keeps its own concise progress (`pid1::console`),
//! not this line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use lifeboat_state::verify::ProgressSink;

use super::Out;

/// The line is kept within this many columns (a serial console is 80 wide).
const WIDTH: usize = 79;

/// A progress line on a terminal's stderr.
pub struct Bar {
    drawn: AtomicBool,
}

impl Bar {
    /// A line when stderr is a terminal and the output is for people.
    pub fn for_output(out: &Out) -> Option<Bar> {
        (!out.json && std::io::stderr().is_terminal()).then(|| Bar { drawn: AtomicBool::new(false) })
    }

    /// Names a step of the work that is not counted (`compressing the initrd`).
    pub fn step(&self, text: &str) {
        self.draw(&format!("{text} ..."));
    }

    /// Clears the line (before a result is printed).
    pub fn clear(&self) {
        if self.drawn.swap(false, Ordering::Relaxed) {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{:WIDTH$}\r", "");
            let _ = e.flush();
        }
    }

    fn draw(&self, text: &str) {
        let shown: String = text.chars().take(WIDTH).collect();
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{shown:WIDTH$}");
        let _ = e.flush();
        self.drawn.store(true, Ordering::Relaxed);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Steps through an optional bar: `step(bar, ...)` reads as what it does.
pub fn step(bar: &Option<Bar>, text: &str) {
    if let Some(b) = bar {
        b.step(text);
    }
}

/// `done` of `total` `what`, the rate and the time left: the bar's text.
pub fn line(what: &str, done: u64, total: u64, bytes: u64, secs: f64) -> String {
    let secs = secs.max(0.001);
    let mut s = format!("{what}: {done}/{total}");
    if let Some(pct) = done.saturating_mul(100).checked_div(total) {
        s.push_str(&format!(" ({pct}%)"));
    }
    if bytes > 0 {
        s.push_str(&format!(", {:.0} MB/s", bytes as f64 / 1e6 / secs));
    } else {
        s.push_str(&format!(", {:.0}/s", done as f64 / secs));
    }
    if let Some(left) = eta(done, total, secs) {
        s.push_str(&format!(", {} left", duration(left)));
    }
    s
}

/// Seconds left at the rate so far, once there is a rate to go by.
pub fn eta(done: u64, total: u64, secs: f64) -> Option<f64> {
    (done > 0 && total >= done && secs >= 0.5).then(|| (total - done) as f64 * secs / done as f64)
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl ProgressSink for Bar {
    fn update(&self, what: &'static str, done: u64, total: u64, bytes: u64, secs: f64) {
        self.draw(&line(what, done, total, bytes, secs));
    }

    fn finish(&self, _: &'static str) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_rate_and_time_left() {
        assert_eq!(
            line("files hashed", 250, 1000, 500_000_000, 5.0),
            "files hashed: 250/1000 (25%), 100 MB/s, 15s left"
        );
        assert_eq!(line("tree entries", 10, 1000, 0, 0.1), "tree entries: 10/1000 (1%), 100/s");
        assert_eq!(eta(500, 1000, 90.0), Some(90.0));
        assert_eq!(duration(90.0), "1m30s");
    }
}
