use std::process::ExitCode;

fn main() -> ExitCode {
    // The kernel starts /init as PID 1 with no subcommand: that is the boot.
    if std::process::id() == 1 {
        lifeboat::pid1::main();
    }
    let args: Vec<String> = std::env::args().collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    lifeboat::cli::run(&refs)
}
