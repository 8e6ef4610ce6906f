//! Helpers shared by the integration tests: scratch directories, running the real
//! binary, and building small /usr trees.
#![allow(dead_code)]

pub mod fatraw;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "lbtest-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

/// Runs lifeboat with arguments and extra environment.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lifeboat")
}

pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// Runs and requires success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "lifeboat {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and requires failure; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "lifeboat {args:?} should have failed:\n{}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn write(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A small /usr tree; `v` varies some contents.
pub fn tree(at: &Path, v: u32) {
    let _ = fs::remove_dir_all(at);
    write(&at.join("bin/sh"), format!("shell v{v}").as_bytes(), 0o755);
    write(&at.join("bin/true"), b"true binary", 0o755);
    std::os::unix::fs::symlink("sh", at.join("bin/bash")).unwrap();
    write(&at.join("lib/x86_64-linux-gnu/libc.so.6"), &vec![b'c'; 70_000], 0o755);
    write(&at.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), &vec![b'l'; 20_000], 0o755);
    write(&at.join("lib/x86_64-linux-gnu/libm.so.6"), &vec![b'm'; 30_000], 0o644);
    write(&at.join("lib/kernel/6.1.0-test/vmlinuz"), &vec![b'k'; 50_000], 0o644);
    write(&at.join("share/doc/readme"), format!("readme {v}").as_bytes(), 0o644);
    write(&at.join("share/empty"), b"", 0o644);
    write(&at.join(format!("share/only-v{v}")), format!("only in {v}").as_bytes(), 0o644);
    fs::create_dir_all(at.join("share/emptydir")).unwrap();
}

/// Every regular file and symlink below `dir` with its bytes (targets for links).
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>, u32)>) {
        let mut v: Vec<_> = fs::read_dir(d).unwrap().flatten().collect();
        v.sort_by_key(|e| e.file_name());
        for e in v {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel == ".stateID" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push((rel, fs::read_link(&p).unwrap().display().to_string().into_bytes(), 0o777));
            } else if m.is_dir() {
                out.push((rel.clone() + "/", vec![], m.permissions().mode() & 0o7777));
                walk(base, &p, out);
            } else {
                out.push((rel, fs::read(&p).unwrap(), m.permissions().mode() & 0o7777));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    nix::unistd::geteuid().is_root()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Runs lifeboat with a deadline: `None` when it had to be killed after `secs`
/// (a read that blocks forever — a FIFO where a file was expected — is a
/// failure the test must see, not a test that never ends).
pub fn run_within(args: &[&str], secs: u64) -> Option<Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child =
        Command::new(bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run lifeboat");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("wait for lifeboat") {
            return Some(Output { status, stdout: o.join().unwrap(), stderr: e.join().unwrap() });
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
