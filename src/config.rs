//! Machine-local settings in `DIR/etc/lifeboat/lifeboat.conf` (`key = value`
//! lines, `#` comments): where the boot partitions are and how boot sync behaves.
//! Command-line options override them.
//!
//! ```text
//! esp = /dev/disk/by-partuuid/...   # or a mount point, or IMG:N
//! boot = ...                        # XBOOTLDR, when not on the ESP's disk
//! keep = 5                          # entries to keep on $BOOT
//! tries = 3                         # boot counting for new entries
//! timeout = 5                       # loader.conf timeout
//! initrd = /usr/lib/lifeboat/lifeboat.initrd   # one rescue initrd for every entry
//! initrd-modules = host-only        # or generic: the modules of each kernel's rescue initrd
//! secure-boot = yes                 # or no: signed unified kernel images instead of Type #1 entries
//! secure-boot-key = /etc/lifeboat/secureboot/db.key   # the db key and certificate (PEM) that sign
//! secure-boot-cert = /etc/lifeboat/secureboot/db.crt  # them; these two are the defaults, in the root
//! assess-failures = 2               # failed boots (health checks) of an entry on trial before
//!                                   # `boot assess` rolls back to the previous one
//! assess-timeout = 60               # seconds each health check may take
//! ```

use std::os::fd::AsFd;
use std::path::Path;

/// A settings file is a few lines; more than this is not one.
const MAX: u64 = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub esp: Option<String>,
    pub boot: Option<String>,
    pub keep: Option<usize>,
    pub tries: Option<u32>,
    pub timeout: Option<u32>,
    pub initrd: Option<String>,
    /// `initrd-modules`: the module set of the rescue initrds `boot sync`
    /// builds for each kernel.
    pub initrd_modules: Option<ModuleSet>,
    /// `secure-boot`: signed UKIs per transaction (`Some(true)`), Type #1
    /// entries (`Some(false)`), or unset: chosen by the firmware's state.
    pub secure_boot: Option<bool>,
    /// A `secure-boot` value that is none of the accepted words: its line
    /// number and the value. Syncing and installing refuse to run with it
    /// (guessing either way would sign, or delete every signed image).
    pub secure_boot_invalid: Option<(usize, String)>,
    /// `secure-boot-key`, `secure-boot-cert`: where the db key and its
    /// certificate are (a relative path is below the root).
    pub secure_boot_key: Option<String>,
    pub secure_boot_cert: Option<String>,
    /// `assess-failures`: failed boots of an entry still being tried after
    /// which `boot assess` rolls back (at least 1).
    pub assess_failures: Option<u32>,
    /// `assess-timeout`: seconds a health check may run.
    pub assess_timeout: Option<u32>,
}

/// Which modules a rescue initrd built for a kernel holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModuleSet {
    /// Every common storage bus and root filesystem (the `initrd` crate's generic set).
    #[default]
    Generic,
    /// Only what this machine's root, `/usr`, ESP and XBOOTLDR need.
    HostOnly,
}

impl ModuleSet {
    pub fn parse(s: &str) -> Option<ModuleSet> {
        match s {
            "generic" => Some(ModuleSet::Generic),
            "host-only" => Some(ModuleSet::HostOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModuleSet::Generic => "generic",
            ModuleSet::HostOnly => "host-only",
        }
    }
}

pub const CONFIG_REL: &str = "etc/lifeboat/lifeboat.conf";

/// Entries (`boot sync`) and transactions (`state prune`) kept when neither the
/// command line nor `keep =` says.
pub const DEFAULT_KEEP: usize = 5;

/// The settings several commands share, the file's value over the built-in
/// default: the one place they are decided (commands, their auto-sync and
/// their help read them here). A command-line option wins over both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub keep: usize,
    /// Boot-counting tries for new entries; none: no counting.
    pub tries: Option<u32>,
    /// `loader.conf`'s timeout; none: left as it is.
    pub timeout: Option<u32>,
}

impl Defaults {
    pub fn of(c: &Config) -> Defaults {
        Defaults { keep: c.keep.unwrap_or(DEFAULT_KEEP), tries: c.tries, timeout: c.timeout }
    }
}

impl Config {
    pub fn parse(text: &str) -> (Config, Vec<String>) {
        let mut c = Config::default();
        let mut warnings = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let l = line.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                warnings.push(format!("line {}: expected key = value", n + 1));
                continue;
            };
            let (k, v) = (k.trim(), v.trim().to_owned());
            let num = |w: &mut Vec<String>| {
                v.parse::<u32>().map_err(|_| w.push(format!("line {}: {k} needs a number", n + 1))).ok()
            };
            match k {
                "esp" => c.esp = Some(v.clone()),
                "boot" => c.boot = Some(v.clone()),
                "initrd" => c.initrd = Some(v.clone()),
                "initrd-modules" => match ModuleSet::parse(&v) {
                    Some(m) => c.initrd_modules = Some(m),
                    None => warnings.push(format!("line {}: initrd-modules is generic or host-only", n + 1)),
                },
                "secure-boot" => match v.to_ascii_lowercase().as_str() {
                    "yes" | "true" | "1" | "on" => (c.secure_boot, c.secure_boot_invalid) = (Some(true), None),
                    "no" | "false" | "0" | "off" => (c.secure_boot, c.secure_boot_invalid) = (Some(false), None),
                    _ => {
                        warnings.push(format!("line {}: secure-boot is yes or no, not {v:?}", n + 1));
                        (c.secure_boot, c.secure_boot_invalid) = (None, Some((n + 1, v.clone())));
                    }
                },
                "secure-boot-key" => c.secure_boot_key = Some(v.clone()),
                "secure-boot-cert" => c.secure_boot_cert = Some(v.clone()),
                "keep" => c.keep = num(&mut warnings).map(|x| x as usize),
                "tries" => match num(&mut warnings) {
                    Some(0) => warnings.push(format!(
                        "line {}: tries = 0 is ignored (an entry with 0 tries left is already out of them); new \
                         entries are written without boot counting",
                        n + 1
                    )),
                    x => c.tries = x,
                },
                "timeout" => c.timeout = num(&mut warnings),
                "assess-failures" => match num(&mut warnings) {
                    Some(0) => warnings.push(format!("line {}: assess-failures is at least 1", n + 1)),
                    x => c.assess_failures = x,
                },
                "assess-timeout" => match num(&mut warnings) {
                    Some(0) => warnings.push(format!("line {}: assess-timeout is at least 1", n + 1)),
                    x => c.assess_timeout = x,
                },
                _ => warnings.push(format!("line {}: unknown key {k}", n + 1)),
            }
        }
        (c, warnings)
    }

    /// The root's settings. The file is the machine's, not lifeboat's: read
    /// through the one door for such files (resolved inside the root, a regular
    /// file only, never waiting on a FIFO); one that cannot be read is said,
    /// and the defaults apply.
    pub fn load(root: &Path) -> (Config, Vec<String>) {
        let shown = lifeboat_fs::shown::shown_path(&root.join(CONFIG_REL));
        let read = lifeboat_fs::open_dir(root)
            .and_then(|d| lifeboat_fs::foreign::open_file_in_root(d.as_fd(), CONFIG_REL.as_bytes()))
            .and_then(|f| lifeboat_fs::foreign::read_capped(f, MAX));
        match read {
            Ok(b) => {
                let (c, w) = Config::parse(&String::from_utf8_lossy(&b));
                (c, w.into_iter().map(|x| format!("{shown}: {x}")).collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Config::default(), vec![]),
            Err(e) => (Config::default(), vec![format!("{shown}: {e}; its settings are not used")]),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses() {
        let (c, w) =
            super::Config::parse("esp = disk.img:1 # comment\nkeep=3\ntries = x\nfoo=1\ninitrd-modules = host-only\n");
        assert_eq!(c.esp.as_deref(), Some("disk.img:1"));
        assert_eq!(c.keep, Some(3));
        assert_eq!(c.tries, None);
        assert_eq!(c.initrd_modules, Some(super::ModuleSet::HostOnly));
        assert_eq!(w.len(), 2);
        let (c, w) = super::Config::parse("assess-failures = 3\nassess-timeout=5\n");
        assert_eq!((c.assess_failures, c.assess_timeout, w.len()), (Some(3), Some(5), 0));
        let (c, w) = super::Config::parse("assess-failures = 0\nassess-timeout = x\n");
        assert_eq!((c.assess_failures, c.assess_timeout, w.len()), (None, None, 2));
        let (c, w) = super::Config::parse("initrd-modules = some\n");
        assert_eq!((c.initrd_modules, w.len()), (None, 1));
        let (c, w) = super::Config::parse("secure-boot = yes\nsecure-boot-key = k.pem\nsecure-boot-cert=/c.pem\n");
        assert_eq!(
            (c.secure_boot, c.secure_boot_key.as_deref(), c.secure_boot_cert.as_deref()),
            (Some(true), Some("k.pem"), Some("/c.pem"))
        );
        assert!(w.is_empty());
        for bad in ["maybe", "", "y", "enabled"] {
            let (c, w) = super::Config::parse(&format!("keep = 2\nsecure-boot = {bad}\n"));
            assert_eq!((c.secure_boot, c.secure_boot_invalid, w.len()), (None, Some((2, bad.to_owned())), 1));
        }
        for (word, on) in [("YES", true), ("On", true), ("TRUE", true), ("1", true), ("Off", false), ("NO", false)] {
            let (c, w) = super::Config::parse(&format!("secure-boot = {word}\n"));
            assert_eq!((c.secure_boot, c.secure_boot_invalid, w.len()), (Some(on), None, 0), "{word}");
        }
    }

    /// The example the packages install as /etc/lifeboat/lifeboat.conf.example
    /// names every key there is, each one this parser takes.
    #[test]
    fn the_installed_example_parses() {
        let example = include_str!("../contrib/etc/lifeboat.conf.example");
        let uncommented: String = example
            .lines()
            .map(|l| l.strip_prefix('#').filter(|k| k.starts_with(|c: char| c.is_ascii_lowercase())).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let (c, w) = super::Config::parse(&uncommented);
        assert!(w.is_empty(), "{w:?}");
        // Every field, so that a new key does not compile until the example has it.
        let super::Config {
            esp,
            boot,
            keep,
            tries,
            timeout,
            initrd,
            initrd_modules,
            assess_failures,
            assess_timeout,
            secure_boot,
            secure_boot_invalid,
            secure_boot_key,
            secure_boot_cert,
        } = c;
        assert!(secure_boot_invalid.is_none());
        assert!(esp.is_some() && boot.is_some() && initrd.is_some() && initrd_modules.is_some());
        assert!(keep.is_some() && tries.is_some() && timeout.is_some());
        assert!(assess_failures.is_some() && assess_timeout.is_some());
        assert!(secure_boot.is_some() && secure_boot_key.is_some() && secure_boot_cert.is_some());
        assert_eq!(super::Config::parse(example).0, super::Config::default(), "the example sets something");
    }
}
