//! The command line: argh definitions and dispatch. Each subcommand module turns a
//! library result into text for people or JSON for programs; nothing below `cli`
//! prints.

pub mod boot;
pub mod disk;
pub mod firmware;
pub mod initrd;
pub mod output;
pub mod progress;
pub mod state;
pub mod usage;
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
    /// wait up to this many seconds for another lifeboat holding the root's
    /// lock, or another writer of the disk image (default 0: fail at once,
    /// exit 75; at most a year)
    #[argh(option, default = "0")]
    pub wait: u64,
    #[argh(subcommand)]
    pub cmd: Command,
}

// Parsed once per process and moved once: the size of the largest variant
// (initrd build's options) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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

/// Writes one line, and nothing more when the reader is gone: a command that
/// changes the root finishes what it started however its output is read
/// (`lifeboat state commit ... | head -1` must not stop between the index and
/// the boot entries).
fn say(w: &mut dyn std::io::Write, line: &str) {
    let _ = writeln!(w, "{line}");
}

/// For a command that changes something: a closed pipe is a failed write
/// (ignored), never the end of the process.
pub fn keep_going_on_epipe() {
    // SAFETY: setting one signal's disposition; no handler runs.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN) };
}

/// Whether `cmd` only reads (then a closed pipe may end it, as it ends other
/// Unix tools' listings).
pub fn only_reads(cmd: &Command) -> bool {
    match cmd {
        Command::State(s) => matches!(s.cmd, state::StateSub::List(_) | state::StateSub::Show(_)),
        Command::Verify(_) => true,
        Command::Boot(b) => matches!(b.cmd, boot::BootSub::List(_) | boot::BootSub::Status(_)),
        Command::Disk(d) => matches!(d.cmd, disk::DiskSub::Ls(_) | disk::DiskSub::Cat(_) | disk::DiskSub::Df(_)),
        _ => false,
    }
}

/// How results reach the user: lines of text on stdout and notes on stderr,
/// or, with `--json`, one JSON document gathered here and printed once by
/// [`Out::finish`] (see [`crate::cli::output`]).
pub struct Out {
    pub json: bool,
    doc: output::Doc,
}

impl Out {
    pub fn new(json: bool) -> Out {
        Out { json, doc: output::Doc::default() }
    }

    /// Runs `f` with every document it gives nested under `key` of the
    /// command's own (an auto-sync's result in a commit's).
    pub fn nested<T>(&self, key: &'static str, f: impl FnOnce() -> T) -> T {
        self.doc.nested(key, f)
    }

    /// Prints the one JSON document of this invocation (`--json` only): what
    /// the command gave, the notes, and the error it ended with.
    pub fn finish(&self, error: Option<(&str, u8)>) {
        if self.json {
            say(&mut std::io::stdout().lock(), &self.doc.finish(error).to_string());
        }
    }

    /// Prints a human line (suppressed in JSON mode).
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json {
            say(&mut std::io::stdout().lock(), s.as_ref());
        }
    }

    /// Prints one human line per item (suppressed in JSON mode), through one
    /// buffer: a repair of a wiped `/usr` lists a quarter of a million entries,
    /// and a write per line would cost the user a system call each (stdout is
    /// line-buffered). The listing stops at the first write that fails (stdout
    /// full or gone: a read-only command ends there, as `main` restores SIGPIPE
    /// for it; one that changes something goes on, see [`crate::cli::keep_going_on_epipe`]).
    pub fn lines<T: std::fmt::Display>(&self, items: impl IntoIterator<Item = T>) {
        use std::io::Write;
        if self.json {
            return;
        }
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        for item in items {
            if writeln!(w, "{item}").is_err() {
                return;
            }
        }
        let _ = w.flush();
    }

    /// A note for the user on stderr (always, JSON mode included; there it is
    /// also in the document's `notes`).
    pub fn note(&self, s: impl AsRef<str>) {
        let text = format!("lifeboat: {}", lifeboat_fs::shown::controls_escaped(s.as_ref()));
        if self.json {
            self.doc.note(s.as_ref());
        }
        say(&mut std::io::stderr().lock(), &text);
    }

    /// What loading the index has to tell: a fallback to `.prev`, an import
    /// from moss, an index older than moss's last change.
    pub fn loaded(&self, l: &lifeboat_state::index::file::Loaded) {
        for n in l.fallback.iter().chain(&l.notes) {
            self.note(n);
        }
    }

    /// The command's result as JSON (gathered; printed once by [`Out::finish`]).
    pub fn json(&self, j: &Json) {
        if self.json {
            self.doc.add(j.clone());
        }
    }
}

/// Exit status for failures that are not more specific.
pub const EXIT_FAIL: u8 = 1;
/// A command line that cannot mean anything (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// The root is locked by another lifeboat or by moss: trying again later (or
/// with `--wait`) may succeed (sysexits' EX_TEMPFAIL).
pub const EXIT_BUSY: u8 = 75;

/// The exit status an error ends the command with.
pub fn exit_status(e: &Error) -> u8 {
    match e {
        Error::State(lifeboat_state::Error::Busy { .. } | lifeboat_state::Error::MossBusy(_))
        | Error::Esp(lifeboat_esp::Error::Busy { .. }) => EXIT_BUSY,
        Error::Usage { .. } => EXIT_USAGE,
        _ => EXIT_FAIL,
    }
}

/// The longest `--wait`, in seconds: a year.
pub const MAX_WAIT: u64 = 365 * 24 * 3600;

/// Options every command takes, before or after the subcommand.
const GLOBAL_VALUE: [&str; 5] = ["--root", "--esp", "--boot", "--efivars", "--wait"];
const GLOBAL_SWITCH: [&str; 1] = ["--json"];

/// Moves global options found after the subcommand in front of it, where argh
/// expects them, so `lifeboat boot sync --esp disk.img` works as `bootctl` and
/// `git -C` users expect. Nothing after `--` moves. No subcommand has an option
/// named like a global one (`disk create` takes `--root-size`), so a global
/// option's name means one thing wherever it stands.
pub fn hoist_globals(args: &[String]) -> Vec<String> {
    let mut front: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            rest.extend(args[i..].iter().cloned());
            break;
        }
        if GLOBAL_VALUE.contains(&a) && i + 1 < args.len() {
            front.extend([args[i].clone(), args[i + 1].clone()]);
            i += 2;
            continue;
        }
        if GLOBAL_SWITCH.contains(&a) {
            front.push(args[i].clone());
            i += 1;
            continue;
        }
        rest.push(args[i].clone());
        i += 1;
    }
    front.extend(rest);
    front
}

/// The subcommand words of a hoisted command line (`["boot", "sync"]`): what
/// follows the global options, up to the first option.
fn subcommand_path(hoisted: &[String]) -> Vec<&str> {
    let mut i = 0;
    while i < hoisted.len() {
        let a = hoisted[i].as_str();
        if GLOBAL_VALUE.contains(&a) {
            i += 2;
        } else if GLOBAL_SWITCH.contains(&a) {
            i += 1;
        } else {
            break;
        }
    }
    hoisted[i.min(hoisted.len())..]
        .iter()
        .map(String::as_str)
        .take_while(|a| !a.starts_with('-') && *a != "help")
        .take(2)
        .collect()
}

/// The value of a global option on a hoisted command line, if given.
fn global_value<'a>(hoisted: &'a [String], name: &str) -> Option<&'a str> {
    let mut i = 0;
    while i + 1 < hoisted.len() && (GLOBAL_VALUE.contains(&hoisted[i].as_str()) || hoisted[i] == "--json") {
        if hoisted[i] == name {
            return Some(&hoisted[i + 1]);
        }
        i += if hoisted[i] == "--json" { 1 } else { 2 };
    }
    None
}

/// A usage error: said (as JSON too when `--json` was given) with the status 64.
fn usage_error(json: bool, msg: &str) -> ExitCode {
    if json {
        say(
            &mut std::io::stdout().lock(),
            &Json::obj().with("error", msg).with("kind", "usage").with("exit", u64::from(EXIT_USAGE)).to_string(),
        );
    }
    say(&mut std::io::stderr().lock(), msg);
    ExitCode::from(EXIT_USAGE)
}

/// What argh said of a command line it refused, with the nearest command when
/// a word is no command at its place (`lifeboat stat list`) and where the
/// usage is.
fn usage_message(argh_said: &str, path: &[&str]) -> String {
    let mut msg = format!("lifeboat: {argh_said}");
    // The words that name commands: the first one not known at its level is
    // the mistyped one.
    let mut known: Vec<&str> = Vec::new();
    for word in path {
        let choices = commands_of(&known);
        if choices.is_empty() {
            break;
        }
        if !choices.iter().any(|c| c == word) {
            if let Some(near) = usage::nearest(word, &choices) {
                let mut full = known.clone();
                full.push(near);
                msg.push_str(&format!("\nDid you mean `lifeboat {}`?", full.join(" ")));
            } else {
                msg.push_str(&format!(
                    "\n`{word}` is no command{}: {}",
                    if known.is_empty() { String::new() } else { format!(" of `{}`", known.join(" ")) },
                    choices.join(", ")
                ));
            }
            break;
        }
        known.push(word);
    }
    let at = if known.is_empty() { String::new() } else { format!(" {}", known.join(" ")) };
    msg.push_str(&format!("\nSee `lifeboat{at} --help` for the usage."));
    msg
}

/// The subcommands argh's help lists under `prefix` (none for a command that
/// has none).
fn commands_of(prefix: &[&str]) -> Vec<String> {
    let mut a: Vec<&str> = prefix.to_vec();
    a.push("--help");
    let Err(e) = Cli::from_args(&["lifeboat"], &a) else { return Vec::new() };
    usage::commands_listed(&e.output)
}

/// Parses the command line (program name first); on `--help`, `--version`, a
/// bare call or a usage error, the exit status after printing what there is to say.
pub fn parse(args: &[String]) -> Result<Cli, ExitCode> {
    // The program's name is not used: help and errors say `lifeboat`, however
    // it was invoked (`./lb`, a symlink).
    let rest = args.get(1..).unwrap_or(&[]);
    let json = rest.iter().take_while(|a| *a != "--").any(|a| a == "--json");
    let rest = match usage::early(rest) {
        Ok(r) => r,
        Err(usage::Early::Version) => {
            if json {
                say(
                    &mut std::io::stdout().lock(),
                    &Json::obj().with("version", env!("CARGO_PKG_VERSION")).with("text", usage::version()).to_string(),
                );
            } else {
                say(&mut std::io::stdout().lock(), &usage::version());
            }
            return Err(ExitCode::SUCCESS);
        }
        Err(usage::Early::Bare) => return Err(usage_error(false, &usage::bare_usage())),
    };
    // A global option with nothing after it: said here, as argh would
    // otherwise call it an unknown argument of the subcommand it ended up in.
    if let Some(name) = rest.iter().take_while(|a| *a != "--").last().filter(|a| GLOBAL_VALUE.contains(&a.as_str())) {
        let what = match name.as_str() {
            "--wait" => "SECONDS",
            "--root" | "--efivars" => "DIR",
            "--esp" => "ESP",
            _ => "BOOT",
        };
        return Err(usage_error(
            json,
            &format!("lifeboat: {name} needs a value ({name} {what}); see `lifeboat --help`"),
        ));
    }
    let rest = hoist_globals(&rest);
    let path = subcommand_path(&rest);
    let refs: Vec<&str> = rest.iter().map(String::as_str).collect();
    // Usage lines say `lifeboat`, however the program was invoked (`./lb`).
    let cli = Cli::from_args(&["lifeboat"], &refs).map_err(|e| {
        if e.status.is_ok() {
            let root = global_value(&rest, "--root").unwrap_or("/");
            say(&mut std::io::stdout().lock(), &usage::extend_help(&e.output, &path, std::path::Path::new(root)));
            ExitCode::SUCCESS
        } else if path.is_empty() && e.output.starts_with("One of the following subcommands must be present") {
            // Global options and no command: as a bare call, with the usage.
            usage_error(json, &usage::bare_usage())
        } else {
            usage_error(json, &usage_message(e.output.trim_end(), &path))
        }
    })?;
    // The shell and PID 1 talk to a person on a console: no JSON to give.
    if cli.json {
        if let Some(cmd) = match &cli.cmd {
            Command::Shell(_) => Some("shell"),
            Command::Init(_) => Some("init"),
            Command::InitrdHook(_) => Some("initrd-hook"),
            _ => None,
        } {
            return Err(usage_error(
                true,
                &format!("lifeboat: `{cmd}` talks to a person on a console and has no JSON output: drop --json"),
            ));
        }
    }
    // A wait past any machine's uptime is a mistake, and its deadline would
    // overflow the clock.
    if cli.wait > MAX_WAIT {
        return Err(usage_error(
            cli.json,
            &format!("lifeboat: --wait {}: at most {MAX_WAIT} seconds (one year)", cli.wait),
        ));
    }
    // An entry written with 0 tries is out of them before its first boot.
    if let Command::Boot(boot::BootCmd { cmd: boot::BootSub::Sync(boot::SyncCmd { tries: Some(0), .. }) }) = &cli.cmd {
        return Err(usage_error(
            cli.json,
            "lifeboat: --tries 0: an entry with 0 tries is out of them before it boots; give 1 or more, or leave \
             --tries out for no boot counting",
        ));
    }
    // A global option the command does not use is an error, not silence
    // (`lifeboat --root 50M disk create ...` once meant a partition size).
    if let Some(cmd) = match &cli.cmd {
        Command::Disk(_) => Some("disk"),
        Command::Initrd(_) => Some("initrd build"),
        _ => None,
    } {
        for name in ["--root", "--esp", "--boot", "--efivars", "--wait"] {
            // disk commands wait for another writer of their image.
            if global_value(&rest, name).is_some() && !(cmd == "disk" && name == "--wait") {
                let hint = match (cmd, name) {
                    ("disk", "--root" | "--esp") => {
                        format!("; a partition's size in `disk create` is {name}-size")
                    }
                    ("disk", _) => "; it works on the image it is given".to_owned(),
                    _ => "; it works on the files it is given (--binary, --modules, ...)".to_owned(),
                };
                return Err(usage_error(cli.json, &format!("lifeboat: {name} is not an option of `{cmd}`{hint}")));
            }
        }
    }
    Ok(cli)
}

/// Runs a parsed command. The rescue shell, PID 1 and the initrd hook are not
/// commands that report and exit: `main` runs those itself.
pub fn run(cli: Cli) -> ExitCode {
    lifeboat_state::lock::set_own_lock_wait(std::time::Duration::from_secs(cli.wait));
    lifeboat_esp::imagelock::set_lock_wait(std::time::Duration::from_secs(cli.wait));
    let out = Out::new(cli.json);
    let args = crate::bootsync::BootArgs { esp: cli.esp.clone(), boot: cli.boot.clone(), efivars: cli.efivars.clone() };
    // verify and repair that cannot check at all end with their own status.
    let mut cannot_check = false;
    let r = match cli.cmd {
        Command::State(c) => state::run(&cli.root, c, &out, &args),
        Command::Disk(c) => disk::run(c, &out),
        Command::Verify(c) => {
            cannot_check = true;
            verify::verify(&cli.root, &c, &out)
        }
        Command::Repair(c) => {
            cannot_check = true;
            verify::repair(&cli.root, &c, &out)
        }
        Command::Initrd(c) => initrd::run(c, &out),
        Command::Firmware(c) => firmware::run(&cli.root, &args, c, &out),
        Command::Boot(c) => boot::run(&boot::Ctx { root: &cli.root, args: &args, out: &out }, c),
        Command::Shell(_) | Command::Init(_) | Command::InitrdHook(_) => {
            let msg = "lifeboat: this command is run by the program's entry point, not here";
            out.finish(Some((msg, EXIT_USAGE)));
            eprintln!("{msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match r {
        Ok(code) => {
            out.finish(None);
            code
        }
        Err(e) => {
            let status = match exit_status(&e) {
                EXIT_FAIL if cannot_check => verify::EXIT_CANNOT_CHECK,
                s => s,
            };
            report(&out, &e, status)
        }
    }
}

/// Prints an error (as JSON too when asked), with the causes a library gave
/// that its message does not already say, and returns the failure status.
pub fn report(out: &Out, e: &Error, status: u8) -> ExitCode {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(&format!(": {said}"));
        }
        cause = c.source();
    }
    // A path in a library's message may carry a control character: one error,
    // one line.
    out.finish(Some((&text, status)));
    say(&mut std::io::stderr().lock(), &format!("lifeboat: error: {}", lifeboat_fs::shown::controls_escaped(&text)));
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> String {
        hoist_globals(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).join(" ")
    }

    #[test]
    fn global_options_move_in_front_of_the_subcommand() {
        assert_eq!(h("boot sync --esp disk.img"), "--esp disk.img boot sync");
        assert_eq!(h("--root r state list --json"), "--root r --json state list");
        assert_eq!(h("verify --full --root /mnt"), "--root /mnt verify --full");
        assert_eq!(h("state commit --from t -- --root x"), "state commit --from t -- --root x");
        assert_eq!(h("boot sync --wait 5"), "--wait 5 boot sync");
    }

    #[test]
    fn a_trailing_global_parses_like_a_leading_one() {
        let a: Vec<String> = ["lifeboat", "state", "list", "--root", "/x", "--json"].map(String::from).to_vec();
        let cli = parse(&a).unwrap();
        assert_eq!(cli.root, std::path::Path::new("/x"));
        assert!(cli.json);
        let a: Vec<String> =
            ["lifeboat", "disk", "create", "i", "--size", "1G", "--root-size", "2G"].map(String::from).to_vec();
        let cli = parse(&a).unwrap();
        let Command::Disk(d) = cli.cmd else { panic!("not disk") };
        assert!(format!("{d:?}").contains("2G"));
        // The global --root is never a size: given to disk create, it is refused.
        let a: Vec<String> =
            ["lifeboat", "disk", "create", "i", "--size", "1G", "--root", "2G"].map(String::from).to_vec();
        assert!(parse(&a).is_err());
    }

    #[test]
    fn the_subcommand_path_follows_the_globals() {
        let v = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(subcommand_path(&v("--root r --json boot sync --keep 2")), ["boot", "sync"]);
        assert_eq!(subcommand_path(&v("--json")), Vec::<&str>::new());
        assert_eq!(global_value(&v("--json --root r boot sync"), "--root"), Some("r"));
        assert_eq!(global_value(&v("boot sync --root r"), "--root"), None);
    }
}
