//! PID 1 itself only supervises: a forked worker does the boot (and opens the
//! rescue shell), so a crash there — a panic, an abort, a segfault — costs a
//! restart of the worker, not a kernel panic. PID 1 waits for it, reports a stall
//! (see [`progress`](super::progress)), stops a stuck worker when asked, and
//! switches root when the worker says the new root is ready: the real init must
//! be PID 1.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use super::devices::none;
use super::{init_path, progress, say, switchroot, worker, BootError, Phase, SYSROOT};
use crate::cmdline::KernelCmdline;

/// Forks a worker until one prepares the switch, then switches root; on every
/// failure the next worker starts in the rescue shell, told why.
pub fn run() -> ! {
    // Why the next worker starts in the rescue shell; `None` on the first attempt.
    let mut shell_reason: Option<BootError> = None;
    loop {
        let channel = progress::Channel::new();
        // SAFETY: single-threaded here; the child only runs our own code.
        let outcome = match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                if let Some(c) = channel {
                    c.into_worker();
                }
                let code = worker(shell_reason);
                let _ = std::io::stdout().flush();
                // SAFETY: ending the worker without running PID 1's destructors.
                unsafe { nix::libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                supervise(child, channel.map(progress::Channel::into_watch))
            }
            Err(e) => {
                say(format!("fork: {e}; working without a supervisor"));
                match worker(shell_reason.take()) {
                    0 => Ok(()),
                    c => Err(BootError::new(Phase::Supervision, format!("the boot stopped with status {c}"))),
                }
            }
        };
        shell_reason = Some(match outcome {
            Ok(()) => {
                let cmdline = KernelCmdline::from_proc();
                if cmdline.read_only() {
                    let _ = mount(none(), SYSROOT, none(), MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, none());
                }
                // Arguments the kernel passed to init, as bytes: a non-UTF-8 one
                // is handed on lossily, never a reason to stop.
                let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
                let Err(e) = switchroot::switch_root(Path::new(SYSROOT), &init_path(&cmdline), &args);
                BootError::new(Phase::Switch, format!("switching root failed: {e}"))
            }
            Err(why) => why,
        });
    }
}

/// Waits for the worker, reporting stalls; `Ok` when it has prepared the switch,
/// otherwise why it did not.
fn supervise(child: nix::unistd::Pid, mut watch: Option<progress::Watch>) -> Result<(), BootError> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let fail = |why: String| Err(BootError::new(Phase::Supervision, why));
    loop {
        let flags = watch.as_ref().map(|_| WaitPidFlag::WNOHANG);
        match waitpid(child, flags) {
            Ok(WaitStatus::StillAlive) => {
                if watch.as_mut().map(|w| w.wait(Duration::from_secs(1))) == Some(progress::Tick::WantShell) {
                    return fail(stop_stuck_worker(child));
                }
            }
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, c)) => return fail(format!("the boot worker exited with status {c}")),
            Ok(WaitStatus::Signaled(_, sig, _)) => return fail(format!("the boot worker was killed by {sig:?}")),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return fail(format!("waiting for the boot worker: {e}")),
        }
    }
}

/// Kills a stalled worker so a new one can open the rescue shell. A process stuck
/// in the kernel (a read from a dead disk) dies only when that call returns; after a
/// few seconds the shell opens beside it rather than wait.
fn stop_stuck_worker(child: nix::unistd::Pid) -> String {
    say("stopping the stalled boot worker");
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => return "the boot worker was stopped after it stalled".into(),
        }
    }
    "the stalled boot worker is stuck in the kernel and cannot be stopped; the rescue shell opens beside it".into()
}
