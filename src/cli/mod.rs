//! The command line: argh definitions and dispatch. Each subcommand module turns a
//! library result into text for people or JSON for programs; nothing below `cli`
//! prints.

pub mod boot;
pub mod disk;
pub mod firmware;
pub mod initrd;
pub mod state;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use crate::error::Error;
use crate::json::Json;

#[derive(FromArgs, Debug)]
/// lifeboat: transactions, boot entries and rescue for atomic Linux systems.
pub struct Cli {
    /// the system root to work on (default /)
    #[argh(option, default = "PathBuf::from(\"/\")")]
    pub root: PathBuf,
    /// print machine-readable JSON
    #[argh(switch)]
    pub json: bool,
    /// the ESP: a mount point, a partition, or a whole disk (image or device)
    #[argh(option)]
    pub esp: Option<String>,
    /// $BOOT (XBOOTLDR), when not the ESP or found on the ESP's disk
    #[argh(option)]
    pub boot: Option<String>,
    /// efivarfs directory (default /sys/firmware/efi/efivars)
    #[argh(option)]
    pub efivars: Option<PathBuf>,
    #[argh(subcommand)]
    pub cmd: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    State(state::StateCmd),
    Disk(disk::DiskCmd),
    Boot(boot::BootCmd),
    Verify(verify::VerifyCmd),
    Repair(verify::RepairCmd),
    Initrd(initrd::InitrdCmd),
    Firmware(firmware::FirmwareCmd),
    Shell(ShellCmd),
    Init(InitCmd),
    InitrdHook(InitrdHookCmd),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "initrd-hook")]
/// in a systemd initrd (dracut): roll back / repair the root mounted at --root
/// (default /sysroot) as the kernel command line asks, then let systemd switch root
pub struct InitrdHookCmd {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "shell")]
/// the rescue shell (what PID 1 opens when the boot cannot go on)
pub struct ShellCmd {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "init")]
/// run as the initrd's PID 1 (what /init does)
pub struct InitCmd {}

/// How results reach the user.
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Prints a human line (suppressed in JSON mode).
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json {
            println!("{}", s.as_ref());
        }
    }

    /// A note for the user on stderr (always, JSON mode included).
    pub fn note(&self, s: impl AsRef<str>) {
        eprintln!("lifeboat: {}", s.as_ref());
    }

    pub fn json(&self, j: &Json) {
        if self.json {
            println!("{j}");
        }
    }
}

/// Exit status for failures that are not more specific.
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 64;

pub fn run(args: &[&str]) -> ExitCode {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (*c, r),
        None => ("lifeboat", &[][..]),
    };
    let cli = match Cli::from_args(&[cmd], rest) {
        Ok(c) => c,
        Err(e) => {
            if e.status.is_ok() {
                println!("{}", e.output);
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", e.output);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let out = Out { json: cli.json };
    let args = crate::bootsync::BootArgs { esp: cli.esp.clone(), boot: cli.boot.clone(), efivars: cli.efivars.clone() };
    let r = match cli.cmd {
        Command::State(c) => state::run(&cli.root, c, &out, &args),
        Command::Disk(c) => disk::run(c, &out),
        Command::Verify(c) => match verify::verify(&cli.root, &c, &out) {
            Ok(code) => Ok(code),
            Err(e) => {
                report(&out, &e);
                return ExitCode::from(verify::EXIT_CANNOT_CHECK);
            }
        },
        Command::Repair(c) => match verify::repair(&cli.root, &c, &out) {
            Ok(code) => Ok(code),
            Err(e) => {
                report(&out, &e);
                return ExitCode::from(verify::EXIT_CANNOT_CHECK);
            }
        },
        Command::Initrd(c) => initrd::run(c, &out),
        Command::Firmware(c) => firmware::run(&cli.root, &args, c, &out),
        Command::Shell(_) => {
            let ctx = crate::shell::ShellCtx {
                root: cli.root.clone(),
                pid1: false,
                esp: cli.esp.clone(),
                cmdline: crate::pid1::cmdline::KernelCmdline::parse(
                    &std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
                ),
            };
            crate::shell::Shell::new(ctx).run();
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(_) => crate::pid1::main(),
        Command::InitrdHook(_) => {
            let root = if cli.root == std::path::Path::new("/") {
                PathBuf::from(crate::pid1::SYSROOT)
            } else {
                cli.root.clone()
            };
            match crate::pid1::initrd_hook(&root) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(Error::Refused(e)),
            }
        }
        Command::Boot(c) => boot::run(&boot::Ctx { root: &cli.root, args: &args, out: &out }, c),
    };
    match r {
        Ok(code) => code,
        Err(e) => report(&out, &e),
    }
}

/// Prints an error (as JSON too when asked) and returns the failure status.
pub fn report(out: &Out, e: &Error) -> ExitCode {
    if out.json {
        println!("{}", Json::obj().with("error", e.to_string()));
    }
    eprintln!("lifeboat: error: {e}");
    ExitCode::from(EXIT_FAIL)
}
