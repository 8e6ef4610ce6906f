//! `build_uki` against the real tools: `objdump -h` and `objcopy -O binary -j`
//! read the result's sections, the objcopy recipe of systemd 252's documentation
//! gives the same section contents, and `bootctl list` (systemd's own reader of
//! Type #2 entries) shows the entry from its `.osrel` and `.cmdline`.

mod common;

use std::process::Command;

use common::*;
use lifeboat_pe::{build_uki, pe_checksum, read_uki, PeImage, UkiParts, UKI_SECTION_CHARACTERISTICS};

const OSREL: &[u8] = b"ID=lifeboat\nPRETTY_NAME=\"Lifeboat UKI Test\"\nVERSION_ID=7\n";
const CMDLINE: &[u8] = b"console=ttyS0 root=/dev/vda1 ro";

/// A kernel-sized payload with a pattern, so a misplaced byte shows.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn objcopy_section(path: &std::path::Path, name: &str, dir: &TempDir) -> Vec<u8> {
    let out = dir.path(&format!("section{name}"));
    run(Command::new("objcopy").args(["-O", "binary", "-j", name]).arg(path).arg(&out));
    read(out)
}

#[test]
fn objdump_and_objcopy_read_what_build_uki_wrote() {
    let dir = TempDir::new("uki-objdump");
    let stub = read(STUB);
    let linux = payload(3 * 1024 * 1024 + 17, 1);
    let initrd = payload(700_001, 2);
    let parts = UkiParts {
        stub: &stub,
        osrel: OSREL,
        cmdline: CMDLINE,
        uname: Some(b"6.1.0-test"),
        initrd: &initrd,
        linux: &linux,
    };
    let uki = build_uki(&parts).unwrap();
    assert_eq!(build_uki(&parts).unwrap(), uki, "deterministic");
    let path = dir.write("uki.efi", &uki);

    let pe = PeImage::parse(&uki).unwrap();
    assert_eq!(pe.stored_checksum(), pe_checksum(&uki, pe.checksum_offset()));
    assert!(!pe.is_signed());
    let theirs = objdump_sections(&path);
    let ours: Vec<(String, u32, u32)> =
        pe.sections().iter().map(|s| (s.name.clone(), s.virtual_address, s.virtual_size)).collect();
    assert_eq!(theirs, ours);
    let names: Vec<&str> = theirs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names[names.len() - 5..], [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]);

    // Layout: VMAs aligned to SectionAlignment, above everything the stub maps and
    // not overlapping; raw data aligned to FileAlignment; read-only initialised data.
    let stub_pe = PeImage::parse(&stub).unwrap();
    let stub_end = stub_pe.sections().iter().map(|s| s.virtual_address + s.virtual_size.max(s.raw_size)).max().unwrap();
    let mut prev_end = stub_end;
    for s in &pe.sections()[stub_pe.sections().len()..] {
        assert_eq!(s.virtual_address % pe.section_alignment(), 0, "{}", s.name);
        assert_eq!(s.raw_offset % pe.file_alignment(), 0, "{}", s.name);
        assert!(s.virtual_address >= prev_end, "{} overlaps", s.name);
        assert_eq!(s.characteristics, UKI_SECTION_CHARACTERISTICS);
        prev_end = s.virtual_address + s.virtual_size;
    }
    assert!(pe.size_of_image() >= prev_end && pe.size_of_image() % pe.section_alignment() == 0);

    // objdump -p agrees on the header fields the build rewrote.
    let p = run(Command::new("objdump").arg("-p").arg(&path));
    let p = String::from_utf8_lossy(&p.stdout);
    assert!(p.contains(&format!("SizeOfImage\t\t{:08x}", pe.size_of_image())), "{p}");
    assert!(p.contains(&format!("CheckSum\t\t{:08x}", pe.stored_checksum())), "{p}");

    // objcopy extracts each part intact.
    for (name, want) in
        [(".osrel", OSREL), (".cmdline", CMDLINE), (".uname", b"6.1.0-test"), (".initrd", &initrd), (".linux", &linux)]
    {
        assert!(objcopy_section(&path, name, &dir) == want, "{name} differs");
    }

    // The same parts through the objcopy recipe give the same section contents.
    let recipe = objcopy_uki(&dir, OSREL, CMDLINE, &linux, &initrd);
    let recipe_pe = PeImage::parse(&recipe).unwrap();
    for name in [".osrel", ".cmdline", ".initrd", ".linux"] {
        assert!(recipe_pe.section(name) == pe.section(name), "{name} differs from objcopy's");
    }
    assert_eq!(read_uki(&recipe).unwrap().sbat, read_uki(&uki).unwrap().sbat);
}

/// Unmounts on drop.
struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn bootctl_lists_a_built_uki_from_its_osrel() {
    // bootctl wants the ESP to be a mount point: a tmpfs (so this test runs as root).
    let dir = TempDir::new("uki-bootctl");
    let esp = dir.path("esp");
    std::fs::create_dir_all(&esp).unwrap();
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&esp));
    let _m = Tmpfs(esp.clone());
    std::fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
    let stub = read(STUB);
    let linux = payload(100_000, 3);
    let uki =
        build_uki(&UkiParts { stub: &stub, osrel: OSREL, cmdline: CMDLINE, uname: None, initrd: b"", linux: &linux })
            .unwrap();
    std::fs::write(esp.join("EFI/Linux/lifeboat-7.efi"), &uki).unwrap();
    let out = run(Command::new("bootctl").env("SYSTEMD_RELAX_ESP_CHECKS", "1").arg("--esp-path").arg(&esp).args([
        "--no-pager",
        "--json=short",
        "list",
    ]));
    let json = String::from_utf8_lossy(&out.stdout);
    for want in [
        "\"id\":\"lifeboat-7.efi\"",
        "\"title\":\"Lifeboat UKI Test\"",
        "\"version\":\"7\"",
        "\"options\":\"console=ttyS0 root=/dev/vda1 ro\"",
        "\"linux\":\"EFI/Linux/lifeboat-7.efi\"",
    ] {
        assert!(json.contains(want), "bootctl list lacks {want}: {json}");
    }
}
