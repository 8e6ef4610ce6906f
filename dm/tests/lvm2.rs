//! The LVM reader and planner against the real lvm2 tools: volume groups made by
//! `lvm` on loop devices, read back by lifeboat-dm and compared with what `lvm`
//! itself reports (segments, extent ranges, stripes, pe_start, uuids, seqno).
//!
//! Running lvm2 without device-mapper (this host's kernel has none: opening
//! /dev/mapper/control gives ENODEV). What was found:
//! - pvcreate, vgcreate, vgchange --addtag, lvrename, vgcfgbackup work as they are.
//! - lvcreate refuses even with `-an -Zn` ("striped: Required device-mapper
//!   target(s) not detected in your kernel"). With `global { activation = 0 }`
//!   (or `--driverloaded n`) it creates linear and striped LVs, and lvextend,
//!   lvchange -ky, lvremove and vgremove work; the LVs show as `-wi-XX----`.
//! - A thin pool cannot be made even then (lvcreate --type thin-pool: "Can't
//!   create thin-pool without using device-mapper kernel driver"; lvconvert
//!   --type thin-pool: "thin-pool: Required device-mapper target(s) not
//!   detected"). What works: make two linear LVs, `vgcfgbackup -f`, edit the text
//!   into a pool with hidden `_tdata`/`_tmeta` sub-LVs, `vgcfgrestore --force -f`;
//!   lvs then shows the pool as `twi---tz--`.
//! - A small metadata area needs `pvcreate --metadatasize 32k --dataalignment 4k`
//!   (32 KiB is lvm's minimum; without a small alignment the area is padded to
//!   the 1 MiB data alignment). With a VG of six LVs (about 2.4 KiB of text,
//!   written 512-aligned after the previous copy) the text wraps after about
//!   eight updates.
//! - Isolation from the host: `LVM_SYSTEM_DIR` points at a scratch lvm.conf whose
//!   filter and global_filter accept only this test's loop devices, with no
//!   devices file, no hints, no udev, no backups or archives (nothing is written
//!   under /etc/lvm) and the lock directory in the scratch directory.
//!
//! The tests need root, losetup and /usr/sbin/lvm; without them they fail with a
//! message (scripts/setup.sh installs lvm2). Loop devices and VGs are removed
//! even when a test fails. Set LIFEBOAT_DM_SAVE_METADATA=DIR to keep the
//! metadata texts read (the fuzz corpus is seeded from them).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat_dm::lvm::{plan_activation, plan_activation_lenient, read_pv, LvmError, PvInfo, Selection};
use lifeboat_dm::DevNo;

const LVM: &str = "/usr/sbin/lvm";

/// Loop devices over sparse files, an lvm.conf that sees only them, and the VGs
/// made on them; all undone on drop.
struct Lab {
    dir: PathBuf,
    loops: Vec<String>,
    vgs: Vec<String>,
}

impl Lab {
    fn new(tag: &str, pvs: usize, mib: u64) -> Lab {
        assert!(nix::unistd::Uid::effective().is_root(), "the lvm2 tests need root (loop devices, pvcreate)");
        assert!(Path::new(LVM).exists(), "{LVM} is missing: install lvm2 (scripts/setup.sh does)");
        assert!(Command::new("losetup").arg("--version").output().is_ok(), "losetup is missing (util-linux / mount)");
        let dir = std::env::temp_dir().join(format!("lifeboat-dm-lvm2-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let mut lab = Lab { dir, loops: Vec::new(), vgs: Vec::new() };
        for i in 0..pvs {
            let img = lab.dir.join(format!("pv{i}.img"));
            File::create(&img).unwrap().set_len(mib << 20).unwrap();
            let out = Command::new("losetup").args(["-f", "--show"]).arg(&img).output().unwrap();
            assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
            lab.loops.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
        }
        let accept: String = lab.loops.iter().map(|l| format!("\"a|^{l}$|\", ")).collect();
        let d = lab.dir.display();
        let conf = format!(
            "devices {{ filter = [ {accept}\"r|.*|\" ] global_filter = [ {accept}\"r|.*|\" ] use_devicesfile = 0 \
             hints = \"none\" obtain_device_list_from_udev = 0 external_device_info_source = \"none\" }}\n\
             activation {{ udev_sync = 0 udev_rules = 0 monitoring = 0 }}\n\
             backup {{ backup = 0 archive = 0 backup_dir = \"{d}/backup\" archive_dir = \"{d}/archive\" }}\n\
             global {{ activation = 0 locking_dir = \"{d}/lock\" }}\n"
        );
        std::fs::write(lab.dir.join("etc/lvm.conf"), conf).unwrap();
        lab
    }

    fn lvm_status(&self, args: &[&str]) -> std::process::Output {
        Command::new(LVM)
            .args(args)
            .env("LVM_SYSTEM_DIR", self.dir.join("etc"))
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .unwrap()
    }

    /// Runs lvm; its stdout, or a panic with its stderr.
    fn lvm(&self, args: &[&str]) -> String {
        let out = self.lvm_status(args);
        assert!(out.status.success(), "lvm {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A report as rows of '|'-separated fields, sizes in sectors.
    fn report(&self, cmd: &str, fields: &str, extra: &[&str]) -> Vec<Vec<String>> {
        let mut args = vec![cmd, "--noheadings", "--separator", "|", "--units", "s", "--nosuffix", "-o", fields];
        args.extend_from_slice(extra);
        self.lvm(&args)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().split('|').map(str::to_string).collect())
            .collect()
    }

    fn vgcreate(&mut self, name: &str, extra: &[&str]) {
        let mut args = vec!["vgcreate", "-s", "4m", name];
        args.extend(self.loops.iter().map(String::as_str));
        args.extend_from_slice(extra);
        self.lvm(&args);
        self.vgs.push(name.to_string());
    }

    fn devno(path: &str) -> DevNo {
        let rdev = std::fs::metadata(path).unwrap().rdev();
        DevNo::new(nix::sys::stat::major(rdev) as u32, nix::sys::stat::minor(rdev) as u32)
    }

    /// Every loop device read by lifeboat-dm.
    fn read_pvs(&self) -> Vec<(DevNo, PvInfo)> {
        self.loops
            .iter()
            .map(|l| {
                let pv = read_pv(&File::open(l).unwrap()).unwrap().unwrap_or_else(|| panic!("{l}: no PV label"));
                if let Some(dir) = std::env::var_os("LIFEBOAT_DM_SAVE_METADATA") {
                    let name = format!("{}-{}.txt", self.dir.file_name().unwrap().to_string_lossy(), pv.pv_uuid);
                    std::fs::write(Path::new(&dir).join(name), pv.metadata.as_deref().unwrap_or_default()).unwrap();
                }
                (Lab::devno(l), pv)
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for vg in &self.vgs {
            let _ = self.lvm_status(&["vgremove", "-ff", "-y", vg]);
        }
        if !self.loops.is_empty() {
            let mut args = vec!["pvremove", "-ff", "-y"];
            args.extend(self.loops.iter().map(String::as_str));
            let _ = self.lvm_status(&args);
        }
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sel(cmdline: &str) -> Selection {
    Selection::from_cmdline(cmdline)
}

/// Turns LVs `pdata` and `pmeta` of `vg` into a thin pool `pool` by editing the
/// VG's text, the one way to make a pool without device-mapper (see the top).
fn make_thin_pool(lab: &Lab, vg: &str) {
    let f = lab.dir.join("vg.backup");
    lab.lvm(&["vgcfgbackup", "-f", f.to_str().unwrap(), vg]);
    let text = std::fs::read_to_string(&f).unwrap();
    let at = text.find("\t\tpdata {").expect("pdata in the backup");
    let (head, tail) = text.split_at(at);
    let tail = tail
        .replacen("\t\tpdata {", "\t\tpool_tdata {", 1)
        .replacen("\t\tpmeta {", "\t\tpool_tmeta {", 1)
        .replace("status = [\"READ\", \"WRITE\", \"VISIBLE\"]", "status = [\"READ\", \"WRITE\"]");
    let pool = "\t\tpool {\n\t\t\tid = \"PooLPo-oLPo-oLPo-oLPo-oLPo-oLPo-oLPooL\"\n\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\
                \t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = 2\n\
                \t\t\t\ttype = \"thin-pool\"\n\t\t\t\tmetadata = \"pool_tmeta\"\n\t\t\t\tpool = \"pool_tdata\"\n\
                \t\t\t\ttransaction_id = 0\n\t\t\t\tchunk_size = 128\n\t\t\t\tdiscards = \"passdown\"\n\
                \t\t\t\tzero_new_blocks = 1\n\t\t\t}\n\t\t}\n\n";
    std::fs::write(&f, format!("{head}{pool}{tail}")).unwrap();
    lab.lvm(&["vgcfgrestore", "--force", "-f", f.to_str().unwrap(), vg]);
    let attr = lab.report("lvs", "lv_name,lv_attr", &[&format!("{vg}/pool")]);
    assert!(attr[0][1].starts_with('t'), "lvm does not see a thin pool: {attr:?}");
}

/// The tables lvm's own reports imply for LV `lv`, one (start, length, type,
/// params) per segment: extents from seg_start_pe/seg_size_pe, devices and
/// their extent ranges from seg_pe_ranges, pe_start from pvs.
fn tables_from_reports(lab: &Lab, vg: &str, lv: &str) -> Vec<(u64, u64, String, String)> {
    let es: u64 = lab.report("vgs", "vg_extent_size", &[vg])[0][0].parse().unwrap();
    let pe_start = |dev: &str| -> u64 {
        let rows = lab.report("pvs", "pv_name,pe_start", &[]);
        rows.iter().find(|r| r[0] == dev).unwrap_or_else(|| panic!("{dev} not in pvs"))[1].parse().unwrap()
    };
    let mut rows = lab.report(
        "lvs",
        "seg_start_pe,seg_size_pe,seg_pe_ranges,stripes,stripe_size,segtype",
        &["--segments", &format!("{vg}/{lv}")],
    );
    rows.sort_by_key(|r| r[0].parse::<u64>().unwrap());
    rows.iter()
        .map(|r| {
            let start = r[0].parse::<u64>().unwrap() * es;
            let len = r[1].parse::<u64>().unwrap() * es;
            let ranges: Vec<(String, u64)> = r[2]
                .split_whitespace()
                .map(|x| {
                    let (dev, range) = x.rsplit_once(':').unwrap();
                    let first: u64 = range.split('-').next().unwrap().parse().unwrap();
                    (Lab::devno(dev).to_string(), pe_start(dev) + first * es)
                })
                .collect();
            assert_eq!(ranges.len().to_string(), r[3], "stripes of {lv}");
            if ranges.len() == 1 {
                assert_eq!(r[5], "linear");
                (start, len, "linear".into(), format!("{} {}", ranges[0].0, ranges[0].1))
            } else {
                assert_eq!(r[5], "striped");
                let devs: Vec<String> = ranges.iter().map(|(d, o)| format!("{d} {o}")).collect();
                (start, len, "striped".into(), format!("{} {} {}", ranges.len(), r[4], devs.join(" ")))
            }
        })
        .collect()
}

fn table(p: &lifeboat_dm::lvm::PlannedLv) -> Vec<(u64, u64, String, String)> {
    p.targets.iter().map(|t| (t.start, t.length, t.kind.clone(), t.params().to_string())).collect()
}

/// Three PVs (one with two metadata areas, one with none), a linear LV extended
/// past another LV (two segments), a striped LV, an activation-skip LV and a
/// thin pool; the model, the names and every table against lvm's reports.
#[test]
fn real_volume_group_plans_match_lvm_reports() {
    let mut lab = Lab::new("vg", 3, 64);
    let (a, b, c) = (lab.loops[0].clone(), lab.loops[1].clone(), lab.loops[2].clone());
    lab.lvm(&["pvcreate", &a]);
    lab.lvm(&["pvcreate", "--pvmetadatacopies", "2", &b]);
    lab.lvm(&["pvcreate", "--pvmetadatacopies", "0", &c]);
    // A dash in the VG's and an LV's name: doubled in the dm name.
    let vg = format!("lb-dm{}", std::process::id());
    lab.vgcreate(&vg, &[]);
    let mk = |args: &[&str]| {
        let mut v = vec!["lvcreate", "-an", "-Zn"];
        v.extend_from_slice(args);
        lab.lvm(&v);
    };
    mk(&["-L", "8m", "-n", "root", &vg, &a]);
    mk(&["-L", "4m", "-n", "swap-1", &vg, &a]);
    lab.lvm(&["lvextend", "-L", "+8m", &format!("{vg}/root"), &a]);
    mk(&["-i", "2", "-I", "64k", "-L", "16m", "-n", "str", &vg, &b, &c]);
    mk(&["-ky", "-L", "4m", "-n", "skipped", &vg]);
    mk(&["-L", "8m", "-n", "pdata", &vg]);
    mk(&["-L", "4m", "-n", "pmeta", &vg]);
    make_thin_pool(&lab, &vg);

    let pvs = lab.read_pvs();
    assert_eq!(pvs[1].1.metadata_areas.len(), 2);
    assert!(pvs[2].1.metadata_areas.is_empty() && pvs[2].1.metadata.is_none());
    // PV uuids, pe_start and pe_count against pvs.
    let model = lifeboat_dm::lvm::parse_vg(pvs[0].1.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(Some(&model), lifeboat_dm::lvm::parse_vg(pvs[1].1.metadata.as_deref().unwrap()).ok().as_ref());
    for row in lab.report("pvs", "pv_name,pv_uuid,pe_start,pv_pe_count", &[]) {
        let (_, info) = pvs.iter().find(|(d, _)| *d == Lab::devno(&row[0])).unwrap();
        assert_eq!(info.pv_uuid, row[1].replace('-', ""));
        let m = model.pvs.iter().find(|p| p.id == row[1]).unwrap();
        assert_eq!((m.pe_start.to_string(), m.pe_count.to_string()), (row[2].clone(), row[3].clone()));
    }
    let v = &lab.report("vgs", "vg_uuid,vg_seqno,vg_extent_size", &[&vg])[0];
    assert_eq!(
        (&model.id, model.seqno.to_string(), model.extent_size.to_string()),
        (&v[0], v[1].clone(), v[2].clone())
    );
    let mut lvm_names: Vec<String> = lab
        .report("lvs", "lv_name", &["-a", &vg])
        .into_iter()
        .map(|r| r[0].trim_matches(|c| c == '[' || c == ']').to_string())
        .collect();
    let mut names: Vec<String> = model.lvs.iter().map(|l| l.name.clone()).collect();
    lvm_names.sort();
    names.sort();
    assert_eq!(names, lvm_names);

    // Every VG: the thin pool is refused by name.
    match plan_activation(&pvs, &Selection::all()) {
        Err(e @ LvmError::Unsupported { .. }) => {
            let s = e.to_string();
            assert!(s.contains(&format!("{vg}/pool")) && s.contains("thin-pool") && s.contains("not supported"), "{s}");
        }
        other => panic!("a thin pool must be refused: {other:?}"),
    }
    // PID 1's lenient plan: the pool is left out with a note naming it, the
    // linear and striped LVs beside it still planned (the skipped one is not).
    let (lenient, notes) = plan_activation_lenient(&pvs, &Selection::all()).unwrap();
    let mut lenient_lvs: Vec<&str> = lenient.iter().map(|p| p.lv.as_str()).collect();
    lenient_lvs.sort();
    assert_eq!(lenient_lvs, vec!["root", "str", "swap-1"]);
    assert!(
        notes.len() == 1 && notes[0].contains(&format!("{vg}/pool")) && notes[0].contains("left inactive"),
        "{notes:?}"
    );
    // Named, the pool still fails the plan.
    assert!(plan_activation_lenient(&pvs, &sel(&format!("rd.lvm.lv={vg}/pool"))).is_err());
    // The named LVs: tables as lvm's reports imply them.
    let plan = plan_activation(
        &pvs,
        &sel(&format!("rd.lvm.lv={vg}/root rd.lvm.lv={vg}/swap-1 rd.lvm.lv={vg}/str rd.lvm.lv={vg}/skipped")),
    )
    .unwrap();
    let lv_uuids = lab.report("lvs", "lv_name,lv_uuid", &[&vg]);
    let planned: Vec<&str> = plan.iter().map(|p| p.lv.as_str()).collect();
    assert_eq!(planned, vec!["root", "swap-1", "str", "skipped"]);
    for p in &plan {
        assert_eq!(table(p), tables_from_reports(&lab, &vg, &p.lv), "{}", p.lv);
        let lv_id = &lv_uuids.iter().find(|r| r[0] == p.lv).unwrap()[1];
        assert_eq!(p.dm_uuid, format!("LVM-{}{}", model.id.replace('-', ""), lv_id.replace('-', "")));
        assert!(!p.read_only);
    }
    assert_eq!(plan[0].dm_name, format!("lb--dm{}-root", std::process::id()));
    assert_eq!(plan[1].dm_name, format!("lb--dm{}-swap--1", std::process::id()));
    assert_eq!(plan[0].targets.len(), 2, "root was extended after swap-1: two segments");
    assert_eq!(plan[2].targets[0].kind, "striped");

    // str's second stripe is on the PV without metadata; without that device:
    match plan_activation(&pvs[..2], &sel(&format!("rd.lvm.lv={vg}/str"))) {
        Err(LvmError::MissingPv { vg: v, lv, pv }) => {
            assert_eq!((v.as_str(), lv.as_str()), (vg.as_str(), "str"));
            let want = &lab.report("pvs", "pv_uuid", &[&c])[0][0];
            assert_eq!(&pv, want);
        }
        other => panic!("{other:?}"),
    }
    // root needs only the first PV.
    assert!(plan_activation(&pvs[..1], &sel(&format!("rd.lvm.lv={vg}/root"))).is_ok());

    // Without the pool: every visible LV but the activation-skip one; the same
    // for the VG named.
    lab.lvm(&["lvremove", "-f", &format!("{vg}/pool")]);
    let pvs = lab.read_pvs();
    for s in [Selection::all(), sel(&format!("rd.lvm.vg={vg}"))] {
        let plan = plan_activation(&pvs, &s).unwrap();
        let planned: Vec<&str> = plan.iter().map(|p| p.lv.as_str()).collect();
        assert_eq!(planned, vec!["root", "swap-1", "str"]);
    }
}

/// The raw_locn of the first metadata area: (offset, size, area size).
fn raw_locn(pv: &PvInfo, dev: &str) -> (u64, u64, u64) {
    let mut h = [0u8; 64];
    std::os::unix::fs::FileExt::read_exact_at(&File::open(dev).unwrap(), &mut h, pv.metadata_areas[0].offset).unwrap();
    let u = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap());
    (u(40), u(48), u(32))
}

/// A 32 KiB metadata area, updated until the text wraps around its end; every
/// copy on the way is read (checksums checked) and agrees with lvm.
#[test]
fn wrapped_metadata_text_is_followed() {
    let mut lab = Lab::new("wrap", 1, 64);
    let dev = lab.loops[0].clone();
    lab.lvm(&["pvcreate", "--labelsector", "2", "--metadatasize", "32k", "--dataalignment", "4k", &dev]);
    let vg = format!("lbwrap{}", std::process::id());
    lab.vgcreate(&vg, &[]);
    for i in 0..6 {
        lab.lvm(&["lvcreate", "-an", "-Zn", "-L", "4m", "-n", &format!("lv{i}"), &vg]);
    }
    let mut wrapped = false;
    for i in 0..40 {
        if i % 3 == 2 {
            let (from, to) = if i % 2 == 0 { ("lv0", "lv0x") } else { ("lv0x", "lv0") };
            lab.lvm(&["lvrename", &vg, from, to]);
        } else {
            lab.lvm(&["vgchange", "--addtag", &format!("t{i}"), &vg]);
        }
        let pvs = lab.read_pvs();
        let pv = &pvs[0].1;
        assert_eq!(pv.label_sector, 2);
        let model = lifeboat_dm::lvm::parse_vg(pv.metadata.as_deref().expect("metadata read")).unwrap();
        let v = &lab.report("vgs", "vg_seqno,vg_tags", &[&vg])[0];
        assert_eq!(model.seqno.to_string(), v[0]);
        assert_eq!(model.tags.join(","), v[1]);
        let (off, len, size) = raw_locn(pv, &dev);
        assert_eq!(size, 32768);
        if off + len > size {
            wrapped = true;
            if let Some(dir) = std::env::var_os("LIFEBOAT_DM_SAVE_METADATA") {
                // The device's head (label, 32 KiB area with the wrapped text) as a seed.
                let mut head = vec![0u8; (pv.metadata_areas[0].offset + size) as usize];
                std::os::unix::fs::FileExt::read_exact_at(&File::open(&dev).unwrap(), &mut head, 0).unwrap();
                std::fs::write(Path::new(&dir).join("wrapped-pv-head.img"), head).unwrap();
            }
            // A plan from the wrapped copy works too.
            let plan = plan_activation(&pvs, &sel(&format!("rd.lvm.vg={vg}"))).unwrap();
            assert_eq!(plan.len(), 6);
            break;
        }
    }
    assert!(wrapped, "the metadata never wrapped around the 32 KiB area");
}
