//! `lifeboat firmware` against a stand-in efivarfs directory and a real disk image.

mod common;

use std::fs;

use common::*;
use lifeboat_boot::loadopt::{LoadOption, Node, ACTIVE};

const G: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn var(dir: &std::path::Path, name: &str, data: &[u8]) {
    let mut v = 7u32.to_le_bytes().to_vec();
    v.extend_from_slice(data);
    fs::write(dir.join(format!("{name}-{G}")), v).unwrap();
}

#[test]
fn add_list_next_order_prune() {
    let s = Scratch::new("fw");
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "64M", "--esp-size", "32M", "--root-size", "0"]);
    write(&s.join("l"), b"loader", 0o644);
    ok(&["disk", "put", s.join("l").to_str().unwrap(), &format!("{img}:esp:EFI/systemd/systemd-bootx64.efi")]);
    let vars = s.join("vars");
    fs::create_dir_all(&vars).unwrap();
    // Windows on a disk that is gone, and an entry on our ESP whose file is gone.
    let gone = LoadOption {
        attributes: ACTIVE,
        description: "Windows Boot Manager".into(),
        path: vec![
            Node::HardDrive { number: 1, start: 2048, size: 100, guid: "deadbeef-0000-4000-8000-000000000001".into() },
            Node::File("\\EFI\\Microsoft\\Boot\\bootmgfw.efi".into()),
        ],
        optional: b"WINDOWS".to_vec(),
    };
    var(&vars, "Boot0000", &gone.encode());
    var(&vars, "BootOrder", &[0, 0]);
    let base = |extra: &[&str]| -> String {
        let mut a = vec!["--root", "/nonexistent", "--esp", img.as_str(), "--efivars", vars.to_str().unwrap()];
        a.extend_from_slice(extra);
        ok(&a)
    };
    let out = base(&["firmware", "add", "--label", "Linux Boot Manager", "--first"]);
    assert!(out.contains("added Boot0001"), "{out}");
    let out = base(&["firmware", "add", "--loader", "/efi/SYSTEMD/systemd-bootx64.efi"]);
    assert!(out.contains("updated Boot0001"), "same partition and path (any case): reused\n{out}");
    let list = base(&["firmware", "list"]);
    assert!(list.contains("BootOrder:   0001,0000"), "{list}");
    assert!(
        list.contains("Boot0000 Windows Boot Manager")
            && list.contains("data=57494e444f5753")
            && list.contains("[on a partition that is not present]"),
        "{list}"
    );
    assert!(list.contains(&format!("[on {img}:1 (esp)]")), "{list}");
    let json = base(&["--json", "firmware", "list"]);
    assert!(
        json.contains("\"file\":\"\\\\efi\\\\SYSTEMD\\\\systemd-bootx64.efi\""),
        "the reused entry takes the new spelling: {json}"
    );
    base(&["firmware", "next", "0000"]);
    assert!(base(&["firmware", "list"]).contains("BootNext:    0000"));
    base(&["firmware", "order", "0000,0001"]);
    assert!(base(&["firmware", "list"]).contains("BootOrder:   0000,0001"));
    let err = fails(&["--esp", &img, "--efivars", vars.to_str().unwrap(), "firmware", "order", "0000,0007"]);
    assert!(err.contains("Boot0007 does not exist"), "{err}");
    // An entry pointing at a file that is not on the ESP.
    base(&["firmware", "add", "--loader", "\\EFI\\gone\\x.efi", "--label", "stale"]);
    // Windows' disk is not here (a removable disk? another system's?): it stays;
    // only the entry whose loader is missing from a partition that is here goes.
    let dry = base(&["firmware", "prune", "--dry-run"]);
    assert!(
        !dry.contains("would remove Boot0000") && dry.contains("would remove Boot0002") && !dry.contains("Boot0001"),
        "{dry}"
    );
    base(&["firmware", "prune"]);
    let list = base(&["firmware", "list"]);
    assert!(list.contains("Boot0000") && !list.contains("Boot0002") && list.contains("Boot0001"), "{list}");
    assert!(vars.join(format!("Boot0000-{G}")).exists());
    let err = fails(&["--efivars", s.join("none").to_str().unwrap(), "firmware", "list"]);
    assert!(err.contains("not booted with UEFI, or efivarfs is not mounted"), "{err}");
}
