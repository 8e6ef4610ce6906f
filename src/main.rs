//! The `lifeboat` binary: PID 1 when the kernel starts it as `/init`, otherwise
//! the command line. Only dispatch lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use lifeboat::cli::{self, Command};

fn main() -> ExitCode {
    // The kernel starts /init as PID 1 with no subcommand: that is the boot.
    if std::process::id() == 1 {
        lifeboat::pid1::main();
    }
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`lifeboat state list | head`) instead of failing to print.
    // SAFETY: restoring the default disposition of one signal before any thread.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    let mut args = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(bad) => {
                eprintln!("lifeboat: argument {bad:?} is not valid UTF-8");
                return ExitCode::from(cli::EXIT_USAGE);
            }
        }
    }
    let parsed = match cli::parse(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !cli::only_reads(&parsed.cmd) {
        cli::keep_going_on_epipe();
    }
    match &parsed.cmd {
        Command::Shell(_) => {
            let ctx = lifeboat::shell::ShellCtx {
                root: parsed.root.clone(),
                pid1: false,
                esp: parsed.esp.clone(),
                cmdline: lifeboat::cmdline::KernelCmdline::from_proc(),
            };
            lifeboat::shell::Shell::new(ctx).run();
            ExitCode::SUCCESS
        }
        Command::Init(_) => lifeboat::pid1::main(),
        Command::InitrdHook(_) => {
            let root = if parsed.root == std::path::Path::new("/") {
                PathBuf::from(lifeboat::pid1::SYSROOT)
            } else {
                parsed.root.clone()
            };
            match lifeboat::pid1::initrd_hook(&root) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lifeboat: error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => cli::run(parsed),
    }
}
