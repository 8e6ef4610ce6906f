//! Loading the initrd's kernel modules the way udev and modprobe would: every
//! device's `modalias` under `/sys/devices` is matched against the aliases in the
//! initrd's module index, and the matching modules are loaded with their
//! dependencies and soft dependencies, each once. Devices that appear later (a
//! disk behind the controller just loaded, a USB stick) are seen through the
//! kernel's uevent socket and by walking sysfs again after each round of loads.
//! The root filesystem's module is loaded by its type before the mount. A module
//! that will not load is reported by name and errno; the boot goes on.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use lifeboat_initrd::modules::{BootIndex, BOOT_INDEX};
use nix::errno::Errno;
use nix::kmod::ModuleInitFlags;

/// `MODULE_INIT_COMPRESSED_FILE` of `<linux/module.h>`: the kernel decompresses.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// The modules of the initrd and what happened to them.
pub struct ModuleLoader {
    index: BootIndex,
    /// Loaded (or found already in the kernel), or failed: never tried twice.
    done: HashSet<String>,
    /// Modaliases already matched.
    seen: HashSet<String>,
    /// The kernel's uevent socket, when it could be opened.
    uevents: Option<OwnedFd>,
    /// Lines for the console.
    pub notes: Vec<String>,
    pub loaded: usize,
}

impl ModuleLoader {
    /// The loader of the initrd at `/`, or `None` when it carries no modules.
    pub fn open() -> Option<ModuleLoader> {
        let text = std::fs::read(Path::new("/").join(BOOT_INDEX)).ok()?;
        let index = BootIndex::parse(&String::from_utf8_lossy(&text));
        // Listen before the first walk of sysfs, so no device added in between
        // goes unseen.
        let uevents = open_uevents();
        Some(ModuleLoader { index, done: HashSet::new(), seen: HashSet::new(), uevents, notes: Vec::new(), loaded: 0 })
    }

    /// Loads `name` with what it needs first; reports failures in `notes`.
    pub fn load(&mut self, name: &str) {
        for m in self.index.load_order(name) {
            if !self.done.insert(m.clone()) {
                continue;
            }
            let Some(bm) = self.index.modules.get(&m) else { continue };
            let path = Path::new("/").join(&bm.path);
            let flags = if bm.compressed { MODULE_INIT_COMPRESSED_FILE } else { 0 };
            let r = std::fs::File::open(&path).map_err(|e| e.to_string()).and_then(|f| {
                match nix::kmod::finit_module(&f, c"", ModuleInitFlags::from_bits_retain(flags)) {
                    Ok(()) => Ok(true),
                    Err(Errno::EEXIST) => Ok(false),
                    Err(e) => Err(format!("{} ({e:?})", e.desc())),
                }
            });
            match r {
                Ok(true) => self.loaded += 1,
                Ok(false) => {}
                Err(e) => self.notes.push(format!("module {m} did not load: {e}; going on without it")),
            }
        }
    }

    /// Loads the modules asked for at every boot (named when the initrd was built).
    pub fn load_always(&mut self) {
        for m in self.index.always.clone() {
            self.load(&m);
        }
    }

    /// Loads what the devices present now ask for; returns how many modules
    /// were loaded. Repeats while loads make new devices appear.
    pub fn coldplug(&mut self) -> usize {
        let before = self.loaded;
        for _ in 0..8 {
            let mut aliases = Vec::new();
            walk_modaliases(Path::new("/sys/devices"), 0, &mut aliases);
            let n = self.loaded;
            for a in aliases {
                self.match_alias(&a);
            }
            if self.loaded == n {
                break;
            }
        }
        self.loaded - before
    }

    fn match_alias(&mut self, alias: &str) {
        if !self.seen.insert(alias.to_owned()) {
            return;
        }
        let ms: Vec<String> = self.index.for_modalias(alias).into_iter().map(str::to_owned).collect();
        for m in ms {
            self.load(&m);
        }
    }

    /// Waits up to `wait` for new devices and loads what they ask for; returns
    /// whether anything was loaded.
    pub fn poll(&mut self, wait: Duration) -> bool {
        let before = self.loaded;
        let mut aliases = Vec::new();
        match &self.uevents {
            Some(fd) => {
                let mut pfd = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
                let ms = wait.as_millis().min(u16::MAX as u128) as u16;
                if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)).unwrap_or(0) > 0 {
                    drain_uevents(fd, &mut aliases);
                }
            }
            None => std::thread::sleep(wait),
        }
        for a in aliases {
            self.match_alias(&a);
        }
        // Events may have come before the socket existed or been dropped when
        // its buffer was full: a walk of sysfs catches up.
        if self.loaded > before || self.uevents.is_none() {
            self.coldplug();
        }
        self.loaded > before
    }

    /// Loads the module of filesystem type `fstype` (`fs-<type>` alias or the
    /// module of that name).
    pub fn load_filesystem(&mut self, fstype: &str) {
        let by_alias: Vec<String> =
            self.index.for_modalias(&format!("fs-{fstype}")).into_iter().map(str::to_owned).collect();
        if by_alias.is_empty() {
            if self.index.modules.contains_key(fstype) {
                self.load(fstype);
            }
        } else {
            for m in by_alias {
                self.load(&m);
            }
        }
    }
}

/// Every `modalias` below `dir` (sysfs devices), not following symlinks.
fn walk_modaliases(dir: &Path, depth: usize, out: &mut Vec<String>) {
    if depth > 32 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        if ft.is_dir() {
            walk_modaliases(&e.path(), depth + 1, out);
        } else if ft.is_file() && name == "modalias" {
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                let s = s.trim();
                if !s.is_empty() {
                    out.push(s.to_owned());
                }
            }
        }
    }
}

fn open_uevents() -> Option<OwnedFd> {
    use nix::sys::socket::{bind, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .ok()?;
    // Group 1: the kernel's own events (udev's are group 2; there is no udev here).
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).ok()?;
    Some(fd)
}

/// Reads every pending uevent; collects the `MODALIAS=` of "add" events.
fn drain_uevents(fd: &OwnedFd, out: &mut Vec<String>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let msg = &buf[..n];
                let mut parts = msg.split(|&b| b == 0);
                let head = parts.next().unwrap_or_default();
                if !head.starts_with(b"add@") && !head.starts_with(b"bind@") {
                    continue;
                }
                for kv in parts {
                    if let Some(a) = kv.strip_prefix(b"MODALIAS=") {
                        out.push(String::from_utf8_lossy(a).into_owned());
                    }
                }
            }
        }
    }
}
