//! Nothing lost, on real input: trees with every file attribute a distribution
//! uses (hard-link groups, file capabilities, `user.*` and `trusted.*`
//! attributes, POSIX access and default ACLs, setuid binaries, sparse files)
//! and this machine's own `/usr` go through commit, rollback from the store and
//! repair, and come back identical as independent tools see them: `rsync
//! -rlpgoDHAXc --delete -n -i` prints no line, `getcap`, `getfattr` and `getfacl`
//! print the same, `du` of a sparse file does not change. Every tool is an
//! oracle: a missing one fails the test.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs an oracle tool; it must exist and succeed.
fn tool(cmd: &str, args: &[&str], cwd: Option<&Path>) -> String {
    assert!(have(cmd), "{cmd} is missing: the test needs it as an oracle (scripts/setup.sh installs it)");
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What `rsync` would change to make `dst` equal `src` (content, links, perms,
/// owners, devices, hard links, ACLs, xattrs): one line per difference.
/// `usr/.stateID` is lifeboat's own and not compared.
fn rsync_diff(src: &Path, dst: &Path) -> String {
    tool(
        "rsync",
        &[
            "-rlpgoDHAXc",
            "--delete",
            "-n",
            "-i",
            "--exclude=/.stateID",
            &format!("{}/", r(src)),
            &format!("{}/", r(dst)),
        ],
        None,
    )
}

/// `# file:` blocks of getfattr/getfacl output, by file, without the top `.stateID`.
fn blocks(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let file = lines.next().unwrap_or_default().to_owned();
        if file.ends_with("./.stateID") {
            continue;
        }
        let mut rest: Vec<&str> = lines.collect();
        rest.sort_unstable();
        out.insert(file, rest.join("\n"));
    }
    out
}

/// Every attribute of every entry below `dir`, as getfattr, getfacl and getcap
/// print them, in a form that does not depend on directory order.
fn attributes(dir: &Path) -> (BTreeMap<String, String>, BTreeMap<String, String>, Vec<String>) {
    let fattr = blocks(&tool("getfattr", &["-R", "-h", "-d", "-m", "-", "-e", "hex", "."], Some(dir)));
    let facl = blocks(&tool("getfacl", &["-R", "-p", "-P", "."], Some(dir)));
    let mut caps: Vec<String> = tool("getcap", &["-r", "."], Some(dir)).lines().map(str::to_owned).collect();
    caps.sort();
    (fattr, facl, caps)
}

/// The tree and `usr` agree under every oracle.
fn assert_same(src: &Path, usr: &Path, what: &str) {
    let d = rsync_diff(src, usr);
    assert!(d.is_empty(), "{what}: rsync would change:\n{d}");
    let (a, b) = (attributes(src), attributes(usr));
    assert_eq!(a.0, b.0, "{what}: getfattr differs");
    assert_eq!(a.1, b.1, "{what}: getfacl differs");
    assert_eq!(a.2, b.2, "{what}: getcap differs");
}

/// A tree with every attribute a distribution's /usr can carry.
fn attribute_tree(t: &Path) {
    let sh = |cmd: &str| {
        let o = Command::new("sh").arg("-ec").arg(cmd).current_dir(t).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    };
    fs::create_dir_all(t).unwrap();
    for tool in ["setcap", "setfattr", "setfacl"] {
        assert!(have(tool), "{tool} is missing: the test needs it (scripts/setup.sh installs it)");
    }
    sh("mkdir -p bin sbin share/acl/sub share/doc lib/tools
        printf 'hi\\n' > bin/a; ln bin/a bin/b; ln bin/a sbin/a-again
        head -c 150000 /usr/bin/ls > bin/capped; chmod 755 bin/capped; setcap cap_net_raw,cap_net_admin+ep bin/capped
        ln bin/capped bin/capped-too
        printf 'setuid\\n' > bin/su; chmod 4755 bin/su
        printf 'setgid\\n' > bin/wall; chown 0:5 bin/wall; chmod 2755 bin/wall
        printf 'user attrs\\n' > share/doc/tagged; setfattr -n user.origin -v lifeboat share/doc/tagged
        setfattr -n user.checksum -v 0x00ff00 share/doc/tagged
        : > share/doc/empty-tagged; setfattr -n user.empty -v yes share/doc/empty-tagged
        setfattr -n user.dir -v yes share/doc
        ln -s ../bin/a share/doc/link; setfattr -h -n trusted.lifeboat -v on-a-symlink share/doc/link
        setfacl -m u:1000:rwx,g:100:r-x share/acl; setfacl -d -m u:1000:r-x,g:100:r-x share/acl
        printf 'inherited\\n' > share/acl/f; setfacl -m u:1001:r share/acl/f
        printf 'no acl\\n' > share/acl/plain; setfacl -b share/acl/plain; chmod 640 share/acl/plain
        mkdir share/acl/sub/deeper; printf 'deep\\n' > share/acl/sub/deeper/x
        truncate -s 50M lib/sparse; printf 'data in the middle' | dd of=lib/sparse bs=1 seek=20971520 conv=notrunc 2>/dev/null
        printf 'same content, two modes\\n' > bin/z; chmod 755 bin/z
        printf 'same content, two modes\\n' > share/g1; chmod 644 share/g1; ln share/g1 share/g2
        printf 'owned\\n' > lib/tools/owned; chown 1000:1000 lib/tools/owned; chown -h 1000:1000 share/doc/link
        ");
}

#[test]
fn every_attribute_survives_commit_rollback_and_repair() {
    assert!(is_root(), "file capabilities and trusted.* attributes need root");
    let s = Scratch::new("attrs");
    let (src, root) = (s.join("src"), s.join("root"));
    fs::create_dir_all(&root).unwrap();
    attribute_tree(&src);
    let usr = root.join("usr");
    ok(&["--root", r(&root), "state", "commit", "--from", r(&src), "--summary", "attributes"]);
    assert_same(&src, &usr, "the committed tree");
    let blocks_of = |p: &Path| fs::metadata(p).unwrap().blocks();
    assert_eq!(blocks_of(&usr.join("lib/sparse")), blocks_of(&src.join("lib/sparse")), "sparse after commit");
    // A file with attributes is never the store's inode; a hard-link group of
    // copies is one inode.
    let ino = |p: &str| fs::metadata(usr.join(p)).unwrap().ino();
    assert_eq!(ino("bin/capped"), ino("bin/capped-too"));
    assert_eq!(ino("share/g1"), ino("share/g2"));
    assert_ne!(ino("share/g1"), ino("bin/z"));
    // The same tree again: those files are shared with the first transaction
    // (each is its blob's variant), not copied again.
    ok(&["--root", r(&root), "state", "commit", "--from", r(&src), "--summary", "again"]);
    let first = |p: &str| fs::metadata(root.join(".moss/root/1/usr").join(p)).unwrap().ino();
    for p in ["bin/capped", "share/g1", "share/doc/tagged", "share/acl/f"] {
        assert_eq!(ino(p), first(p), "{p} is not shared between the transactions");
    }

    // Another transaction, then the first back from the store alone.
    let other = s.join("other");
    tree(&other, 2);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&other)]);
    fs::remove_dir_all(root.join(".moss/root/1")).unwrap();
    let out = ok(&["--root", r(&root), "state", "activate", "1"]);
    assert!(out.contains("rebuilt from the store"), "{out}");
    assert_same(&src, &usr, "transaction 1 rebuilt from the store");
    assert_eq!(blocks_of(&usr.join("lib/sparse")), blocks_of(&src.join("lib/sparse")), "sparse after rollback");
    ok(&["--root", r(&root), "verify"]);
    ok(&["--root", r(&root), "verify", "--full"]);

    // Dropped capability and changed ACL: a quick verify names both.
    tool("setcap", &["-r", r(&usr.join("bin/capped"))], None);
    tool("setfacl", &["-m", "u:1001:rw", r(&usr.join("share/acl/f"))], None);
    let o = run(&["--root", r(&root), "verify"]);
    let found = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{found}");
    assert!(
        found.contains("wrong-xattr") && found.contains("bin/capped") && found.contains("security.capability missing"),
        "{found}"
    );
    assert!(found.contains("share/acl/f") && found.contains("system.posix_acl_access differs"), "{found}");
    // A capability added where none was recorded: `--full` finds it.
    tool("setcap", &["cap_sys_admin+ep", r(&usr.join("bin/su"))], None);
    let o = run(&["--root", r(&root), "verify", "--full"]);
    let found = String::from_utf8_lossy(&o.stdout);
    assert!(found.contains("bin/su") && found.contains("security.capability added"), "{found}");
    ok(&["--root", r(&root), "repair", "--full"]);
    assert_same(&src, &usr, "after repair of attributes");
    ok(&["--root", r(&root), "verify", "--full"]);

    // A deleted directory of hard links, capabilities and setuid binaries.
    fs::remove_dir_all(usr.join("bin")).unwrap();
    fs::remove_dir_all(usr.join("share/acl")).unwrap();
    ok(&["--root", r(&root), "repair"]);
    assert_same(&src, &usr, "after repair of deleted directories");
    ok(&["--root", r(&root), "verify", "--full"]);

    // Content damaged in place through a file that is its variant's inode:
    // `repair --full` makes the variant again from the blob.
    let capped = fs::read(src.join("bin/capped")).unwrap();
    let mut bad = capped.clone();
    bad[100] ^= 1;
    fs::write(usr.join("bin/capped"), &bad).unwrap();
    tool("setcap", &["cap_net_raw,cap_net_admin+ep", r(&usr.join("bin/capped"))], None);
    assert_eq!(run(&["--root", r(&root), "verify", "--full"]).status.code(), Some(1));
    ok(&["--root", r(&root), "repair", "--full"]);
    assert_same(&src, &usr, "after repair of a damaged variant");

    // When no retained transaction needs them any more, prune removes them.
    let variants = root.join(".moss/assets/lifeboat-variants");
    let count = |d: &Path| -> usize {
        fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| fs::read_dir(e.path()).map(|r| r.count()).unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    // bin/capped, share/g1, share/doc/tagged, share/acl/f.
    assert_eq!(count(&variants), 4);
    ok(&["--root", r(&root), "state", "activate", "3"]);
    ok(&["--root", r(&root), "state", "prune", "--keep", "1"]);
    assert_eq!(count(&variants), 0, "variants left after their transactions went");
}

/// This machine's own /usr — hard-link groups (git-core, mesa's dri), a file
/// capability (gst-ptp-helper), setuid binaries — round-trips exactly through
/// commit, a rollback from the store, and a repair of a deleted directory of
/// hard links.
#[test]
fn this_machines_usr_round_trips() {
    assert!(is_root(), "committing /usr as it is needs root");
    let s = Scratch::new("realusr");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let src = Path::new("/usr");
    let usr = root.join("usr");
    let out = ok(&["--root", r(&root), "state", "commit", "--from", "/usr", "--summary", "this machine's /usr"]);
    assert!(out.contains("committed transaction 1"), "{out}");
    assert_same(src, &usr, "the committed /usr");
    let other = s.join("other");
    tree(&other, 2);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&other)]);
    fs::remove_dir_all(root.join(".moss/root/1")).unwrap();
    ok(&["--root", r(&root), "state", "activate", "1"]);
    assert_same(src, &usr, "/usr rebuilt from the store");
    // The hard-link groups of git's programs and of mesa's drivers.
    let mut removed = Vec::new();
    for d in ["lib/git-core", "lib/x86_64-linux-gnu/dri"] {
        if usr.join(d).is_dir() {
            fs::remove_dir_all(usr.join(d)).unwrap();
            removed.push(d);
        }
    }
    assert!(!removed.is_empty(), "this /usr has neither git-core nor dri: no hard-link group to repair");
    ok(&["--root", r(&root), "repair"]);
    assert_same(src, &usr, "after repair of deleted hard-link directories");
    ok(&["--root", r(&root), "verify"]);
}
