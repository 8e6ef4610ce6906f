//! lifeboat as PID 1 of the initrd. A boot goes through phases, each in its own
//! module: [`devices`] (API filesystems) and [`modload`] (kernel modules the
//! hardware asks for), [`root`] (find and mount
//! the root), [`rollback`] (activate the chosen transaction, verify or repair),
//! the check that the real init can run ([`execcheck`] with its [`elf`] reader),
//! and [`switchroot`]; [`supervise`] runs them in a forked worker and watches it
//! with [`progress`]. Any failure, named by its [`Phase`], and any crash of the
//! worker land in the rescue shell on the console; PID 1 never exits.

pub mod ask;
pub mod crypt;
pub mod devices;
pub mod elf;
pub mod execcheck;
pub mod keymap;
pub mod modload;
pub mod progress;
pub mod resume;
pub mod rollback;
pub mod root;
pub mod supervise;
pub mod switchroot;

use std::fmt;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::cmdline::KernelCmdline;
use crate::shell::{Shell, ShellCtx, ShellExit};
use devices::none;

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

/// The phases of a boot, as a failure names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// API filesystems and kernel modules.
    Devices,
    /// Finding and mounting the root.
    Root,
    /// `resume=` and hibernation images.
    Hibernation,
    /// Activating the transaction the boot entry names.
    Rollback,
    /// `lifeboat.verify` / `lifeboat.repair`.
    Checks,
    /// Whether the real init can run; `lifeboat.shell`.
    Init,
    /// `switch_root` and the exec of the real init.
    Switch,
    /// PID 1's watch over the worker.
    Supervision,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Devices => "devices",
            Phase::Root => "root",
            Phase::Hibernation => "hibernation",
            Phase::Rollback => "rollback",
            Phase::Checks => "checks",
            Phase::Init => "init",
            Phase::Switch => "switch root",
            Phase::Supervision => "supervision",
        }
    }
}

/// Why a boot stopped: the phase, what happened, and the library error behind it.
#[derive(Debug)]
pub struct BootError {
    pub phase: Phase,
    pub why: String,
    pub source: Option<crate::error::Error>,
}

impl BootError {
    pub fn new(phase: Phase, why: impl Into<String>) -> Self {
        BootError { phase, why: why.into(), source: None }
    }

    pub fn from_error(phase: Phase, e: crate::error::Error) -> Self {
        BootError { phase, why: e.to_string(), source: Some(e) }
    }

    /// Puts what was being done in front of the message.
    pub fn context(mut self, doing: impl fmt::Display) -> Self {
        self.why = format!("{doing}: {}", self.why);
        self
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.phase.as_str(), self.why)
    }
}

impl std::error::Error for BootError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
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
    /// The initrd's kernel modules, when it carries any.
    modules: Option<modload::ModuleLoader>,
    /// What the command line says about LUKS containers.
    luks: crypt::LuksConfig,
    /// LUKS containers opened (by UUID), and those that would not open.
    opened: std::collections::BTreeSet<String>,
    failed_luks: std::collections::BTreeSet<String>,
    /// LVM volumes activated (by device-mapper name).
    activated: std::collections::BTreeSet<String>,
    /// Notes already told the console (the root wait repeats its work).
    said: std::collections::BTreeSet<String>,
    /// The last thing that kept a volume group from coming up, for the message
    /// when the root does not appear.
    stack_problem: Option<String>,
}

impl Boot {
    pub fn new(cmdline: KernelCmdline) -> Self {
        Boot {
            luks: crypt::LuksConfig::from_cmdline(&cmdline),
            cmdline,
            root_dev: None,
            rollback_done: false,
            check_done: false,
            shell_done: false,
            sysroot: PathBuf::from(SYSROOT),
            force: false,
            started: uptime(),
            modules: None,
            opened: Default::default(),
            failed_luks: Default::default(),
            activated: Default::default(),
            said: Default::default(),
            stack_problem: None,
        }
    }

    /// Tells the console what module loading had to say.
    fn say_module_notes(&mut self) {
        if let Some(m) = self.modules.as_mut() {
            for n in m.notes.drain(..) {
                say(n);
            }
        }
    }

    /// Everything before the switch; `Ok` means the new root is ready for it.
    pub fn prepare(&mut self) -> Result<(), BootError> {
        progress::step("looking for the root device");
        lifeboat_state::failpoint::hit("pid1-prepare");
        let dev = self.find_root()?;
        if !devices::is_mountpoint(Path::new(SYSROOT)) {
            progress::step("looking for a hibernation image");
            self.hibernation()?;
        }
        self.mount_root(&dev)?;
        self.rollback()?;
        self.checks()?;
        let init = init_path(&self.cmdline);
        progress::step(&format!("checking that {} can run", init.display()));
        let what = match execcheck::check_init(Path::new(SYSROOT), &init) {
            Ok(w) => w,
            Err(e) if self.force => format!("unchecked: {e}"),
            Err(e) => return Err(BootError::new(Phase::Init, e)),
        };
        if self.cmdline.flag("lifeboat.shell") && !self.shell_done {
            self.shell_done = true;
            return Err(BootError::new(
                Phase::Init,
                "lifeboat.shell: stopping before switching root as asked; `continue` boots",
            ));
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
pub fn initrd_hook(sysroot: &Path) -> Result<(), BootError> {
    let mut boot = Boot::new(KernelCmdline::from_proc());
    boot.sysroot = sysroot.to_path_buf();
    let root_err = |why: String| BootError::new(Phase::Root, why);
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| root_err(format!("/proc/self/mountinfo: {e}")))?;
    let mounts = lifeboat_esp::discover::parse_mountinfo(&text);
    let m = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == sysroot)
        .ok_or_else(|| root_err(format!("{} is not a mount point", sysroot.display())))?;
    if m.source.starts_with("/dev/") {
        boot.root_dev = Some(PathBuf::from(&m.source));
    }
    let st =
        nix::sys::statvfs::statvfs(sysroot).map_err(|e| root_err(format!("statvfs {}: {e}", sysroot.display())))?;
    let was_ro = st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    if was_ro {
        mount(none(), sysroot, none(), MsFlags::MS_REMOUNT, none())
            .map_err(|e| root_err(format!("remount {} read-write: {e}", sysroot.display())))?;
    }
    let r = boot.rollback().and_then(|_| boot.checks());
    if was_ro {
        if let Ok(f) = std::fs::File::open(sysroot) {
            let _ = nix::unistd::syncfs(f);
        }
        mount(none(), sysroot, none(), MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, none())
            .map_err(|e| root_err(format!("remount {} read-only: {e}", sysroot.display())))?;
    }
    r
}

fn init_path(c: &KernelCmdline) -> PathBuf {
    PathBuf::from(c.get("init").unwrap_or("/sbin/init"))
}

/// The worker: prepares the boot, opening the rescue shell on every failure, and
/// returns (as its exit status) 0 when PID 1 may switch root.
fn worker(shell_reason: Option<BootError>) -> i32 {
    progress::step("mounting /proc, /sys, /dev and /run");
    for n in devices::mount_api() {
        say(n);
    }
    let mut boot = Boot::new(KernelCmdline::from_proc());
    progress::step("loading the kernel modules the hardware asks for");
    boot.modules = modload::ModuleLoader::open();
    if let Some(m) = boot.modules.as_mut() {
        m.load_always();
        m.coldplug();
        say(format!("{} kernel modules loaded for the devices present", m.loaded));
    }
    boot.say_module_notes();
    progress::step("mounting efivarfs");
    devices::mount_efivarfs();
    // Before anything is asked: a passphrase is typed with the machine's layout.
    match keymap::load_initrd_keymap() {
        Ok(Some(n)) => say(n),
        Ok(None) => {}
        Err(e) => say(format!("{e}; the kernel's default (US) keyboard layout stays")),
    }
    let mut why = shell_reason;
    loop {
        if let Some(w) = why.take() {
            say(w.to_string());
            say("opening the rescue shell; `help` lists commands, `continue` resumes the boot");
            let sys = lifeboat_esp::blockdev::SysBlock::default();
            let ctx = ShellCtx {
                root: PathBuf::from(SYSROOT),
                pid1: true,
                esp: boot.root_dev.as_ref().and_then(|d| sys.disk_of_dev(d)).map(|d| d.display().to_string()),
                cmdline: boot.cmdline.clone(),
            };
            progress::step(progress::SHELL);
            let exit = Shell::new(ctx).run();
            progress::step("resuming the boot");
            match exit {
                exit @ (ShellExit::Continue | ShellExit::ContinueForce) => {
                    boot.force = matches!(exit, ShellExit::ContinueForce);
                    // A root mounted or unmounted by hand is found again.
                    if !devices::is_mountpoint(Path::new(SYSROOT)) {
                        boot.root_dev = None;
                    }
                }
                ShellExit::Quit => {}
            }
        }
        // Release builds abort on panic: the worker dies and the supervisor starts
        // a new one in the shell. Where panics unwind (tests, debug builds), the
        // same worker opens it.
        match catch_unwind(AssertUnwindSafe(|| boot.prepare())) {
            Ok(Ok(())) => return 0,
            Ok(Err(e)) => why = Some(e),
            Err(_) => why = Some(BootError::new(Phase::Supervision, "internal error (see above)")),
        }
    }
}

/// PID 1's entry point: keeps the console, then [`supervise::run`]s the boot.
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
    supervise::run()
}
