//! What the boot worker is doing, told to the supervising PID 1, so a boot that
//! stalls — a disk that stops answering, a mount that never returns — never leaves a
//! silent console. The worker names each step before it starts it; when no new step
//! arrives for [`STALL`], PID 1 says which step is stuck and shows the kernel's
//! recent warnings (an NVMe timeout, an I/O error, an ext4 complaint), which is
//! usually the whole diagnosis.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

/// How long a step may run before PID 1 speaks up.
pub const STALL: Duration = Duration::from_secs(15);
/// How often PID 1 repeats itself while the same step stays stuck.
const REPEAT: Duration = Duration::from_secs(60);
/// The step name that means "interactive": the rescue shell waits for a person.
pub const SHELL: &str = "in the rescue shell";
/// Steps that wait for a person (a passphrase) start with this: no stall report.
pub const ASKING: &str = "waiting for the user: ";

/// The worker's end of the pipe; -1 when there is no supervisor to tell.
static WRITER: AtomicI32 = AtomicI32::new(-1);

/// Names the step the worker starts now. Never blocks and never fails: progress
/// reports must not be able to stop a boot.
pub fn step(what: &str) {
    let fd = WRITER.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut line = what.replace('\n', " ");
    line.push('\n');
    // SAFETY: writing an owned buffer to a descriptor this process holds open.
    let _ = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

/// Both ends of the progress pipe, created before the worker is forked.
pub struct Channel {
    read: OwnedFd,
    write: OwnedFd,
}

impl Channel {
    pub fn new() -> Option<Channel> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        Some(unsafe { Channel { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) } })
    }

    /// In the worker: keep the write end for [`step`].
    pub fn into_worker(self) {
        use std::os::fd::IntoRawFd;
        drop(self.read);
        WRITER.store(self.write.into_raw_fd(), Ordering::Relaxed);
    }

    /// In PID 1: keep the read end.
    pub fn into_watch(self) -> Watch {
        drop(self.write);
        Watch { read: self.read, buf: Vec::new(), step: "starting".to_owned(), since: Instant::now(), last_said: None }
    }
}

/// What PID 1 should do after [`Watch::wait`].
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    /// Keep waiting for the worker.
    Wait,
    /// The worker is stalled and the person at the console pressed Enter: stop it
    /// and open the rescue shell.
    WantShell,
}

/// PID 1's view of the worker's progress.
pub struct Watch {
    read: OwnedFd,
    buf: Vec<u8>,
    step: String,
    since: Instant,
    last_said: Option<Instant>,
}

impl Watch {
    /// Waits up to `timeout` for news from the worker, then says something if the
    /// current step has been stuck too long. Once it has said so, the console is
    /// PID 1's to read: Enter asks for the rescue shell.
    pub fn wait(&mut self, timeout: Duration) -> Tick {
        let stalled = self.last_said.is_some();
        let mut pfds = [
            libc::pollfd { fd: self.read.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 },
        ];
        let count = if stalled { 2 } else { 1 };
        // SAFETY: `count` valid pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), count, timeout.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            // EINTR (a child changed state) or worse: never spin.
            std::thread::sleep(Duration::from_millis(20).min(timeout));
        }
        if n > 0 && pfds[0].revents != 0 {
            self.drain();
        }
        if n > 0 && stalled && pfds[1].revents & libc::POLLIN != 0 && enter_pressed() {
            return Tick::WantShell;
        }
        self.maybe_warn();
        Tick::Wait
    }

    fn drain(&mut self) {
        let mut chunk = [0u8; 512];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe { libc::read(self.read.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n as usize]);
        }
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            self.step = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.since = Instant::now();
            self.last_said = None;
        }
    }

    fn maybe_warn(&mut self) {
        if self.step == SHELL || self.step.starts_with(ASKING) {
            return;
        }
        let now = Instant::now();
        let stuck = now.duration_since(self.since);
        let due = match self.last_said {
            None => stuck >= STALL,
            Some(t) => now.duration_since(t) >= REPEAT,
        };
        if !due {
            return;
        }
        self.last_said = Some(now);
        let mut text = format!("lifeboat: still {} after {} s", self.step, stuck.as_secs());
        let warnings = crate::kmsg::read(4, 8);
        if warnings.is_empty() {
            text.push_str("; the kernel reported no warnings\n");
        } else {
            text.push_str("; the kernel's latest warnings:\n");
            for w in warnings {
                text.push_str("lifeboat:   ");
                text.push_str(&w.to_string());
                text.push('\n');
            }
        }
        text.push_str("lifeboat: press Enter to stop it and open the rescue shell\n");
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    }
}

/// Reads what is waiting on the console; true if it holds a line end.
fn enter_pressed() -> bool {
    let mut buf = [0u8; 256];
    // SAFETY: reading into a local buffer of the given length; poll said it is ready.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    n > 0 && buf[..n as usize].iter().any(|&b| b == b'\n' || b == b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_reach_the_watch_and_stalls_are_reported_once_per_period() {
        let ch = Channel::new().unwrap();
        let w_fd = ch.write.as_raw_fd();
        WRITER.store(w_fd, Ordering::Relaxed);
        step("mounting /dev/x");
        WRITER.store(-1, Ordering::Relaxed);
        let mut watch =
            Watch { read: ch.read, buf: Vec::new(), step: "starting".into(), since: Instant::now(), last_said: None };
        watch.wait(Duration::from_millis(100));
        assert_eq!(watch.step, "mounting /dev/x");
        watch.since = Instant::now() - STALL - Duration::from_secs(1);
        watch.maybe_warn();
        let said = watch.last_said.expect("a stalled step is reported");
        watch.maybe_warn();
        assert_eq!(watch.last_said, Some(said), "not repeated before REPEAT");
        drop(ch.write);
    }
}
