//! Boot assessment end to end on a FAT image with a stand-in efivarfs: the
//! loader's part (counting a boot: the entry renamed, LoaderBootCountPath set)
//! is played by the test as systemd-boot does it; health checks are real
//! executables run by `boot assess`. Judged by the entry names and loader.conf
//! read back with the binary, fsck.fat, and `systemd-analyze verify` for the unit.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const TOKEN: &str = "00112233445566778899aabbccddeeff";
const GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A root with three transactions (the third, active, ships `tx3_check` as a
/// required health check when given), transaction 1's entry blessed, 2 and 3
/// on trial with 3 tries; a disk image and a stand-in efivarfs.
struct Machine {
    s: Scratch,
    root: std::path::PathBuf,
    img: String,
    vars: std::path::PathBuf,
}

impl Machine {
    fn new(tag: &str, tx3_check: Option<&str>) -> Machine {
        let s = Scratch::new(tag);
        let root = s.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let img = s.join("d.img").display().to_string();
        ok(&["disk", "create", &img, "--size", "96M", "--esp-size", "64M", "--root-size", "0"]);
        write(&root.join("etc/machine-id"), format!("{TOKEN}\n").as_bytes(), 0o444);
        write(&root.join("etc/kernel/cmdline.d/90-local.cmdline"), b"root=PARTUUID=abcd\n", 0o644);
        let vars = s.join("efivars");
        fs::create_dir_all(&vars).unwrap();
        let m = Machine { s, root, img, vars };
        for v in 1..=3 {
            let t = m.s.join(&format!("t{v}"));
            tree(&t, v);
            write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
            if let (3, Some(script)) = (v, tx3_check) {
                write(&t.join("lib/lifeboat/health.d/required.d/50-app"), script.as_bytes(), 0o755);
            }
            ok(&["--root", r(&m.root), "state", "commit", "--from", r(&t)]);
            if v == 1 {
                m.lb(&["boot", "sync"]);
            }
        }
        m.lb(&["boot", "sync", "--tries", "3"]);
        m
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["--root", r(&self.root), "--esp", self.img.as_str(), "--efivars", r(&self.vars)];
        a.extend_from_slice(extra);
        a
    }

    fn lb(&self, extra: &[&str]) -> String {
        ok(&self.args(extra))
    }

    fn entries(&self) -> Vec<String> {
        let out = ok(&["disk", "ls", &format!("{}:esp:loader/entries", self.img)]);
        let mut v: Vec<String> = out
            .split_whitespace()
            .filter(|w| w.ends_with(".conf"))
            .map(|w| w.rsplit('/').next().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    fn loader_conf(&self) -> String {
        ok(&["disk", "cat", &format!("{}:esp:loader/loader.conf", self.img)])
    }

    /// What systemd-boot does when it boots a counted entry: the counter
    /// moves one try (rename), and LoaderBootCountPath names the new file.
    fn loader_boots(&self, tx: u64) -> String {
        let ours: Vec<String> =
            self.entries().into_iter().filter(|e| e.starts_with(&format!("{TOKEN}-{tx}-"))).collect();
        assert_eq!(ours.len(), 1, "{ours:?}");
        let from = &ours[0];
        let (stem, counter) = from.strip_suffix(".conf").unwrap().split_once('+').unwrap();
        let (left, done) = counter.split_once('-').unwrap();
        let (left, done): (u32, u32) = (left.parse().unwrap(), done.parse().unwrap());
        let to = format!("{stem}+{}-{}.conf", left - 1, done + 1);
        let e = |p: &str| format!("{}:esp:loader/entries/{p}", self.img);
        let data = run(&["disk", "cat", &e(from)]).stdout;
        let tmp = self.s.join("entry");
        write(&tmp, &data, 0o644);
        ok(&["disk", "put", r(&tmp), &e(&to)]);
        ok(&["disk", "rm", &e(from)]);
        let mut v = vec![6u8, 0, 0, 0];
        for u in format!("\\loader\\entries\\{to}").encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        fs::write(self.vars.join(format!("LoaderBootCountPath-{GUID}")), v).unwrap();
        to
    }

    fn oneshot(&self) -> Option<String> {
        let raw = fs::read(self.vars.join(format!("LoaderEntryOneShot-{GUID}"))).ok()?;
        let units: Vec<u16> = raw[4..].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Some(String::from_utf16(&units).unwrap().trim_end_matches('\0').to_owned())
    }

    fn fsck(&self) {
        let data = fs::read(&self.img).unwrap();
        let p = self.s.join("esp.part");
        fs::write(&p, &data[1 << 20..65 << 20]).unwrap();
        assert!(have("fsck.fat"), "fsck.fat is missing: scripts/setup.sh installs dosfstools");
        let o = Command::new("fsck.fat").args(["-n", r(&p)]).output().unwrap();
        assert!(o.status.success(), "fsck.fat:\n{}", String::from_utf8_lossy(&o.stdout));
    }
}

fn entry(tx: u64, counter: &str) -> String {
    format!("{TOKEN}-{tx}-6.1.0-test{counter}.conf")
}

#[test]
fn passing_checks_bless_the_booted_entry_and_wanted_failures_only_count() {
    let m = Machine::new("assess-good", Some("#!/bin/sh\necho app is fine\nexit 0\n"));
    let ran = m.s.join("ran");
    write(
        &m.root.join("etc/lifeboat/health.d/wanted.d/20-optional"),
        format!("#!/bin/sh\necho optional > {}\nexit 3\n", r(&ran)).as_bytes(),
        0o755,
    );
    // Not executable: a required check that cannot run fails the boot, but
    // this one is wanted, so only recorded.
    write(&m.root.join("etc/lifeboat/health.d/wanted.d/30-noexec"), b"#!/bin/sh\nexit 0\n", 0o644);
    let booted = m.loader_boots(3);
    assert_eq!(booted, entry(3, "+2-1"));
    let out = m.lb(&["boot", "assess"]);
    assert!(out.contains("required check 50-app: passed"), "{out}");
    assert!(out.contains("wanted check 20-optional: failed (exit status 3)"), "{out}");
    assert!(out.contains("wanted check 30-noexec: could not be run: not executable"), "{out}");
    assert!(out.contains(&format!("blessed: {booted} -> {}", entry(3, ""))), "{out}");
    assert_eq!(fs::read_to_string(&ran).unwrap(), "optional\n", "the wanted check ran");
    assert!(m.entries().contains(&entry(3, "")), "{:?}", m.entries());
    assert!(m.loader_conf().contains(&format!("default {TOKEN}-3-*")), "{}", m.loader_conf());
    let status = m.lb(&["boot", "status"]);
    assert!(status.contains(&format!("{booted} (transaction 3): good; blessed")), "{status}");
    assert!(status.contains("wanted check 20-optional: failed (exit status 3)"), "{status}");
    let j = m.lb(&["--json", "boot", "status"]);
    assert!(j.contains("\"verdict\":\"good\""), "{j}");
    assert!(j.contains("\"failed_wanted\":[\"20-optional\",\"30-noexec\"]"), "{j}");
    assert!(j.contains("\"failed_required\":[]"), "{j}");
    // Run again in the same boot (the variable still names the counted file):
    // nothing to do, and nothing broken.
    let again = m.lb(&["boot", "assess"]);
    assert!(again.contains("assessed already in this boot"), "{again}");
    assert!(m.entries().contains(&entry(3, "")), "{:?}", m.entries());
    m.fsck();
}

#[test]
fn a_failing_required_check_rolls_back_after_the_configured_failures() {
    let m = Machine::new("assess-bad", Some("#!/bin/sh\necho app does not start >&2\nexit 1\n"));
    write(&m.root.join("etc/lifeboat/lifeboat.conf"), b"assess-failures = 2\n", 0o644);
    // Boot 1 of transaction 3: bad, but one failed boot of two.
    let b1 = m.loader_boots(3);
    let o = run(&m.args(&["boot", "assess"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "a bad verdict fails the command:\n{out}");
    assert!(out.contains("required check 50-app: failed (exit status 1)"), "{out}");
    assert!(out.contains("failed boot 1 of 2"), "{out}");
    assert!(m.entries().contains(&b1), "the counter is left as the loader left it: {:?}", m.entries());
    assert_eq!(m.oneshot(), None);
    // Boot 2: the second failed boot rolls back to transaction 2, the newest
    // older entry with tries left (on trial itself, so the default stays the
    // loader's own order, which passes exhausted entries over).
    let b2 = m.loader_boots(3);
    assert_eq!(b2, entry(3, "+1-2"));
    let o = run(&m.args(&["boot", "assess"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("marked bad: {b2} -> {}", entry(3, "+0-2"))), "{out}");
    let entries = m.entries();
    assert_eq!(entries, [entry(1, ""), entry(2, "+3-0"), entry(3, "+0-2")], "{entries:?}");
    assert_eq!(m.oneshot().as_deref(), Some(entry(2, "+3-0").as_str()));
    let lc = m.loader_conf();
    assert!(lc.contains(&format!("default {TOKEN}-*")), "{lc}");
    let j = m.lb(&["--json", "boot", "status"]);
    for want in [
        "\"verdict\":\"bad\"".to_owned(),
        "\"action\":\"rolled-back\"".to_owned(),
        format!("\"fallback\":\"{}\"", entry(2, "+3-0")),
        "\"failures\":2".to_owned(),
        "\"failed_required\":[\"50-app\"]".to_owned(),
    ] {
        assert!(j.contains(&want), "{want} not in {j}");
    }
    let status = m.lb(&["boot", "status"]);
    assert!(status.contains(&format!("bad, failed boot 2; rolled back to {}", entry(2, "+3-0"))), "{status}");
    assert!(status.contains("required check 50-app: failed (exit status 1)"), "{status}");
    // An entry whose tries ran out is never made the default: not by hand,
    // not by a sync while its transaction is still the active one.
    let err = fails(&m.args(&["boot", "set-default", "3"]));
    assert!(err.contains("ran out of tries"), "{err}");
    m.lb(&["boot", "sync", "--tries", "3"]);
    let lc = m.loader_conf();
    assert!(lc.contains(&format!("default {TOKEN}-*")) && !lc.contains(&format!("{TOKEN}-3-")), "{lc}");
    // The loader boots transaction 2 (the one-shot); its checks pass (the
    // failing one is transaction 3's): blessed, and the default names it.
    fs::remove_file(m.vars.join(format!("LoaderEntryOneShot-{GUID}"))).unwrap();
    ok(&["--root", r(&m.root), "state", "activate", "2"]);
    m.loader_boots(2);
    let out = m.lb(&["boot", "assess"]);
    assert!(out.contains("blessed"), "{out}");
    assert!(!out.contains("50-app"), "transaction 2 does not ship the failing check: {out}");
    assert!(m.entries().contains(&entry(2, "")), "{:?}", m.entries());
    assert!(m.loader_conf().contains(&format!("default {TOKEN}-2-*")), "{}", m.loader_conf());
    m.fsck();
}

#[test]
fn the_only_entry_on_trial_with_nothing_older_stays_and_says_so() {
    let m = Machine::new("assess-none", Some("#!/bin/sh\nexit 1\n"));
    write(&m.root.join("etc/lifeboat/lifeboat.conf"), b"assess-failures = 1\n", 0o644);
    // Transaction 1's and 2's entries out of the way: nothing to go back to.
    for e in [entry(1, ""), entry(2, "+3-0")] {
        ok(&["disk", "rm", &format!("{}:esp:loader/entries/{e}", m.img)]);
    }
    let b = m.loader_boots(3);
    let o = run(&m.args(&["boot", "assess"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("no older entry"), "{out}");
    assert_eq!(m.entries(), [b], "nothing renamed");
    assert_eq!(m.oneshot(), None);
}

#[test]
fn a_check_that_hangs_is_killed_at_the_timeout_and_etc_masks_by_name() {
    let m = Machine::new("assess-timeout", Some("#!/bin/sh\nexit 1\n"));
    write(&m.root.join("etc/lifeboat/lifeboat.conf"), b"assess-timeout = 1\nassess-failures = 3\n", 0o644);
    // The machine masks the transaction's failing check, and adds one that hangs
    // (with a child of its own, killed with it).
    fs::create_dir_all(m.root.join("etc/lifeboat/health.d/required.d")).unwrap();
    std::os::unix::fs::symlink("/dev/null", m.root.join("etc/lifeboat/health.d/required.d/50-app")).unwrap();
    write(&m.root.join("etc/lifeboat/health.d/required.d/60-hangs"), b"#!/bin/sh\nsleep 600 &\nsleep 600\n", 0o755);
    m.loader_boots(3);
    let t = std::time::Instant::now();
    let o = run_within(&m.args(&["boot", "assess"]), 60).expect("boot assess hung with its check");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(t.elapsed().as_secs() < 30, "the timeout did not end the check");
    assert!(!out.contains("50-app"), "masked by /etc: {out}");
    assert!(out.contains("required check 60-hangs: timed out after 1 s"), "{out}");
    assert!(out.contains("failed boot 1 of 3"), "{out}");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn without_a_counter_nothing_is_blessed_or_rolled_back() {
    let m = Machine::new("assess-blessed", Some("#!/bin/sh\nexit 1\n"));
    // No LoaderBootCountPath: the booted entry is blessed already.
    let mut v = vec![6u8, 0, 0, 0];
    for u in entry(1, "").encode_utf16().chain([0]) {
        v.extend_from_slice(&u.to_le_bytes());
    }
    fs::write(m.vars.join(format!("LoaderEntrySelected-{GUID}")), v).unwrap();
    let before = m.entries();
    let o = run(&m.args(&["--json", "boot", "assess"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("\"action\":\"none\"") && out.contains("not on trial"), "{out}");
    assert!(out.contains(&format!("\"entry\":\"{}\"", entry(1, ""))), "{out}");
    assert_eq!(m.entries(), before);
    // --reboot is for the running system only.
    let err = fails(&m.args(&["boot", "assess", "--reboot"]));
    assert!(err.contains("only for the running system"), "{err}");
}

#[test]
fn the_bless_unit_passes_systemd_analyze_verify() {
    assert!(have("systemd-analyze"), "systemd-analyze is missing: scripts/setup.sh installs systemd");
    let s = Scratch::new("unit");
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/lifeboat-bless.service");
    // A root holding the system's own units (boot-complete.target and the
    // rest), the unit, and the binary its ExecStart names.
    let units = s.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    for e in fs::read_dir("/usr/lib/systemd/system").unwrap().flatten() {
        let p = e.path();
        if p.is_file() && !e.file_type().unwrap().is_symlink() {
            fs::copy(&p, units.join(e.file_name())).unwrap();
        }
    }
    assert!(units.join("boot-complete.target").exists(), "this systemd has no boot-complete.target");
    let text = fs::read_to_string(&unit).unwrap();
    let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let binary = exec.split_whitespace().next().unwrap();
    assert_eq!(exec.split_whitespace().skip(1).collect::<Vec<_>>(), ["boot", "assess", "--reboot"]);
    write(&s.join(binary.trim_start_matches('/')), &fs::read(bin()).unwrap(), 0o755);
    for (name, body) in
        [("lifeboat-bless.service", text.clone()), ("broken.service", text.replace("Type=oneshot", "Type=oneshotx"))]
    {
        write(&s.join(&format!("etc/systemd/system/{name}")), body.as_bytes(), 0o644);
        let o = Command::new("systemd-analyze")
            .args([
                "verify",
                "--man=no",
                &format!("--root={}", r(&s.0)),
                r(&s.join(&format!("etc/systemd/system/{name}"))),
            ])
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        if name == "broken.service" {
            // The oracle is awake: a broken unit is found.
            assert!(!o.status.success() || !said.is_empty(), "systemd-analyze passed a broken unit");
        } else {
            assert!(o.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
        }
    }
    assert!(
        text.contains("Requires=boot-complete.target") && text.contains("After=local-fs.target boot-complete.target")
    );
    // The binary takes the command line the unit gives it.
    let help = ok(&["boot", "assess", "--help"]);
    assert!(help.contains("--reboot"), "{help}");
}

/// Files that are no checks (hidden, an editor's backup, a name with a control
/// character) are passed over as run-parts does, but each with a note naming
/// it: a boot is never taken as judged by checks that did not run unsaid.
#[test]
fn skipped_check_files_are_named() {
    let m = Machine::new("assess-skip", None);
    let dir = m.root.join("etc/lifeboat/health.d/required.d");
    for name in [".hidden", "70-backup~", "80-new\nline"] {
        write(&dir.join(name), b"#!/bin/sh\nexit 1\n", 0o755);
    }
    m.loader_boots(3);
    let o = run(&m.args(&["boot", "assess"]));
    let err = String::from_utf8_lossy(&o.stderr);
    for shown in [".hidden", "70-backup~", "80-new"] {
        assert!(err.contains(shown) && err.contains("passed over"), "{shown} not named:\n{err}");
    }
    assert!(err.contains("hidden file") && err.contains("backup") && err.contains("control character"), "{err}");
}

#[test]
fn a_rollback_drops_the_set_default_pin_so_the_next_sync_keeps_the_bad_entry_off() {
    let m = Machine::new("assess-pin", Some("#!/bin/sh\nexit 1\n"));
    write(&m.root.join("etc/lifeboat/lifeboat.conf"), b"assess-failures = 1\n", 0o644);
    let pin = m.root.join(".moss/lifeboat/default");
    m.lb(&["boot", "set-default", "3"]);
    assert!(pin.exists(), "set-default records its pin");
    m.loader_boots(3);
    let o = run(&m.args(&["boot", "assess"]));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains(&format!("marked bad: {} -> {}", entry(3, "+2-1"), entry(3, "+0-1"))), "{out}");
    assert!(err.contains("the default set with `boot set-default` is dropped"), "{err}");
    assert!(!pin.exists(), "the rollback drops the pin");
    // The next sync leaves the failed entry out of the default.
    m.lb(&["boot", "sync"]);
    let lc = m.loader_conf();
    assert!(!lc.contains(&format!("default {TOKEN}-3-")), "{lc}");
    assert!(m.entries().contains(&entry(3, "+0-1")), "{:?}", m.entries());
    m.fsck();
}

#[test]
fn a_sync_drops_a_pinned_default_whose_entries_ran_out_of_tries() {
    let m = Machine::new("assess-pin-out", None);
    let pin = m.root.join(".moss/lifeboat/default");
    m.lb(&["boot", "set-default", "2"]);
    // Three boots of transaction 2 the loader counted, none blessed: out of tries.
    for _ in 0..3 {
        m.loader_boots(2);
    }
    assert!(m.entries().contains(&entry(2, "+0-3")), "{:?}", m.entries());
    let o = run(&m.args(&["boot", "sync"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("names only entries out of tries"), "{err}");
    assert!(!pin.exists(), "the sync drops the pin");
    let lc = m.loader_conf();
    assert!(!lc.contains(&format!("default {TOKEN}-2-")), "{lc}");
    m.fsck();
}

#[test]
fn assess_of_a_named_entry_that_is_not_there_fails_naming_it() {
    let m = Machine::new("assess-noentry", None);
    for name in [entry(9, "+3-0"), "nosuch.conf".to_owned()] {
        let o = run(&m.args(&["boot", "assess", "--entry", &name]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(&name), "{err}");
    }
    // The loader's name for an entry assessed already in this boot stays a
    // no-op (covered above); a real entry given by name is assessed.
    let booted = m.loader_boots(3);
    let out = m.lb(&["boot", "assess", "--entry", &booted]);
    assert!(out.contains(&format!("blessed: {booted} -> {}", entry(3, ""))), "{out}");
}
