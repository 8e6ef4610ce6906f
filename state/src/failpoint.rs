//! Crash injection for the crash-safety tests.
//!
//! Every mutation of the system tree, the store or the index is preceded by
//! `failpoint::hit("name")`. With `LIFEBOAT_FAILPOINT` unset this is one load of a
//! cached flag. Set, it simulates power loss at that point: the process ends with
//! `_exit(99)`, flushing nothing and running no cleanup.
//!
//! - `LIFEBOAT_FAILPOINT=@N`: die at the N-th failpoint reached (1-based), whichever
//!   it is; a test raises N until the operation completes, covering every point.
//! - `LIFEBOAT_FAILPOINT=name`: die at the first hit of `name`.
//! - `LIFEBOAT_FAILPOINT=hang:name`: stop forever at the first hit of `name`, as a
//!   process stuck on a dead disk would (for PID 1's stall reports).
//! - `LIFEBOAT_FAILPOINT=trace`: print each failpoint reached to stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

enum Mode {
    Off,
    Nth(u64),
    Named(String),
    Hang(String),
    Trace,
}

static MODE: OnceLock<Mode> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Exit status of a simulated crash.
pub const CRASH_STATUS: i32 = 99;

fn mode() -> &'static Mode {
    MODE.get_or_init(|| match std::env::var("LIFEBOAT_FAILPOINT") {
        Ok(v) if v == "trace" => Mode::Trace,
        Ok(v) if v.starts_with('@') => v[1..].parse().map(Mode::Nth).unwrap_or(Mode::Off),
        Ok(v) if v.starts_with("hang:") => Mode::Hang(v[5..].to_owned()),
        Ok(v) if !v.is_empty() => Mode::Named(v),
        _ => Mode::Off,
    })
}

/// Marks a mutation point.
#[inline]
pub fn hit(name: &str) {
    match mode() {
        Mode::Off => {}
        Mode::Trace => eprintln!("failpoint: {name}"),
        Mode::Nth(n) => {
            if HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
                crash(name)
            }
        }
        Mode::Named(want) => {
            if want == name {
                crash(name)
            }
        }
        Mode::Hang(want) => {
            if want == name {
                eprintln!("failpoint: hanging at {name}");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
    }
}

fn crash(name: &str) -> ! {
    eprintln!("failpoint: simulated crash at {name}");
    // SAFETY: _exit only ends the process; skipping destructors is the point.
    unsafe { nix::libc::_exit(CRASH_STATUS) }
}
