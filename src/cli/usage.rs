//! What the command line says about itself before any command runs: `--version`,
//! `-h`, the usage of a bare `lifeboat`, the global options and exit statuses
//! every subcommand's help lists (argh shows only the options of the struct it
//! parsed), and the settings defaults help shows. argh knows none of these, so
//! they are handled here, around it, without a heavier parser in the rescue build.

use std::path::Path;

use crate::config::{self, Config};

/// The global options, as the help of a subcommand that takes them lists them
/// (argh prints them only in the top-level help, where they are fields of the
/// top struct).
pub const GLOBAL_HELP: &str = "\
Global Options (before or after the subcommand):
  --root DIR        the system root to work on (default /)
  --esp ESP         the ESP: a mount point, a partition, or a whole disk (image
                    or device); default: esp = in DIR/etc/lifeboat/lifeboat.conf
  --boot BOOT       $BOOT (XBOOTLDR), when not the ESP or found on the ESP's disk
  --efivars DIR     efivarfs directory (default /sys/firmware/efi/efivars)
  --json            print one JSON document (errors too)
  --wait SECONDS    wait this long for another lifeboat holding the root's lock,
                    or another writer of the disk image or device (default 0:
                    fail at once; at most a year)
  -h, --help        this help
  --version         the version";

/// The global options of `initrd` (it works on the files it is given, and
/// refuses the root's options: see [`takes_root_options`]).
pub const GLOBAL_HELP_FILES: &str = "\
Global Options (before or after the subcommand):
  --json            print one JSON document (errors too)
  -h, --help        this help
  --version         the version";

/// The global options of `disk`: those of `initrd`, and `--wait` for another
/// writer of the image.
pub const GLOBAL_HELP_DISK: &str = "\
Global Options (before or after the subcommand):
  --json            print one JSON document (errors too)
  --wait SECONDS    wait this long for another writer of the disk image or
                    device (default 0: fail at once; at most a year)
  -h, --help        this help
  --version         the version";

/// Whether the command `subcommand` names works on a root, an ESP and firmware
/// variables (every command but `disk` and `initrd`, which refuse them).
pub fn takes_root_options(subcommand: &[&str]) -> bool {
    !matches!(subcommand.first(), Some(&"disk") | Some(&"initrd"))
}

/// Exit statuses, as README lists them.
pub const EXIT_HELP: &str = "\
Exit Status:
  0   success (verify: clean)
  1   failure (verify: differences; repair: something unrecoverable; disk
      check: damage)
  2   verify or repair could not check (no index, unreadable tree)
  64  usage error (unknown option, missing argument, a bad combination)
  75  the root is locked by another lifeboat or moss process, or the disk
      image or device by another writer (try --wait)";

/// What the first arguments ask of the program itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Early {
    /// `--version` (or `-V`) anywhere before `--`.
    Version,
    /// No arguments at all.
    Bare,
}

/// `-h` becomes `--help` (argh has no short help); `--version` and a bare call
/// are answered before argh sees anything.
pub fn early(args: &[String]) -> Result<Vec<String>, Early> {
    if args.is_empty() {
        return Err(Early::Bare);
    }
    let mut out = Vec::with_capacity(args.len());
    let mut after_dashes = false;
    for a in args {
        if after_dashes {
            out.push(a.clone());
            continue;
        }
        match a.as_str() {
            "--" => {
                after_dashes = true;
                out.push(a.clone());
            }
            "--version" | "-V" => return Err(Early::Version),
            "-h" => out.push("--help".to_owned()),
            _ => out.push(a.clone()),
        }
    }
    Ok(out)
}

/// The subcommands an argh help text lists under `Commands:`.
pub fn commands_listed(help: &str) -> Vec<String> {
    help.split("\nCommands:\n")
        .nth(1)
        .map(|c| {
            c.lines()
                .take_while(|l| l.starts_with("  "))
                .filter(|l| !l.starts_with("    "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The choice nearest to `word` by edit distance, when it is near enough to be
/// a slip: two edits (a swap of two letters is two), a third of a long word's
/// letters, never all of a short word's.
pub fn nearest<'a>(word: &str, choices: &'a [String]) -> Option<&'a str> {
    let n = word.chars().count();
    let limit = (n / 3).max(2).min(n.saturating_sub(1));
    choices
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Levenshtein distance: insertions, deletions and substitutions of characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(row[j] + 1).min(up + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// The version line: the build says whether it reads moss's databases.
pub fn version() -> String {
    let build = if cfg!(feature = "moss-import") { "host build" } else { "rescue build, no SQLite" };
    format!("lifeboat {} ({build})", env!("CARGO_PKG_VERSION"))
}

/// The usage of a bare `lifeboat` (on stderr, exit 64, as a usage error).
pub fn bare_usage() -> String {
    "Usage: lifeboat [GLOBAL OPTIONS] <command> [<args>]\n\
     \n\
     Commands: state, disk, boot, verify, repair, initrd, firmware, shell,\n\
     init, initrd-hook.\n\
     `lifeboat --help` lists them; `lifeboat <command> --help` (or -h) says more."
        .to_owned()
}

/// Help text as argh wrote it, with what argh cannot know: the global options
/// (a subcommand's help; the top level lists them itself), the defaults a
/// command takes from lifeboat.conf, and the exit statuses.
pub fn extend_help(argh_help: &str, subcommand: &[&str], root: &Path) -> String {
    let mut s = argh_help.trim_end().to_owned();
    if !subcommand.is_empty() {
        s.push_str("\n\n");
        s.push_str(match subcommand.first() {
            _ if takes_root_options(subcommand) => GLOBAL_HELP,
            Some(&"disk") => GLOBAL_HELP_DISK,
            _ => GLOBAL_HELP_FILES,
        });
    } else {
        s = s.replacen(
            "  --help, help      display usage information",
            "  --help, help      display usage information\n  -h                short for --help\n  --version         the version",
            1,
        );
    }
    if let Some(d) = defaults_help(subcommand, root) {
        s.push_str("\n\n");
        s.push_str(&d);
    }
    s.push_str("\n\n");
    s.push_str(EXIT_HELP);
    s
}

/// The settings a command takes from lifeboat.conf, with the values in force
/// for `root` (the one place they are read: [`config::Defaults`]).
fn defaults_help(subcommand: &[&str], root: &Path) -> Option<String> {
    if subcommand == ["boot", "assess"] {
        return Some(assess_defaults_help(root));
    }
    let uses_sync =
        matches!(subcommand, ["boot", "sync"] | ["state", "commit"] | ["state", "activate"] | ["state", "prune"]);
    if !uses_sync {
        return None;
    }
    let (cfg, _) = Config::load(root);
    let d = config::Defaults::of(&cfg);
    let file = root.join(config::CONFIG_REL);
    let mut s = format!("Defaults (from {}, else built in):\n", file.display());
    s.push_str(&format!("  keep = {}{}\n", d.keep, from(cfg.keep.is_some())));
    s.push_str(&format!(
        "  tries = {}{}\n",
        d.tries.map(|t| t.to_string()).unwrap_or_else(|| "none (no boot counting)".into()),
        from(cfg.tries.is_some())
    ));
    s.push_str(&format!(
        "  timeout = {}{}\n",
        d.timeout.map(|t| format!("{t} s")).unwrap_or_else(|| "loader.conf's own".into()),
        from(cfg.timeout.is_some())
    ));
    s.push_str(&format!(
        "  initrd = {}{}",
        cfg.initrd.as_deref().unwrap_or("each kernel's own rescue initrd"),
        from(cfg.initrd.is_some())
    ));
    if subcommand != ["boot", "sync"] {
        s.push_str("\n  (with esp = set, the command then syncs the boot entries with these)");
    }
    Some(s)
}

/// The settings `boot assess` takes from lifeboat.conf, with the values in force.
fn assess_defaults_help(root: &Path) -> String {
    use crate::assess::{DEFAULT_FAILURES, DEFAULT_TIMEOUT};
    let (cfg, _) = Config::load(root);
    let file = root.join(config::CONFIG_REL);
    format!(
        "Defaults (from {}, else built in):\n  assess-timeout = {} s{}  (each check's limit)\n  \
         assess-failures = {}{}  (failed boots of an entry before it is rolled back)",
        file.display(),
        cfg.assess_timeout.unwrap_or(DEFAULT_TIMEOUT),
        from(cfg.assess_timeout.is_some()),
        cfg.assess_failures.unwrap_or(DEFAULT_FAILURES),
        from(cfg.assess_failures.is_some()),
    )
}

fn from(configured: bool) -> &'static str {
    if configured {
        "  (lifeboat.conf)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn short_help_version_and_bare() {
        assert_eq!(early(&v("boot sync -h")).unwrap(), v("boot sync --help"));
        assert_eq!(early(&v("state commit --from t -- -h")).unwrap(), v("state commit --from t -- -h"));
        assert_eq!(early(&v("state --version")), Err(Early::Version));
        assert_eq!(early(&[]), Err(Early::Bare));
    }

    #[test]
    fn the_nearest_command() {
        let c: Vec<String> = ["state", "disk", "boot", "verify", "repair"].map(String::from).to_vec();
        assert_eq!(nearest("stat", &c), Some("state"));
        assert_eq!(nearest("bot", &c), Some("boot"));
        assert_eq!(nearest("xyzzy", &c), None);
        assert_eq!(nearest("bota", &c), Some("boot"));
        assert_eq!(nearest("ls", &["df".to_owned()]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
