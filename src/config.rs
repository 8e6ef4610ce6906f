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
//! initrd = /usr/lib/lifeboat/lifeboat.initrd   # rescue initrd added to entries
//! ```

use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub esp: Option<String>,
    pub boot: Option<String>,
    pub keep: Option<usize>,
    pub tries: Option<u32>,
    pub timeout: Option<u32>,
    pub initrd: Option<String>,
}

pub const CONFIG_REL: &str = "etc/lifeboat/lifeboat.conf";

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
                "keep" => c.keep = num(&mut warnings).map(|x| x as usize),
                "tries" => c.tries = num(&mut warnings),
                "timeout" => c.timeout = num(&mut warnings),
                _ => warnings.push(format!("line {}: unknown key {k}", n + 1)),
            }
        }
        (c, warnings)
    }

    pub fn load(root: &Path) -> (Config, Vec<String>) {
        match std::fs::read_to_string(root.join(CONFIG_REL)) {
            Ok(t) => {
                let (c, w) = Config::parse(&t);
                (c, w.into_iter().map(|x| format!("{}: {x}", root.join(CONFIG_REL).display())).collect())
            }
            Err(_) => (Config::default(), vec![]),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses() {
        let (c, w) = super::Config::parse("esp = disk.img:1 # comment\nkeep=3\ntries = x\nfoo=1\n");
        assert_eq!(c.esp.as_deref(), Some("disk.img:1"));
        assert_eq!(c.keep, Some(3));
        assert_eq!(c.tries, None);
        assert_eq!(w.len(), 2);
    }
}
