use std::process::ExitCode;

fn main() -> ExitCode {
    // The kernel starts /init as PID 1 with no subcommand: that is the boot.
    if std::process::id() == 1 {
        lifeboat::pid1::main();
    }
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`lifeboat state list | head`) instead of failing to print.
    // SAFETY: restoring the default disposition of one signal before any thread.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    lifeboat::cli::run(&refs)
}
