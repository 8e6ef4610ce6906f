//! lifeboat as PID 1 of the initrd: mount the API filesystems, load the bundled
//! modules, find and mount the root, roll back to the transaction chosen in the
//! boot menu, verify or repair `/usr` when asked, check that the real init can run,
//! and switch root. Any failure, and any panic, lands in the rescue shell on the
//! console; PID 1 never exits.

pub mod cmdline;
pub mod execcheck;
pub mod probe;
pub mod progress;
pub mod switchroot;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::shell::{Shell, ShellCtx, ShellExit};
use cmdline::KernelCmdline;
use probe::{Probe, RootSpec};

/// Where the real root is mounted.
pub const SYSROOT: &str = "/sysroot";

/// Prints a line on the console.
pub fn say(msg: impl AsRef<str>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "lifeboat: {}", msg.as_ref());
    let _ = o.flush();
}

/// Seconds since boot (CLOCK_BOOTTIME), for the timings PID 1 reports.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// State of the boot, kept across visits to the rescue shell so `continue` resumes.
pub struct Boot {
    pub cmdline: KernelCmdline,
    pub root_dev: Option<PathBuf>,
    rollback_done: bool,
    check_done: bool,
    shell_done: bool,
    /// Where the real root is (or will be) mounted.
    sysroot: PathBuf,
    /// Set by `continue --force`: exec the real init even if it looks unrunnable.
    force: bool,
    started: f64,
}

fn none() -> Option<&'static str> {
    None
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

fn mount_api() -> Vec<String> {
    let mut notes = Vec::new();
    let fs: [(&str, &str, MsFlags, Option<&str>); 4] = [
        ("proc", "/proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
        ("sysfs", "/sys", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("tmpfs", "/run", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
    ];
    for (t, dir, flags, data) in fs {
        let _ = std::fs::create_dir_all(dir);
        if is_mountpoint(Path::new(dir)) {
            continue;
        }
        if let Err(e) = mount(Some(t), dir, Some(t), flags, data) {
            notes.push(format!("mount {t} on {dir}: {e}"));
        }
    }
    notes
}

/// Loads the modules bundled in the initrd, in their recorded order.
fn load_modules() -> Vec<String> {
    let mut notes = Vec::new();
    let list = match std::fs::read_to_string(Path::new("/").join(lifeboat_initrd::LOAD_LIST)) {
        Ok(l) => l,
        Err(_) => return notes,
    };
    for m in list.lines().filter(|l| !l.trim().is_empty()) {
        let p = Path::new("/").join(m);
        let r = std::fs::File::open(&p).map_err(|e| e.to_string()).and_then(|f| {
            match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(e) = r {
            notes.push(format!("module {}: {e}", p.display()));
        }
    }
    notes
}

fn mount_efivarfs() {
    let dir = Path::new("/sys/firmware/efi/efivars");
    if dir.is_dir() && !is_mountpoint(dir) {
        let _ = mount(
            Some("efivarfs"),
            dir,
            Some("efivarfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none(),
        );
    }
}

/// `LoaderDevicePartUUID`: the partition systemd-boot was started from.
pub fn loader_partuuid() -> Option<String> {
    let v = lifeboat_boot::efivars::EfiVars::open(Path::new(lifeboat_boot::efivars::DEFAULT_DIR)).ok()?;
    v.read_string("LoaderDevicePartUUID", lifeboat_boot::efivars::LOADER_GUID)
        .ok()
        .flatten()
        .map(|s| s.to_ascii_lowercase())
}

impl Boot {
    pub fn new(cmdline: KernelCmdline) -> Self {
        Boot {
            cmdline,
            root_dev: None,
            rollback_done: false,
            check_done: false,
            shell_done: false,
            sysroot: PathBuf::from(SYSROOT),
            force: false,
            started: uptime(),
        }
    }

    fn find_root(&mut self) -> Result<PathBuf, String> {
        if let Some(d) = &self.root_dev {
            return Ok(d.clone());
        }
        let spec = RootSpec::parse(self.cmdline.get("root"));
        let wait = self.cmdline.get("lifeboat.rootwait").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30);
        let probe = Probe::default();
        let boot_part = loader_partuuid();
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut announced = false;
        loop {
            match probe.find_root(&spec, boot_part.as_deref()) {
                Ok(Some(d)) => {
                    self.root_dev = Some(d.clone());
                    return Ok(d);
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = probe
                    .scan()
                    .iter()
                    .map(|d| {
                        let mut s = d.name.clone();
                        if let Some(k) = d.part_kind {
                            s.push_str(&format!(" {}", k.as_str()));
                        }
                        if let Some(t) = d.fstype {
                            s.push_str(&format!(" {t}"));
                        }
                        if let Some(u) = &d.partuuid {
                            s.push_str(&format!(" PARTUUID={u}"));
                        }
                        s
                    })
                    .collect();
                let what = match &spec {
                    RootSpec::Discover => "a root-x86-64 partition (no root= given)".to_owned(),
                    s => format!("root={}", self.cmdline.get("root").unwrap_or(&format!("{s:?}"))),
                };
                return Err(format!(
                    "{what} did not appear within {wait} s; block devices seen: {}",
                    if seen.is_empty() { "none".into() } else { seen.join("; ") }
                ));
            }
            if !announced {
                say(format!("waiting up to {wait} s for the root device"));
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mount_root(&mut self, dev: &Path) -> Result<(), String> {
        let target = Path::new(SYSROOT);
        let _ = std::fs::create_dir_all(target);
        if is_mountpoint(target) {
            return Ok(());
        }
        let fstype = match self.cmdline.get("rootfstype") {
            Some(t) => t.to_owned(),
            None => probe::probe_fs(dev)
                .map(|(t, _)| t.to_owned())
                .ok_or_else(|| format!("{}: no filesystem lifeboat recognises (pass rootfstype=)", dev.display()))?,
        };
        let data = self.cmdline.get("rootflags");
        mount(Some(dev), target, Some(fstype.as_str()), MsFlags::empty(), data)
            .map_err(|e| format!("mount {} ({fstype}) on {SYSROOT}: {e}", dev.display()))?;
        say(format!("mounted {} ({fstype}) on {SYSROOT}", dev.display()));
        Ok(())
    }

    /// Rolls back to the transaction named on the command line.
    fn rollback(&mut self) -> Result<(), String> {
        if self.rollback_done {
            return Ok(());
        }
        self.rollback_done = true;
        let root = self.sysroot.clone();
        let root = root.as_path();
        if !root.join(".moss/lifeboat").is_dir() {
            say("the root holds no lifeboat state index; booting it as it is");
            return Ok(());
        }
        progress::step("opening the system root");
        let sr = crate::root::SystemRoot::open(root).map_err(|e| e.to_string())?;
        let active = sr.active_id();
        progress::step("reading the state index");
        let Some(req) = self.cmdline.tx() else {
            return Ok(());
        };
        let req = match req {
            Ok(r) => r,
            Err(v) => {
                say(format!("lifeboat.tx={v} is not a transaction id; booting the active transaction"));
                return Ok(());
            }
        };
        if Some(req) == active {
            say(format!("transaction {req} is active"));
            return Ok(());
        }
        let idx = sr.load_existing_index().map_err(|e| e.to_string())?;
        if let Some(f) = &idx.fallback {
            say(f);
        }
        if !idx.index.contains(req) {
            say(format!(
                "transaction {req} (named by the boot entry) is no longer retained: it was pruned; booting the active transaction {}",
                active.map(|a| a.to_string()).unwrap_or_else(|| "(unknown)".into())
            ));
            return Ok(());
        }
        say(format!(
            "rolling back /usr: transaction {} -> {req}",
            active.map(|a| a.to_string()).unwrap_or_else(|| "(none)".into())
        ));
        progress::step(&format!("rolling back /usr to transaction {req}"));
        let r = crate::txn::activate(root, req).map_err(|e| format!("activating transaction {req}: {e}"))?;
        for n in r.notes {
            say(n);
        }
        if r.rebuilt {
            say(format!("transaction {req}'s tree was rebuilt from the store"));
        }
        say(format!("transaction {req} is now active"));
        // Keep booting it by default: the entry the user chose becomes the default.
        if let Some(dev) = &self.root_dev {
            progress::step("updating the default boot entry on the ESP");
            match crate::bootsync::set_default_for_disk(root, dev, req) {
                Ok(Some(p)) => say(format!("default boot entry is now {p}")),
                Ok(None) => {}
                Err(e) => say(format!(
                    "could not update the default boot entry ({e}); the next boot may pick another transaction"
                )),
            }
        }
        Ok(())
    }

    fn checks(&mut self) -> Result<(), String> {
        if self.check_done {
            return Ok(());
        }
        let root = self.sysroot.clone();
        let root = root.as_path();
        let has_index = root.join(".moss/lifeboat").is_dir();
        if has_index && self.cmdline.flag("lifeboat.repair") {
            say("repairing /usr from the store (lifeboat.repair)");
            progress::step("repairing /usr from the store");
            let r = crate::verify::repair_for_boot(root).map_err(|e| format!("repair: {e}"))?;
            say(r);
        } else if has_index && self.cmdline.flag("lifeboat.verify") {
            say("verifying /usr (lifeboat.verify)");
            progress::step("verifying /usr");
            let (clean, summary) = crate::verify::verify_for_boot(root).map_err(|e| format!("verify: {e}"))?;
            say(&summary);
            if !clean {
                return Err("/usr differs from its transaction; `repair` fixes it, `continue` boots anyway".into());
            }
        }
        self.check_done = true;
        Ok(())
    }

    /// The whole boot; returns only with the reason it stopped.
    /// Everything before the switch; `Ok` means the new root is ready for it.
    pub fn prepare(&mut self) -> Result<(), String> {
        progress::step("looking for the root device");
        crate::failpoint::hit("pid1-prepare");
        let dev = self.find_root()?;
        progress::step(&format!("mounting the root {}", dev.display()));
        self.mount_root(&dev)?;
        self.rollback()?;
        self.checks()?;
        let init = init_path(&self.cmdline);
        progress::step(&format!("checking that {} can run", init.display()));
        let what = match execcheck::check_init(Path::new(SYSROOT), &init) {
            Ok(w) => w,
            Err(e) if self.force => format!("unchecked: {e}"),
            Err(e) => return Err(e),
        };
        if self.cmdline.flag("lifeboat.shell") && !self.shell_done {
            self.shell_done = true;
            return Err("lifeboat.shell: stopping before switching root as asked; `continue` boots".into());
        }
        let now = uptime();
        say(format!(
            "starting {} ({what}) at {:.3} s after boot, {:.0} ms after lifeboat started",
            init.display(),
            now,
            (now - self.started) * 1000.0
        ));
        Ok(())
    }
}

/// The embedded mode for systemd-based initrds (dracut): after `sysroot.mount`,
/// before `initrd-root-fs.target`, do what PID 1 would do to the mounted root —
/// roll back to the entry's transaction, repair or verify when asked — and leave
/// the switch to systemd. The root is remounted read-write for the change and back.
pub fn initrd_hook(sysroot: &Path) -> Result<(), String> {
    let cmdline = read_cmdline();
    let mut boot = Boot::new(cmdline);
    boot.sysroot = sysroot.to_path_buf();
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mounts = lifeboat_esp::discover::parse_mountinfo(&text);
    let m = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == sysroot)
        .ok_or_else(|| format!("{} is not a mount point", sysroot.display()))?;
    if m.source.starts_with("/dev/") {
        boot.root_dev = Some(PathBuf::from(&m.source));
    }
    let st = nix::sys::statvfs::statvfs(sysroot).map_err(|e| format!("statvfs {}: {e}", sysroot.display()))?;
    let was_ro = st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    if was_ro {
        mount(none(), sysroot, none(), MsFlags::MS_REMOUNT, none())
            .map_err(|e| format!("remount {} read-write: {e}", sysroot.display()))?;
    }
    let r = boot.rollback().and_then(|_| boot.checks());
    if was_ro {
        let _ = nix::unistd::syncfs(std::fs::File::open(sysroot).map_err(|e| e.to_string())?);
        mount(none(), sysroot, none(), MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, none())
            .map_err(|e| format!("remount {} read-only: {e}", sysroot.display()))?;
    }
    r
}

fn init_path(c: &KernelCmdline) -> PathBuf {
    PathBuf::from(c.get("init").unwrap_or("/sbin/init"))
}

fn read_cmdline() -> KernelCmdline {
    KernelCmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

/// The worker: prepares the boot, opening the rescue shell on every failure, and
/// returns (as its exit status) 0 when PID 1 may switch root.
fn worker(shell_reason: Option<String>) -> i32 {
    progress::step("mounting /proc, /sys, /dev and /run");
    for n in mount_api() {
        say(n);
    }
    progress::step("loading the initrd's kernel modules");
    for n in load_modules() {
        say(n);
    }
    progress::step("mounting efivarfs");
    mount_efivarfs();
    let mut boot = Boot::new(read_cmdline());
    let mut why = shell_reason;
    loop {
        if let Some(w) = why.take() {
            say(&w);
            say("opening the rescue shell; `help` lists commands, `continue` resumes the boot");
            let ctx = ShellCtx {
                root: PathBuf::from(SYSROOT),
                pid1: true,
                esp: boot.root_dev.as_ref().and_then(|d| Probe::default().disk_of(d)).map(|d| d.display().to_string()),
                cmdline: boot.cmdline.clone(),
            };
            progress::step(progress::SHELL);
            let exit = Shell::new(ctx).run();
            progress::step("resuming the boot");
            match exit {
                exit @ (ShellExit::Continue | ShellExit::ContinueForce) => {
                    boot.force = matches!(exit, ShellExit::ContinueForce);
                    // A root mounted or unmounted by hand is found again.
                    if !is_mountpoint(Path::new(SYSROOT)) {
                        boot.root_dev = None;
                    }
                }
                ShellExit::Quit => {}
            }
        }
        match catch_unwind(AssertUnwindSafe(|| boot.prepare())) {
            Ok(Ok(())) => return 0,
            Ok(Err(msg)) => why = Some(msg),
            Err(_) => why = Some("internal error (see above)".to_owned()),
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

/// PID 1's entry point. PID 1 itself only supervises: a forked worker does the
/// work (and opens the rescue shell), so a crash there — a panic, an abort, a
/// segfault — costs a restart of the shell, not a kernel panic. PID 1 then switches
/// root itself, since the real init must be PID 1.
pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        say(format!("internal error: {info}"));
    }));
    // Keep the console's descriptors whatever happened before us.
    // SAFETY: F_GETFD on fd 1 only queries; a closed fd yields EBADF.
    let closed = unsafe { nix::libc::fcntl(std::io::stdout().as_raw_fd(), nix::libc::F_GETFD) } < 0;
    if closed {
        let _ = std::fs::create_dir_all("/dev");
        if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
            for fd in 0..3 {
                // SAFETY: dup2 onto 0..2 of an open descriptor we own.
                unsafe { nix::libc::dup2(f.as_raw_fd(), fd) };
            }
        }
    }
    say(format!("lifeboat {} (PID 1) started at {:.3} s", env!("CARGO_PKG_VERSION"), uptime()));
    // Why the next worker starts in the rescue shell; `None` on the first attempt.
    let mut shell_reason: Option<String> = None;
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
                    c => Err(format!("the boot stopped with status {c}")),
                }
            }
        };
        shell_reason = Some(match outcome {
            Ok(()) => {
                let cmdline = read_cmdline();
                if cmdline.read_only() {
                    let _ = mount(none(), SYSROOT, none(), MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, none());
                }
                let args: Vec<String> = std::env::args().skip(1).collect();
                let Err(e) = switchroot::switch_root(Path::new(SYSROOT), &init_path(&cmdline), &args);
                format!("switching root failed: {e}")
            }
            Err(why) => why,
        });
    }
}

/// Waits for the worker, reporting stalls; `Ok` when it has prepared the switch,
/// otherwise why it did not.
fn supervise(child: nix::unistd::Pid, mut watch: Option<progress::Watch>) -> Result<(), String> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        let flags = watch.as_ref().map(|_| WaitPidFlag::WNOHANG);
        match waitpid(child, flags) {
            Ok(WaitStatus::StillAlive) => {
                if watch.as_mut().map(|w| w.wait(Duration::from_secs(1))) == Some(progress::Tick::WantShell) {
                    return Err(stop_stuck_worker(child));
                }
            }
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, c)) => return Err(format!("the boot worker exited with status {c}")),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Err(format!("the boot worker was killed by {sig:?}")),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the boot worker: {e}")),
        }
    }
}
