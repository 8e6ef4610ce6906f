//! Boot assessment: the health checks that decide whether a boot is good, and
//! the record of the last verdict. `lifeboat boot assess` (run by
//! `lifeboat-bless.service` after `boot-complete.target`) runs them, then
//! blesses the booted entry or, after the configured number of failed boots,
//! rolls back (that part is in `cli/boot.rs`, which owns the boot volumes).
//!
//! Checks are executables in `health.d/required.d/` and `health.d/wanted.d/`
//! under `/usr/lib/lifeboat/` (shipped by the transaction, so an update brings
//! the checks that judge it) and `/etc/lifeboat/` (the machine's own), as
//! greenboot reads `/usr/lib/greenboot/check/` and `/etc/greenboot/check/`. A
//! name in `/etc` replaces the same name in `/usr`; a symlink there to
//! `/dev/null` masks it (the systemd drop-in rule). They run in name order,
//! each with a timeout, their output on our stderr (the journal, under
//! systemd). A required check that fails, is killed, times out or cannot be
//! started makes the boot bad; a wanted one is only recorded.
//!
//! The record is `.moss/lifeboat/assessment` in the root: the directory
//! lifeboat owns on every root it manages (moss's included), on the root
//! filesystem itself, so the rescue shell and PID 1 read it without `/var`
//! mounted. It is a few `key = value` lines, as the rescue-initrd record
//! beside it, so a person on a console can `cat` it; written atomically.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_fs::foreign;
use lifeboat_fs::shown::shown_path;

use crate::error::{Error, Result};

/// Where the record lives in the root.
pub const RECORD_DIR: &str = ".moss/lifeboat";
pub const RECORD_NAME: &str = "assessment";
/// A record is a few lines per check; more than this is not one.
const RECORD_MAX: u64 = 256 * 1024;
/// `assess-failures` unless lifeboat.conf says otherwise: one failed boot may
/// be a fluke (a network check on a slow link), two in a row are the update's.
pub const DEFAULT_FAILURES: u32 = 2;
/// `assess-timeout` unless lifeboat.conf says otherwise, in seconds.
pub const DEFAULT_TIMEOUT: u32 = 60;
/// The check directories, lowest precedence first.
pub const CHECK_BASES: [&str; 2] = ["usr/lib/lifeboat/health.d", "etc/lifeboat/health.d"];

/// Whether a check gates the boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Required,
    Wanted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Required => "required",
            Kind::Wanted => "wanted",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "required" => Some(Kind::Required),
            "wanted" => Some(Kind::Wanted),
            _ => None,
        }
    }
}

/// One check found on the root.
#[derive(Clone, Debug)]
pub struct Check {
    pub kind: Kind,
    pub name: String,
    pub path: PathBuf,
}

/// What running a check gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Exit(i32),
    Signal(i32),
    /// Killed after this many seconds.
    TimedOut(u64),
    /// It could not be started (not executable, exec failed): why.
    NotRun(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }

    /// One word for the record: `ok`, `exit-N`, `signal-N`, `timeout-Ns`,
    /// `not-run` (the reason is not kept: it is in the journal).
    fn word(&self) -> String {
        match self {
            Outcome::Passed => "ok".into(),
            Outcome::Exit(c) => format!("exit-{c}"),
            Outcome::Signal(s) => format!("signal-{s}"),
            Outcome::TimedOut(s) => format!("timeout-{s}s"),
            Outcome::NotRun(_) => "not-run".into(),
        }
    }

    fn from_word(w: &str) -> Option<Outcome> {
        let num = |p: &str| w.strip_prefix(p).and_then(|n| n.parse().ok());
        match w {
            "ok" => Some(Outcome::Passed),
            "not-run" => Some(Outcome::NotRun(String::new())),
            _ => num("exit-")
                .map(Outcome::Exit)
                .or_else(|| num("signal-").map(Outcome::Signal))
                .or_else(|| w.strip_prefix("timeout-")?.strip_suffix('s')?.parse().ok().map(Outcome::TimedOut)),
        }
    }

    /// For people.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Exit(c) => format!("failed (exit status {c})"),
            Outcome::Signal(s) => format!("killed by signal {s}"),
            Outcome::TimedOut(s) => format!("timed out after {s} s"),
            Outcome::NotRun(why) if why.is_empty() => "could not be run".into(),
            Outcome::NotRun(why) => format!("could not be run: {why}"),
        }
    }
}

/// A check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub kind: Kind,
    pub name: String,
    pub outcome: Outcome,
}

/// The checks of a root in the order they run (required first, each kind in
/// name order), and notes on names that were passed over.
pub fn find_checks(root: &Path) -> (Vec<Check>, Vec<String>) {
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    for kind in [Kind::Required, Kind::Wanted] {
        // name -> path, later bases replacing earlier ones.
        let mut by_name: std::collections::BTreeMap<String, Option<PathBuf>> = Default::default();
        for base in CHECK_BASES {
            let dir = root.join(base).join(format!("{}.d", kind.as_str()));
            let list = match std::fs::read_dir(&dir) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    notes.push(format!("{}: {e}; its checks are not run", shown_path(&dir)));
                    continue;
                }
            };
            for ent in list.flatten() {
                let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                    notes.push(format!("{}: a name that is not UTF-8; passed over", shown_path(&ent.path())));
                    continue;
                };
                // Hidden files and editor leftovers are not checks (as
                // run-parts), nor is a name with a control character (it
                // cannot be shown or recorded on one line); each is said, so a
                // check that never runs is not taken for one that passed.
                let skipped = if name.starts_with('.') {
                    Some("a hidden file (its name starts with a dot)")
                } else if name.ends_with('~') {
                    Some("an editor's backup (its name ends with ~)")
                } else if lifeboat_fs::shown::has_control(&name) {
                    Some("a name with a control character")
                } else {
                    None
                };
                if let Some(why) = skipped {
                    notes.push(format!("{}: {why}; not a check, passed over", shown_path(&ent.path())));
                    continue;
                }
                let p = ent.path();
                let masked = std::fs::read_link(&p).is_ok_and(|t| t == Path::new("/dev/null"));
                by_name.insert(name, (!masked).then_some(p));
            }
        }
        for (name, path) in by_name {
            if let Some(path) = path {
                checks.push(Check { kind, name, path });
            }
        }
    }
    (checks, notes)
}

/// Runs one check: its own process group (so a timeout kills what it
/// started too), stdin from /dev/null, its stdout and stderr on our stderr (so
/// `--json` output stays JSON), the root as working directory.
pub fn run_check(root: &Path, c: &Check, timeout: Duration) -> Outcome {
    match std::fs::metadata(&c.path) {
        Ok(m) if !m.is_file() => return Outcome::NotRun("not a regular file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => return Outcome::NotRun("not executable".into()),
        Ok(_) => {}
        Err(e) => return Outcome::NotRun(e.to_string()),
    }
    let stdout = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    };
    let child = Command::new(&c.path)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(stdout)
        .env("LIFEBOAT_HEALTH_CHECK", c.kind.as_str())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(ch) => ch,
        Err(e) => return Outcome::NotRun(e.to_string()),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return match (st.code(), st.signal()) {
                    (Some(0), _) => Outcome::Passed,
                    (Some(code), _) => Outcome::Exit(code),
                    (None, Some(sig)) => Outcome::Signal(sig),
                    (None, None) => Outcome::NotRun("no exit status".into()),
                }
            }
            Ok(None) if start.elapsed() >= timeout => {
                // The whole group: a check's own children must not outlive it.
                let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
                let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Outcome::TimedOut(timeout.as_secs());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Outcome::NotRun(format!("wait: {e}")),
        }
    }
}

/// The verdict of a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Bad,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
        }
    }
}

/// The record of one assessment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Seconds since the epoch.
    pub time: i64,
    /// The booted entry (file name, counter as it was at boot), when known.
    pub entry: Option<String>,
    pub transaction: Option<u64>,
    pub verdict: Verdict,
    /// Failed boots of this entry so far (its counter's done count), when counted.
    pub failures: Option<u32>,
    /// What was done: `blessed`, `rolled-back`, `none` (and why, in `reason`).
    pub action: String,
    pub reason: Option<String>,
    /// The entry the machine goes back to, after a roll back.
    pub fallback: Option<String>,
    pub checks: Vec<CheckResult>,
}

impl Record {
    pub fn render(&self) -> String {
        let mut s = String::from("# the last boot assessment, written by `lifeboat boot assess`\n");
        s.push_str(&format!("time = {}\n", self.time));
        let mut kv = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                s.push_str(&format!("{k} = {}\n", one_line(&v)));
            }
        };
        kv("entry", self.entry.clone());
        kv("transaction", self.transaction.map(|t| t.to_string()));
        kv("verdict", Some(self.verdict.as_str().into()));
        kv("failures", self.failures.map(|f| f.to_string()));
        kv("action", Some(self.action.clone()));
        kv("reason", self.reason.clone());
        kv("fallback", self.fallback.clone());
        for c in &self.checks {
            kv("check", Some(format!("{} {} {}", c.kind.as_str(), c.outcome.word(), c.name)));
        }
        s
    }

    /// Reads a record back; `None` for anything lifeboat does not write.
    pub fn parse(text: &str) -> Option<Record> {
        let mut r = Record {
            time: 0,
            entry: None,
            transaction: None,
            verdict: Verdict::Bad,
            failures: None,
            action: String::new(),
            reason: None,
            fallback: None,
            checks: vec![],
        };
        let (mut time, mut verdict) = (None, None);
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (k, v) = l.split_once('=')?;
            let (k, v) = (k.trim(), v.trim().to_owned());
            match k {
                "time" => time = Some(v.parse().ok()?),
                "entry" => r.entry = Some(v),
                "transaction" => r.transaction = Some(v.parse().ok()?),
                "verdict" => {
                    verdict = Some(match v.as_str() {
                        "good" => Verdict::Good,
                        "bad" => Verdict::Bad,
                        _ => return None,
                    })
                }
                "failures" => r.failures = Some(v.parse().ok()?),
                "action" => r.action = v,
                "reason" => r.reason = Some(v),
                "fallback" => r.fallback = Some(v),
                "check" => {
                    let mut it = v.splitn(3, ' ');
                    let kind = Kind::parse(it.next()?)?;
                    let outcome = Outcome::from_word(it.next()?)?;
                    r.checks.push(CheckResult { kind, outcome, name: it.next()?.to_owned() });
                }
                _ => return None,
            }
        }
        r.time = time?;
        r.verdict = verdict?;
        Some(r)
    }

    /// The checks that failed, of one kind.
    pub fn failed(&self, kind: Kind) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(move |c| c.kind == kind && !c.outcome.passed())
    }
}

/// A value on one line: a newline in a check's name or a reason cannot end
/// the line early.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn record_path(root: &Path) -> PathBuf {
    root.join(RECORD_DIR).join(RECORD_NAME)
}

/// Writes the record (atomically, in lifeboat's own directory of the root).
pub fn write_record(root: &Path, r: &Record) -> Result<()> {
    let at = record_path(root);
    let dir = lifeboat_fs::open_dir(root)
        .and_then(|d| lifeboat_fs::open_dir_beneath(d.as_fd(), RECORD_DIR.as_bytes()))
        .map_err(|e| Error::io("open the directory of", &at, e))?;
    lifeboat_fs::atomic_write_at(dir.as_fd(), RECORD_NAME.as_bytes(), r.render().as_bytes(), 0o644)
        .map_err(|e| Error::io("write", &at, e))
}

/// The last record: `Ok(None)` when there is none, `Err` with what is wrong
/// when there is one that cannot be read.
pub fn read_record(root: &Path) -> std::result::Result<Option<Record>, String> {
    let at = record_path(root);
    let rel = format!("{RECORD_DIR}/{RECORD_NAME}");
    let read = lifeboat_fs::open_dir(root)
        .and_then(|d| foreign::open_file_beneath(d.as_fd(), rel.as_bytes()))
        .and_then(|f| foreign::read_capped(f, RECORD_MAX));
    match read {
        Ok(b) => String::from_utf8(b)
            .ok()
            .and_then(|t| Record::parse(&t))
            .map(Some)
            .ok_or_else(|| format!("{} is not an assessment record as lifeboat writes it", shown_path(&at))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", shown_path(&at))),
    }
}

/// Restarts the machine: through systemd when it is PID 1 (so units stop in
/// order), else the reboot system call after a sync (the test guests, a
/// rescue environment).
pub fn reboot() -> Result<()> {
    if Path::new("/run/systemd/system").is_dir() {
        let st =
            Command::new("systemctl").arg("reboot").status().map_err(|e| Error::io("run", "systemctl reboot", e))?;
        if st.success() {
            return Ok(());
        }
        return Err(Error::io("run", "systemctl reboot", std::io::Error::other(format!("it ended with {st}"))));
    }
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(e) => Err(Error::io("reboot", "/", lifeboat_fs::io_err(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            time: 1_700_000_000,
            entry: Some("lb-3-6.1+1-2.conf".into()),
            transaction: Some(3),
            verdict: Verdict::Bad,
            failures: Some(2),
            action: "rolled-back".into(),
            reason: Some("a\nb".into()),
            fallback: Some("lb-2-6.1.conf".into()),
            checks: vec![
                CheckResult { kind: Kind::Required, name: "50 app".into(), outcome: Outcome::Exit(1) },
                CheckResult { kind: Kind::Wanted, name: "10-x".into(), outcome: Outcome::TimedOut(60) },
                CheckResult { kind: Kind::Wanted, name: "20-y".into(), outcome: Outcome::Signal(9) },
                CheckResult { kind: Kind::Required, name: "01".into(), outcome: Outcome::Passed },
            ],
        };
        let back = Record::parse(&r.render()).unwrap();
        assert_eq!(back.reason.as_deref(), Some("a b"));
        assert_eq!(Record { reason: Some("a b".into()), ..r }, back);
        assert!(Record::parse("time = x\nverdict = good\n").is_none());
        assert!(Record::parse("verdict = good\n").is_none());
        let empty = Record { entry: Some(String::new()), reason: None, ..back };
        assert_eq!(Record::parse(&empty.render()), Some(empty));
        assert!(Record::parse("time = 1\nverdict = good\nwhat = 1\n").is_none());
    }
}
