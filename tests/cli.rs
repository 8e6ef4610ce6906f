//! The command line as people and programs meet it, through the real binary:
//! `--json` gives exactly one document for every command (python3's `json.load`
//! is the oracle: it refuses two documents one after the other), errors
//! included; every subcommand's help names the global options; no option name
//! means two things; `--version`, `-h` and a bare call; the documented exit
//! statuses; and the messages of the error paths issue 29 named, each naming
//! its object and the next step.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Parses `text` with python3 as one JSON document; the error python gives
/// otherwise. The oracle must be there: without it the test fails.
fn one_json_document(text: &str) -> Result<(), String> {
    assert!(have("python3"), "python3 is missing: it is this test's JSON oracle (scripts/setup.sh installs it)");
    let mut c = Command::new("python3")
        .args(["-c", "import json,sys; json.load(sys.stdin)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A root with two transactions carrying a kernel, a disk image with an ESP, a
/// stand-in efivarfs and a loader binary.
struct Setup {
    s: Scratch,
    root: std::path::PathBuf,
    img: String,
    vars: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    let s = Scratch::new(tag);
    let root = s.join("root");
    fs::create_dir_all(&root).unwrap();
    for v in 1..=2 {
        let t = s.join(&format!("t{v}"));
        tree(&t, v);
        write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t), "--summary", &format!("v{v}")]);
    }
    write(&root.join("etc/machine-id"), b"00112233445566778899aabbccddeeff\n", 0o444);
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "96M", "--esp-size", "64M", "--root-size", "0"]);
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    write(&s.join("loader.efi"), b"MZ fake loader #### LoaderInfo: systemd-boot 252.39-1 ####\0", 0o644);
    Setup { s, root, img, vars }
}

#[test]
fn every_command_prints_one_json_document() {
    let st = setup("clijson");
    let (root, img, vars, s) = (r(&st.root), st.img.as_str(), r(&st.vars), &st.s);
    tree(&s.join("t3"), 3);
    write(&s.join("f"), b"hello", 0o644);
    let esp = |p: &str| format!("{img}:esp{p}");
    let g = ["--root", root, "--esp", img, "--efivars", vars];
    let bin = bin();
    let initrd = s.join("i.cpio");
    // (arguments, whether it succeeds)
    let cases: Vec<(Vec<String>, bool)> = [
        (vec!["state", "list"], true),
        (vec!["state", "show", "1"], true),
        (vec!["state", "show", "1", "--files"], true),
        (vec!["boot", "install", "--loader", r(&s.join("loader.efi"))], true),
        // With an ESP given, commit, activate and prune sync the entries too:
        // one document, the sync nested in it.
        (vec!["state", "commit", "--from", r(&s.join("t3")), "--summary", "v3"], true),
        (vec!["state", "activate", "2"], true),
        (vec!["state", "prune", "--keep", "5", "--dry-run"], true),
        (vec!["state", "prune", "--keep", "3"], true),
        (vec!["state", "recover", "--dry-run"], true),
        (vec!["state", "recover"], true),
        (vec!["state", "import"], false),
        (vec!["state", "show", "99"], false),
        (vec!["verify"], true),
        (vec!["verify", "--full", "--store"], true),
        (vec!["repair"], true),
        (vec!["boot", "sync", "--dry-run"], true),
        (vec!["boot", "sync"], true),
        (vec!["boot", "list"], true),
        (vec!["boot", "status"], true),
        (vec!["boot", "set-default", "2"], true),
        (vec!["boot", "set-oneshot", "2"], true),
        (vec!["boot", "bless"], true),
        (vec!["boot", "assess"], true),
        (vec!["disk", "ls", img], true),
        (vec!["disk", "ls", "-r", &esp("")], true),
        (vec!["disk", "put", r(&s.join("f")), &esp(":x/f")], true),
        (vec!["disk", "cat", &esp(":x/f")], true),
        (vec!["disk", "df", &esp("")], true),
        (vec!["disk", "check", &esp("")], true),
        (vec!["disk", "rm", &esp(":x/f")], true),
        (vec!["disk", "cat", &esp(":x/f")], false),
        (vec!["disk", "create", r(&s.join("e.img")), "--size", "64M", "--esp-size", "40M"], true),
        (vec!["firmware", "add", "--label", "Linux Boot Manager"], true),
        (vec!["firmware", "list"], true),
        (vec!["firmware", "next", "0000"], true),
        (vec!["firmware", "order", "0000"], true),
        (vec!["firmware", "prune", "--dry-run"], true),
        (vec!["firmware", "remove", "0000"], true),
        (vec!["initrd", "build", "--out", r(&initrd), "--no-modules", "--binary", bin, "--keymap", "none"], true),
        (vec!["no-such-command"], false),
        (vec!["shell"], false),
        (vec!["initrd-hook"], false),
        (vec!["state", "list", "--no-such-option"], false),
    ]
    .into_iter()
    .map(|(a, good)| (a.into_iter().map(str::to_owned).collect(), good))
    .collect();
    for (args, good) in &cases {
        let disk_or_initrd = args[0] == "disk" || args[0] == "initrd";
        let mut a: Vec<&str> = if disk_or_initrd { vec![] } else { g.to_vec() };
        a.push("--json");
        a.extend(args.iter().map(String::as_str));
        let o = run(&a);
        let out = stdout(&o);
        assert_eq!(o.status.success(), *good, "lifeboat {a:?}: {out}\n{}", stderr(&o));
        if let Err(e) = one_json_document(&out) {
            panic!("lifeboat {a:?} did not print one JSON document: {e}\nstdout:\n{out}\nstderr:\n{}", stderr(&o));
        }
        if !good {
            assert!(
                out.contains("\"error\":") && out.contains("\"exit\":"),
                "lifeboat {a:?}: the error as JSON: {out}"
            );
        }
        // Progress is for a terminal: none in JSON mode.
        assert!(!stderr(&o).contains('\r'), "lifeboat {a:?} drew progress with --json: {:?}", stderr(&o));
    }
    // The auto-sync's result is nested in the commit's.
    let t4 = s.join("t4");
    tree(&t4, 4);
    let mut a = g.to_vec();
    a.extend(["--json", "state", "commit", "--from", r(&t4)]);
    let out = ok(&a);
    assert!(out.starts_with("{\"id\":4") && out.contains("\"boot_sync\":{\"boot\":"), "{out}");
    // state show --files has the paths in JSON as in text.
    let out = ok(&["--root", root, "--json", "state", "show", "4", "--files"]);
    assert!(out.contains("\"path\":\"bin/sh\"") || out.contains("\"path\":\"usr/bin/sh\""), "{out}");
    // disk put says what it wrote.
    let out = ok(&["--json", "disk", "put", r(&s.join("f")), &esp(":y")]);
    assert!(out.contains("\"bytes\":5"), "{out}");
    // --version too.
    let out = ok(&["--json", "--version"]);
    one_json_document(&out).unwrap();
}

/// Every subcommand, found from the help itself (a command added later is
/// covered), says the global options it takes in its `--help` and `-h`, and
/// only those.
#[test]
fn every_subcommand_help_names_the_global_options() {
    fn commands(help: &str) -> Vec<String> {
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
    let top = ok(&["--help"]);
    let groups = commands(&top);
    assert!(groups.len() >= 8, "{top}");
    let mut seen = 0;
    let mut paths: Vec<Vec<String>> = groups.iter().map(|g| vec![g.clone()]).collect();
    while let Some(p) = paths.pop() {
        for flag in ["--help", "-h"] {
            let mut a: Vec<&str> = p.iter().map(String::as_str).collect();
            a.push(flag);
            let h = ok(&a);
            // disk and initrd refuse the root's options: their help does not
            // offer them (disk waits for another writer of its image).
            let files_only = p[0] == "disk" || p[0] == "initrd";
            for opt in ["--root DIR", "--esp ESP", "--boot BOOT", "--efivars DIR", "--json", "--wait SECONDS"] {
                let wanted = !files_only || opt == "--json" || (p[0] == "disk" && opt == "--wait SECONDS");
                assert_eq!(h.contains(opt), wanted, "`lifeboat {a:?}` naming {opt} is not {wanted}:\n{h}");
            }
            assert!(h.contains("Usage: lifeboat "), "{a:?}: {h}");
            assert!(h.contains("Exit Status:") && h.contains("64"), "{a:?}: {h}");
            if flag == "--help" {
                for c in commands(&h) {
                    let mut q = p.clone();
                    q.push(c);
                    paths.push(q);
                }
            }
        }
        seen += 1;
    }
    assert!(seen >= 30, "only {seen} commands found in the help");
    // The settings boot sync takes from lifeboat.conf, with the values in force.
    let s = Scratch::new("clihelp");
    write(&s.join("etc/lifeboat/lifeboat.conf"), b"keep = 3\ntries = 2\n", 0o644);
    let h = ok(&["--root", r(&s.0), "boot", "sync", "--help"]);
    assert!(h.contains("keep = 3  (lifeboat.conf)") && h.contains("tries = 2"), "{h}");
    let h = ok(&["state", "prune", "-h", "--root", r(&s.0)]);
    assert!(h.contains("keep = 3"), "{h}");
}

#[test]
fn version_short_help_and_a_bare_call() {
    let v = ok(&["--version"]);
    assert!(v.starts_with("lifeboat ") && v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    assert_eq!(ok(&["state", "--version"]), v);
    assert!(ok(&["-h"]).contains("Commands:"));
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("Usage: lifeboat") && stderr(&o).contains("--help"), "{}", stderr(&o));
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("Usage: lifeboat"), "{}", stderr(&o));
    one_json_document(&stdout(&o)).unwrap();
}

#[test]
fn no_option_name_means_two_things() {
    let s = Scratch::new("cliclash");
    let img = s.join("x.img");
    // The global --root after disk create is the root, not a size: refused,
    // naming the option that is the size.
    let o = run(&["disk", "create", r(&img), "--size", "100M", "--root", "sysroot"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("--root-size"), "{}", stderr(&o));
    assert!(!img.exists());
    // Before the subcommand, the same: never silently ignored.
    let o = run(&["--root", "50M", "disk", "create", r(&img), "--size", "100M"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("--root is not an option of `disk`"), "{}", stderr(&o));
    assert!(!img.exists());
    ok(&["disk", "create", r(&img), "--size", "100M", "--esp-size", "40M", "--root-size", "50M"]);
    let ls = ok(&["disk", "ls", r(&img)]);
    assert!(ls.contains("root"), "{ls}");
    // The global options work after the subcommand as before it.
    let a = ok(&["--json", "disk", "ls", r(&img)]);
    assert_eq!(ok(&["disk", "ls", r(&img), "--json"]), a);
}

#[test]
fn the_lock_is_waited_for_with_wait() {
    let st = setup("clilock");
    let lock = st.root.join(".moss/lifeboat/lock");
    // Another process holds lifeboat's lock for two seconds (flock(1) is the
    // oracle of what "another process" is).
    assert!(have("flock"), "flock(1) is missing (util-linux)");
    let mut holder = Command::new("flock").args([r(&lock), "sleep", "2"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    tree(&st.s.join("t3"), 3);
    let o = run(&["--root", r(&st.root), "state", "commit", "--from", r(&st.s.join("t3"))]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("locked by another lifeboat process") && stderr(&o).contains("--wait"));
    let o = run(&["--root", r(&st.root), "state", "commit", "--from", r(&st.s.join("t3")), "--wait", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    holder.wait().unwrap();
}

/// Runs and requires the exit status `code`; returns stderr.
fn fails_with(args: &[&str], code: i32) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(code), "lifeboat {args:?}:\n{}\n{}", stdout(&o), stderr(&o));
    stderr(&o)
}

/// Each error path issue 29 named: the message names the object it is about
/// and the next step.
#[test]
fn error_messages_name_the_object_and_the_next_step() {
    let s = Scratch::new("climsg");
    // An empty tree is refused (it would empty /usr), naming the tree.
    let root = s.join("root");
    fs::create_dir_all(&root).unwrap();
    let empty = s.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let e = fails_with(&["--root", r(&root), "state", "commit", "--from", r(&empty)], 1);
    assert!(e.contains(r(&empty)) && e.contains("is empty") && e.contains("--from"), "{e}");
    assert!(!root.join(".moss").exists(), "nothing is made for an empty tree");
    // A --root that does not exist is refused, not created.
    let t = s.join("t");
    tree(&t, 1);
    let missing = s.join("no-such-root");
    let e = fails_with(&["--root", r(&missing), "state", "commit", "--from", r(&t)], 1);
    assert!(e.contains(r(&missing)) && e.contains("does not exist") && e.contains("mkdir"), "{e}");
    assert!(!missing.exists());
    // A missing index is told one way, whichever command meets it, with the
    // command that makes one.
    let mut said = Vec::new();
    for (args, code) in [
        (vec!["state", "list"], 1),
        (vec!["state", "show", "1"], 1),
        (vec!["state", "activate", "1"], 1),
        (vec!["state", "prune"], 1),
        (vec!["verify"], 2),
        (vec!["repair"], 2),
    ] {
        let mut a = vec!["--root", r(&root)];
        a.extend(args);
        let e = fails_with(&a, code);
        assert!(e.contains("not a lifeboat root") && e.contains("state commit --from TREE"), "{a:?}: {e}");
        said.push(e);
    }
    said.dedup();
    assert_eq!(said.len(), 1, "the missing index told more than one way: {said:#?}");
    // A partition that is not there: named with the disk, and how to list them.
    let img = s.join("d.img");
    ok(&["disk", "create", r(&img), "--size", "64M", "--esp-size", "40M", "--root-size", "0"]);
    let e = fails_with(&["disk", "ls", &format!("{}:9", r(&img))], 1);
    assert!(e.contains("no partition number 9") && e.contains(&format!("lifeboat disk ls {}", r(&img))), "{e}");
    let e = fails_with(&["disk", "ls", &format!("{}:xbootldr", r(&img))], 1);
    assert!(e.contains("no xbootldr partition") && e.contains("disk ls"), "{e}");
    // No efivarfs: the directory named, and how to mount it; no `EFI variable *`.
    let e = fails_with(&["--efivars", r(&s.join("no-vars")), "firmware", "list"], 1);
    assert!(!e.contains("EFI variable *"), "{e}");
    assert!(e.contains(r(&s.join("no-vars"))) && e.contains("mount -t efivarfs") && e.contains("--efivars"), "{e}");
    // A firmware entry that is not there: how to see the ones that are.
    let vars = s.join("vars");
    fs::create_dir_all(&vars).unwrap();
    let e = fails_with(&["--efivars", r(&vars), "firmware", "next", "0007"], 1);
    assert!(e.contains("Boot0007 does not exist") && e.contains("firmware list"), "{e}");
    // The option clash and a bare call: exit 64 with what to use instead.
    let e = fails_with(&["disk", "create", r(&s.join("x.img")), "--size", "100M", "--root", "sysroot"], 64);
    assert!(e.contains("--root-size"), "{e}");
    assert!(fails_with(&[], 64).contains("--help"));
    // Every exit status the program can end with is in README's table and in the help.
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let help = ok(&["--help"]);
    for code in ["0", "1", "2", "64", "75"] {
        assert!(readme.contains(&format!("\n| {code} | ")), "README does not list exit status {code}");
        assert!(help.contains(&format!("\n  {code} ")), "--help does not list exit status {code}");
    }
}

/// The defaults a command takes from lifeboat.conf: `state prune` without
/// `--keep` keeps `keep =` (else 5), as `boot sync` does.
#[test]
fn prune_keeps_the_configured_default() {
    let s = Scratch::new("cliprune");
    let root = s.join("root");
    fs::create_dir_all(&root).unwrap();
    for v in 1..=7 {
        let t = s.join(&format!("t{v}"));
        tree(&t, v);
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    }
    let out = ok(&["--root", r(&root), "--json", "state", "prune", "--dry-run"]);
    assert!(out.contains("\"removed\":[2,1]") && out.contains("\"keep\":5"), "{out}");
    write(&root.join("etc/lifeboat/lifeboat.conf"), b"keep = 3\n", 0o644);
    let out = ok(&["--root", r(&root), "--json", "state", "prune"]);
    assert!(out.contains("\"removed\":[4,3,2,1]") && out.contains("\"kept\":[5,6,7]"), "{out}");
}

/// `boot set-default` is kept by later syncs (the one after a prune too) until
/// the user changes what boots; `--tries` says what it does to the entries
/// already there.
#[test]
fn set_default_is_kept_and_tries_says_what_it_does() {
    let st = setup("clidefault");
    let (root, img) = (r(&st.root), st.img.as_str());
    let esp = |extra: &[&str]| {
        let mut a = vec!["--root", root, "--esp", img];
        a.extend_from_slice(extra);
        run(&a)
    };
    let lc = || ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
    assert!(esp(&["boot", "sync"]).status.success());
    let token = "00112233445566778899aabbccddeeff";
    assert!(lc().contains(&format!("default {token}-2-")), "{}", lc());
    assert!(esp(&["boot", "set-default", "1"]).status.success());
    assert!(lc().contains(&format!("default {token}-1-")), "{}", lc());
    // A later sync, and a prune's auto-sync, keep the choice.
    let o = esp(&["boot", "sync", "--tries", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lc().contains(&format!("default {token}-1-")), "boot sync undid set-default:\n{}", lc());
    let e = stderr(&o);
    assert!(e.contains("tries = 3") && e.contains("2 entries already on $BOOT keep their boot counting"), "{e}");
    assert!(esp(&["state", "prune", "--keep", "5"]).status.success());
    assert!(lc().contains(&format!("default {token}-1-")), "prune's sync undid set-default:\n{}", lc());
    // Activating another transaction is the user changing what boots: said.
    let o = esp(&["state", "activate", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("boot set-default` is dropped"), "{}", stderr(&o));
    assert!(lc().contains(&format!("default {token}-2-")), "{}", lc());
}

/// Progress is drawn on a terminal (script(1) gives the command one) and is
/// absent on a pipe and with `--json`.
#[test]
fn progress_on_a_terminal_only() {
    assert!(have("script"), "script(1) is missing (util-linux): it gives the command a terminal");
    let s = Scratch::new("cliprogress");
    let out = s.join("i.cpio");
    let build = format!("{} initrd build --out {} --no-modules --binary {} --keymap none", bin(), r(&out), bin());
    let o = Command::new("script").args(["-qec", &build, "/dev/null"]).output().unwrap();
    let tty = stdout(&o);
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("\rbuilding the initrd") && tty.contains("wrote "), "no progress on a terminal: {tty:?}");
    let piped = run(&["initrd", "build", "--out", r(&out), "--no-modules", "--binary", bin(), "--keymap", "none"]);
    assert!(piped.status.success());
    assert!(!stderr(&piped).contains("building the initrd") && !stderr(&piped).contains('\r'), "{}", stderr(&piped));
    let json = Command::new("script").args(["-qec", &format!("{build} --json"), "/dev/null"]).output().unwrap();
    assert!(!stdout(&json).contains("building the initrd"), "progress with --json: {:?}", stdout(&json));
}

/// The top-level help is one text however asked for; it says what -h and
/// --version are, each on its line; usage lines name `lifeboat` however the
/// binary was invoked; `boot assess -h` says its lifeboat.conf defaults.
#[test]
fn help_is_one_text_and_names_lifeboat() {
    let top = ok(&["--help"]);
    assert_eq!(ok(&["-h"]), top);
    assert_eq!(ok(&["help"]), top);
    assert!(!top.contains("-h, --version"), "{top}");
    assert!(
        top.contains("-h                short for --help") && top.contains("--version         the version"),
        "{top}"
    );
    // Run through a symlink named otherwise, from another directory.
    let s = Scratch::new("clihelpname");
    let link = s.join("lb");
    std::os::unix::fs::symlink(std::fs::canonicalize(bin()).unwrap(), &link).unwrap();
    let o = Command::new("./lb").args(["boot", "assess", "-h"]).current_dir(&s.0).output().unwrap();
    let h = stdout(&o);
    assert!(h.contains("Usage: lifeboat boot assess") && !h.contains("./lb"), "{h}");
    assert!(h.contains("assess-timeout = 60 s") && h.contains("assess-failures = 2"), "{h}");
    write(&s.join("etc/lifeboat/lifeboat.conf"), b"assess-timeout = 5\n", 0o644);
    let h = ok(&["boot", "assess", "-h", "--root", r(&s.0)]);
    assert!(h.contains("assess-timeout = 5 s  (lifeboat.conf)") && h.contains("assess-failures = 2"), "{h}");
}

/// A usage error names what is wrong and where the usage is, with exit status
/// 64; a mistyped command gets the nearest one.
#[test]
fn usage_errors_name_the_problem() {
    let e = fails_with(&["--bogus"], 64);
    assert!(e.contains("--bogus") && e.contains("--help"), "{e}");
    let e = fails_with(&["--root"], 64);
    assert!(e.contains("--root needs a value"), "{e}");
    let e = fails_with(&["boot", "sync", "--wait"], 64);
    assert!(e.contains("--wait needs a value"), "{e}");
    let e = fails_with(&["stat", "list"], 64);
    assert!(e.contains("Did you mean `lifeboat state`?"), "{e}");
    let e = fails_with(&["boot", "sycn"], 64);
    assert!(e.contains("Did you mean `lifeboat boot sync`?"), "{e}");
    let e = fails_with(&["xyzzy"], 64);
    assert!(e.contains("`xyzzy` is no command") && e.contains("state"), "{e}");

    let s = Scratch::new("cliusage");
    let f = s.join("initrd.img");
    write(&f, b"x", 0o644);
    let e = fails_with(&["--root", r(&s.0), "boot", "sync", "--initrd", r(&f), "--no-initrd"], 64);
    assert!(e.contains("--no-initrd: cannot go with --initrd") && !e.contains("\"\""), "{e}");
    let e = fails_with(&["--root", r(&s.0), "boot", "sync", "--kernel-initrds", "--no-initrd"], 64);
    assert!(e.contains("--kernel-initrds"), "{e}");
    let e = fails_with(&["--root", r(&s.0), "boot", "assess", "--reboot"], 64);
    assert!(e.contains("--reboot") && e.contains(r(&s.0)), "{e}");
    let e = fails_with(&["disk", "put"], 64);
    assert!(e.contains("needs LOCAL... IMG:PART:PATH"), "{e}");
    let img = s.join("x.img");
    let e = fails_with(&["disk", "create", r(&img), "--size", "8E"], 64);
    assert!(e.contains("--size \"8E\"") && e.contains("not a size"), "{e}");
    let e = fails_with(&["disk", "create", r(&img), "--size", "64M", "--root-size", "-5M"], 64);
    assert!(e.contains("--root-size"), "{e}");
    assert!(!img.exists());
    let modules = s.join("modules");
    fs::create_dir_all(&modules).unwrap();
    let out = s.join("x.initrd");
    let e = fails_with(&["initrd", "build", "--out", r(&out), "--no-modules", "--modules", r(&modules)], 64);
    assert!(e.contains("--no-modules") && e.contains("--modules"), "{e}");
    assert!(!out.exists());
}

/// `state commit --from` the root itself, a directory holding it or a place in
/// its .moss is refused (it would copy .moss and the old /usr into the new
/// one), naming both paths; nothing is committed.
#[test]
fn commit_refuses_a_source_holding_the_root() {
    let s = Scratch::new("clifromroot");
    let root = s.join("root");
    let t = s.join("t1");
    tree(&t, 1);
    fs::create_dir_all(&root).unwrap();
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    let before = ok(&["--root", r(&root), "--json", "state", "list"]);
    for from in [root.clone(), root.join("."), s.0.clone(), root.join(".moss"), root.join(".moss/lifeboat")] {
        let e = fails_with(&["--root", r(&root), "state", "commit", "--from", r(&from)], 64);
        assert!(e.contains(r(&from)) && e.contains(r(&root)), "{e}");
    }
    // Through a symlink to the root, too.
    let link = s.join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    let e = fails_with(&["--root", r(&root), "state", "commit", "--from", r(&link)], 64);
    assert!(e.contains("is the root itself"), "{e}");
    assert_eq!(ok(&["--root", r(&root), "--json", "state", "list"]), before);
    // A tree inside the root's own usr is the usual source (--from /usr with
    // --root /): taken.
    let inside = root.join("usr/../staged");
    tree(&root.join("staged"), 2);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&inside)]);
    let _ = inside;
    tree(&s.join("t3"), 3);
    fs::create_dir_all(root.join("usr")).unwrap();
    fs::rename(s.join("t3"), root.join("usr/new")).unwrap();
    ok(&["--root", r(&root), "state", "commit", "--from", r(&root.join("usr/new"))]);
}

/// Another process holding an exclusive lock on a file (flock(1) is the
/// oracle of what "another process" is): held from [`Holder::new`]'s return
/// until [`Holder::release`].
struct Holder {
    child: std::process::Child,
    ready: std::path::PathBuf,
}

impl Holder {
    fn new(file: &Path, ready: &Path) -> Holder {
        assert!(have("flock"), "flock(1) is missing (util-linux)");
        // -o: flock(1) alone holds the lock, so it ends with it.
        let script = format!("touch {0}; while [ -e {0} ]; do sleep 0.05; done", r(ready));
        let child = Command::new("flock").args(["-x", "-o", r(file), "sh", "-c", &script]).spawn().unwrap();
        let start = std::time::Instant::now();
        while !ready.exists() {
            assert!(start.elapsed().as_secs() < 30, "flock(1) never took the lock on {}", file.display());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Holder { child, ready: ready.to_owned() }
    }

    fn release(mut self) {
        fs::remove_file(&self.ready).unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn boot_commands_that_write_take_the_roots_lock() {
    let st = setup("cliblock");
    let (root, img, vars) = (r(&st.root), st.img.as_str(), r(&st.vars));
    let g = |a: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["--root", root, "--esp", img, "--efivars", vars].map(String::from).to_vec();
        v.extend(a.iter().map(|s| s.to_string()));
        v
    };
    ok(&g(&["boot", "sync", "--tries", "3"]).iter().map(String::as_str).collect::<Vec<_>>());
    let before = ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
    let holder = Holder::new(&st.root.join(".moss/lifeboat/lock"), &st.s.join("ready"));
    for a in [
        &["boot", "sync", "--keep", "1"][..],
        &["boot", "set-default", "1"],
        &["boot", "set-oneshot", "1"],
        &["boot", "bless", "--entry", "x.conf"],
        &["boot", "assess"],
        &["boot", "install", "--loader", "/nonexistent"],
    ] {
        let args = g(a);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails_with(&args, 75);
        assert!(err.contains("locked by another lifeboat process"), "{a:?}: {err}");
    }
    // Reading needs no lock.
    ok(&g(&["boot", "list"]).iter().map(String::as_str).collect::<Vec<_>>());
    ok(&g(&["boot", "sync", "--dry-run"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]), before, "nothing was written");
    holder.release();
    // The auto-sync of a commit runs under the commit's own lock: no deadlock.
    tree(&st.s.join("t3"), 3);
    ok(&["--root", root, "--esp", img, "--efivars", vars, "state", "commit", "--from", r(&st.s.join("t3"))]);
    ok(&g(&["boot", "set-default", "2"]).iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn a_disk_image_being_written_is_busy_for_another_writer() {
    let st = setup("cliimglock");
    let (root, img, vars) = (r(&st.root), st.img.as_str(), r(&st.vars));
    write(&st.s.join("f"), b"hello", 0o644);
    let holder = Holder::new(Path::new(img), &st.s.join("ready"));
    let (f, dest) = (st.s.join("f"), format!("{img}:esp:f"));
    let put = ["disk", "put", r(&f), &dest];
    let err = fails_with(&put, 75);
    assert!(err.contains(img) && err.contains("busy"), "{err}");
    let o = run(&["--json", "disk", "put", r(&st.s.join("f")), &format!("{img}:esp:f")]);
    assert_eq!(o.status.code(), Some(75));
    one_json_document(&stdout(&o)).unwrap();
    let err = fails_with(&["--root", root, "--esp", img, "--efivars", vars, "boot", "sync"], 75);
    assert!(err.contains("busy"), "{err}");
    // Reading takes no lock.
    ok(&["disk", "ls", &format!("{img}:esp")]);
    ok(&["--root", root, "--esp", img, "--efivars", vars, "boot", "list"]);
    holder.release();
    // --wait outlasts a holder that lets go.
    let holder = Holder::new(Path::new(img), &st.s.join("ready2"));
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        holder.release();
    });
    ok(&["disk", "put", r(&st.s.join("f")), &format!("{img}:esp:f"), "--wait", "30"]);
    t.join().unwrap();
    assert_eq!(ok(&["disk", "cat", &format!("{img}:esp:f")]), "hello");
}

#[test]
fn two_writers_of_one_image_at_once_leave_it_whole() {
    let st = setup("clirace");
    let (root, img, vars) = (st.root.clone(), st.img.clone(), st.vars.clone());
    for i in 0..2 {
        write(&st.s.join(&format!("f{i}")), format!("file {i}\n").repeat(3000 * (i + 1)).as_bytes(), 0o644);
    }
    // Two loops of writers, as two admins or a timer and an admin would run
    // them; each waits for the other.
    let loops: Vec<_> = (0..2)
        .map(|i| {
            let (img, f, root, vars) = (img.clone(), st.s.join(&format!("f{i}")), root.clone(), vars.clone());
            std::thread::spawn(move || {
                for n in 0..6 {
                    ok(&["--wait", "120", "disk", "put", r(&f), &format!("{img}:esp:d{i}/f{n}")]);
                    let keep = if i == 0 { "1" } else { "2" };
                    ok(&[
                        "--wait",
                        "120",
                        "--root",
                        r(&root),
                        "--esp",
                        &img,
                        "--efivars",
                        r(&vars),
                        "boot",
                        "sync",
                        "--keep",
                        keep,
                    ]);
                }
            })
        })
        .collect();
    for l in loops {
        l.join().unwrap();
    }
    for i in 0..2 {
        for n in 0..6 {
            let got = run(&["disk", "cat", &format!("{img}:esp:d{i}/f{n}")]).stdout;
            assert_eq!(got, fs::read(st.s.join(&format!("f{i}"))).unwrap(), "d{i}/f{n}");
        }
    }
    ok(&["disk", "check", &format!("{img}:esp")]);
    let data = fs::read(&img).unwrap();
    let p = st.s.join("esp.part");
    fs::write(&p, &data[1 << 20..65 << 20]).unwrap();
    assert!(have("fsck.fat"), "fsck.fat is missing: scripts/setup.sh installs dosfstools");
    let o = Command::new("fsck.fat").args(["-n", r(&p)]).output().unwrap();
    assert!(o.status.success(), "fsck.fat:\n{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn an_absurd_wait_and_zero_tries_are_usage_errors() {
    let st = setup("cliwait");
    let (root, img, vars) = (r(&st.root), st.img.as_str(), r(&st.vars));
    for json in [false, true] {
        let mut a = vec!["--wait", "9999999999999999999", "--root", root, "--esp", img, "boot", "sync"];
        if json {
            a.insert(0, "--json");
        }
        let o = run(&a);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        assert!(stderr(&o).contains("--wait"), "{}", stderr(&o));
        if json {
            one_json_document(&stdout(&o)).unwrap();
        }
    }
    let err = fails_with(&["--root", root, "--esp", img, "--efivars", vars, "boot", "sync", "--tries", "0"], 64);
    assert!(err.contains("--tries 0"), "{err}");
    assert!(!ok(&["disk", "ls", &format!("{img}:esp")]).contains("entries/"), "nothing was written");
    // In lifeboat.conf: said and ignored, the entries written uncounted.
    write(&st.root.join("etc/lifeboat/lifeboat.conf"), b"tries = 0\n", 0o644);
    let o = run(&["--root", root, "--esp", img, "--efivars", vars, "boot", "sync"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("tries = 0 is ignored"), "{}", stderr(&o));
    let ls = ok(&["disk", "ls", &format!("{img}:esp:loader/entries")]);
    assert!(ls.contains(".conf") && !ls.contains('+'), "{ls}");
}
