//! Asking the person at the machine for a secret: the prompt goes to every
//! console the kernel writes to (`/sys/class/tty/console/active`: a serial line
//! and the screen alike), echo off, and the first line typed on any of them is
//! the answer. A laptop's screen and a server's serial console both work without
//! the user knowing which one the kernel calls primary.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg};
use zeroize::Zeroizing;

/// The longest answer read; longer lines are cut there (a LUKS passphrase may
/// be up to 512 bytes by cryptsetup's default limit).
const MAX_ANSWER: usize = 1024;

/// The device nodes of the active consoles, the primary last as the kernel
/// lists it; `/dev/console` when sysfs does not say.
pub fn consoles() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    for name in active.split_whitespace() {
        // tty0 is "the current virtual terminal": the one it points at now.
        let name = if name == "tty0" {
            std::fs::read_to_string("/sys/class/tty/tty0/active")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && !s.contains('/'))
                .unwrap_or_else(|| "tty0".to_owned())
        } else {
            name.to_owned()
        };
        if name.contains('/') || name.starts_with('.') {
            continue;
        }
        let p = PathBuf::from("/dev").join(&name);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        out.push(PathBuf::from("/dev/console"));
    }
    out
}

struct Console {
    file: std::fs::File,
    saved: Option<termios::Termios>,
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(self.file.as_fd(), SetArg::TCSANOW, t);
        }
    }
}

/// Shows `prompt` on every console and returns the first line typed on one of
/// them, without its line end; nothing typed is echoed.
pub fn ask_secret(prompt: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut cons = Vec::new();
    for path in consoles() {
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        let saved = termios::tcgetattr(file.as_fd()).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO | LocalFlags::ECHONL);
            quiet.local_flags.insert(LocalFlags::ICANON);
            let _ = termios::tcsetattr(file.as_fd(), SetArg::TCSANOW, &quiet);
            // What was typed before the question (a key held at the boot menu)
            // is not the answer.
            let _ = termios::tcflush(file.as_fd(), termios::FlushArg::TCIFLUSH);
        }
        cons.push(Console { file, saved });
    }
    if cons.is_empty() {
        return Err("no console to ask on".into());
    }
    for c in &mut cons {
        let _ = write!(c.file, "{prompt}");
        let _ = c.file.flush();
    }
    let answer = loop {
        let mut fds: Vec<PollFd> = cons.iter().map(|c| PollFd::new(c.file.as_fd(), PollFlags::POLLIN)).collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the console: {e}")),
        }
        let ready = fds.iter().position(|f| {
            f.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
        });
        let Some(i) = ready else { continue };
        let mut buf = Zeroizing::new(vec![0u8; MAX_ANSWER]);
        // SAFETY: reading into an owned buffer of the stated length from a descriptor we hold.
        let n = unsafe { nix::libc::read(cons[i].file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::WouldBlock {
                continue;
            }
            // A console that fails is dropped; the others still ask.
            cons.remove(i);
            if cons.is_empty() {
                return Err(format!("reading the console: {e}"));
            }
            continue;
        }
        if n == 0 {
            // End of input on this one (a hung-up line): ask on the others.
            cons.remove(i);
            if cons.is_empty() {
                return Err("every console closed".into());
            }
            continue;
        }
        buf.truncate(n as usize);
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        break buf;
    };
    for c in &mut cons {
        let _ = writeln!(c.file);
        let _ = c.file.flush();
    }
    Ok(answer)
}
