//! The rescue shell: a line-oriented console that needs nothing but this binary —
//! no `/usr`, no libc on the system, no other program. PID 1 opens it whenever the
//! boot cannot go on; `lifeboat shell` opens it on a running system. Output is
//! plain text that reads well on a serial console.

use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::bootsync::BootArgs;
use crate::cli::Out;
use crate::cmdline::KernelCmdline;
use lifeboat_esp::blockdev::{probe_fs, SysBlock};

/// What the shell works on.
pub struct ShellCtx {
    /// The system root (`/sysroot` in PID 1).
    pub root: PathBuf,
    pub pid1: bool,
    /// A boot disk or ESP spec for `entries` and `set-default`.
    pub esp: Option<String>,
    pub cmdline: KernelCmdline,
}

pub enum ShellExit {
    /// `continue`: resume the boot (PID 1) or leave the shell.
    Continue,
    /// `continue --force`: resume without the check that the real init can run.
    ContinueForce,
    /// End of input or `exit` outside PID 1.
    Quit,
}

pub struct Shell {
    ctx: ShellCtx,
}

const HELP: &str = "\
commands:
  help                 this list
  states               transactions in the state index (active, archived)
  activate ID          make transaction ID the active /usr
  verify [--full]      compare the active /usr with its transaction
  repair [--full]      restore the active /usr from the store
  entries              boot entries on the ESP / $BOOT
  set-default ID       boot transaction ID by default
  ls [PATH]            list a directory
  cat PATH             print a file
  mount DEV DIR [TYPE] mount a filesystem (type detected when omitted)
  umount DIR           unmount
  disks                block devices, partitions, filesystems
  dmesg                kernel messages
  cmdline              the kernel command line
  unlock [DEV [NAME]]  open a LUKS container (every one found) and its LVM volumes
  resume [DEV]         restore the hibernated system (its image on DEV)
  discard-hibernation [DEV]  discard a hibernation image (what was open is lost)
  continue [--force]   resume the boot (--force: skip the check of the real init)
  reboot | poweroff    restart or stop the machine";

fn p(s: impl AsRef<str>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", s.as_ref());
    let _ = o.flush();
}

impl Shell {
    pub fn new(ctx: ShellCtx) -> Self {
        Shell { ctx }
    }

    /// Reads and runs commands until `continue` (or end of input).
    pub fn run(&mut self) -> ShellExit {
        let stdin = std::io::stdin();
        let mut line = String::new();
        let mut eofs = 0;
        loop {
            {
                let mut o = std::io::stdout().lock();
                let _ = write!(o, "lifeboat> ");
                let _ = o.flush();
            }
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) => {
                    if !self.ctx.pid1 {
                        return ShellExit::Quit;
                    }
                    // PID 1 must not exit: wait for a console to appear.
                    eofs += 1;
                    std::thread::sleep(std::time::Duration::from_millis(if eofs > 10 { 2000 } else { 200 }));
                    continue;
                }
                Ok(_) => eofs = 0,
                Err(e) => {
                    p(format!("error reading the console: {e}"));
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some((&cmd, args)) = words.split_first() else {
                continue;
            };
            match cmd {
                "continue" if args.contains(&"--force") => return ShellExit::ContinueForce,
                "continue" | "exit" | "quit" => return ShellExit::Continue,
                c => {
                    if let Err(e) = self.exec(c, args) {
                        p(format!("error: {e}"));
                    }
                }
            }
        }
    }

    fn boot_ctx(&self) -> BootArgs {
        BootArgs { esp: self.ctx.esp.clone(), boot: None, efivars: None }
    }

    fn exec(&mut self, cmd: &str, args: &[&str]) -> Result<(), String> {
        let root = self.ctx.root.clone();
        let out = Out::new(false);
        let need_arg = |n: usize, usage: &str| {
            if args.len() < n {
                Err(format!("usage: {usage}"))
            } else {
                Ok(())
            }
        };
        match cmd {
            "help" | "?" => p(HELP),
            "states" => {
                crate::cli::state::list(&root, &out).map_err(|e| e.to_string())?;
            }
            "activate" => {
                need_arg(1, "activate ID")?;
                let id: u64 = args[0].parse().map_err(|_| format!("{} is not a transaction id", args[0]))?;
                let r = lifeboat_state::txn::activate(&root, id, Default::default()).map_err(|e| e.to_string())?;
                for n in r.notes {
                    p(n);
                }
                p(format!("transaction {id} is active"));
                // As `state activate`: a default chosen with set-default gives way.
                if let Ok(true) = lifeboat_state::root::SystemRoot::open(&root)
                    .map_err(|e| e.to_string())
                    .and_then(|sr| crate::pin::clear(&sr).map_err(|e| e.to_string()))
                {
                    p("the default chosen with `boot set-default` gives way to it");
                }
            }
            "verify" => {
                let full = args.contains(&"--full");
                let c = crate::cli::verify::VerifyCmd { state: None, full, store: false };
                crate::cli::verify::verify(&root, &c, &out).map_err(|e| e.to_string())?;
            }
            "repair" => {
                let c = crate::cli::verify::RepairCmd {
                    state: None,
                    prune_extra: args.contains(&"--prune-extra"),
                    full: args.contains(&"--full"),
                };
                crate::cli::verify::repair(&root, &c, &out).map_err(|e| e.to_string())?;
            }
            "entries" => {
                let a = self.boot_ctx();
                let ctx = crate::cli::boot::Ctx { root: &root, args: &a, out: &out };
                crate::cli::boot::list(&ctx).map_err(|e| e.to_string())?;
            }
            "set-default" => {
                need_arg(1, "set-default ID")?;
                let a = self.boot_ctx();
                let ctx = crate::cli::boot::Ctx { root: &root, args: &a, out: &out };
                crate::cli::boot::set_default(&ctx, args[0]).map_err(|e| e.to_string())?;
            }
            "ls" => {
                let path = args.first().copied().unwrap_or(".");
                let mut v: Vec<_> = std::fs::read_dir(path).map_err(|e| format!("{path}: {e}"))?.flatten().collect();
                v.sort_by_key(|e| e.file_name());
                for e in v {
                    let m = e.path().symlink_metadata();
                    let (kind, size) = match &m {
                        Ok(m) if m.is_dir() => ("d", 0),
                        Ok(m) if m.file_type().is_symlink() => ("l", 0),
                        Ok(m) => ("-", m.len()),
                        Err(_) => ("?", 0),
                    };
                    let name = lifeboat_fs::shown::shown(e.file_name().as_bytes());
                    let tail = if kind == "l" {
                        format!(
                            " -> {}",
                            std::fs::read_link(e.path())
                                .map(|t| lifeboat_fs::shown::shown_path(&t))
                                .unwrap_or_default()
                        )
                    } else {
                        String::new()
                    };
                    p(format!("{kind} {size:>10} {name}{tail}"));
                }
            }
            "cat" => {
                need_arg(1, "cat PATH")?;
                // Through the one door: a FIFO or a device named by mistake is
                // refused, not waited on (this may be the only console).
                let mut f = lifeboat_fs::foreign::open_named(Path::new(args[0]))
                    .map_err(|e| format!("{}: {e}", lifeboat_fs::shown::shown_str(args[0])))?;
                let mut b = Vec::new();
                (&mut f).take(1 << 20).read_to_end(&mut b).map_err(|e| format!("{}: {e}", args[0]))?;
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&b);
                if !b.ends_with(b"\n") {
                    let _ = o.write_all(b"\n");
                }
                let _ = o.flush();
            }
            "mount" => {
                need_arg(2, "mount DEV DIR [TYPE]")?;
                let fstype = match args.get(2) {
                    Some(t) => t.to_string(),
                    None => probe_fs(Path::new(args[0]))
                        .map(|f| f.fstype.to_owned())
                        .ok_or_else(|| format!("{}: unknown filesystem; give TYPE", args[0]))?,
                };
                let _ = std::fs::create_dir_all(args[1]);
                nix::mount::mount(
                    Some(args[0]),
                    args[1],
                    Some(fstype.as_str()),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(|e| format!("mount {} on {}: {e}", args[0], args[1]))?;
                p(format!("mounted {} ({fstype}) on {}", args[0], args[1]));
            }
            "umount" => {
                need_arg(1, "umount DIR")?;
                nix::mount::umount(args[0]).map_err(|e| format!("umount {}: {e}", args[0]))?;
            }
            "disks" => {
                let devs = SysBlock::default().scan();
                if devs.is_empty() {
                    p("no block devices (is the disk driver loaded?)");
                }
                for d in devs {
                    let indent = if d.parent.is_some() { "  " } else { "" };
                    p(format!(
                        "{indent}{:<12} {:>10}  {:<12} {:<6} {}{}",
                        d.name,
                        crate::cli::disk::human(d.size),
                        d.part_kind.map(|k| k.as_str()).unwrap_or(if d.parent.is_some() { "-" } else { "disk" }),
                        d.fstype.unwrap_or("-"),
                        d.partuuid.map(|u| format!("PARTUUID={u} ")).unwrap_or_default(),
                        d.uuid.map(|u| format!("UUID={u}")).unwrap_or_default()
                    ));
                }
            }
            "dmesg" => {
                for r in crate::kmsg::read(7, usize::MAX) {
                    p(r.to_string());
                }
            }
            "resume" => {
                if !self.ctx.pid1 {
                    return Err("resume works only as PID 1 (in the initrd)".into());
                }
                p(crate::pid1::resume::shell_resume(args, &self.ctx.cmdline)?);
            }
            "unlock" => p(crate::pid1::crypt::shell_unlock(args, &self.ctx.cmdline)?),
            "discard-hibernation" => p(crate::pid1::resume::shell_discard(args, &self.ctx.cmdline)?),
            "cmdline" => {
                p(std::fs::read_to_string("/proc/cmdline").unwrap_or_else(|_| self.ctx.cmdline.words.join(" ")))
            }
            "reboot" | "poweroff" => {
                if !self.ctx.pid1 {
                    return Err(format!("{cmd} works only as PID 1 (in the initrd); use your init system"));
                }
                nix::unistd::sync();
                let mode = if cmd == "reboot" {
                    nix::sys::reboot::RebootMode::RB_AUTOBOOT
                } else {
                    nix::sys::reboot::RebootMode::RB_POWER_OFF
                };
                nix::sys::reboot::reboot(mode).map_err(|e| format!("{cmd}: {e}"))?;
            }
            other => return Err(format!("unknown command {other:?}; `help` lists commands")),
        }
        Ok(())
    }
}
