//! `lifeboat firmware ...`: the firmware's boot entries (Boot####, BootOrder,
//! BootNext) through efivarfs, each tied to the partition it points at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use lifeboat_boot::efivars::EfiVars;
use lifeboat_boot::firmware::{self, boot_name};
use lifeboat_boot::loadopt::{path_string, LoadOption, Node, ACTIVE};
use lifeboat_esp::discover::{self, SysBlock};
use lifeboat_esp::fat::FatVolume;
use lifeboat_esp::{Disk, PartitionInfo, Volume};

use super::Out;
use crate::bootsync::{self, BootArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::json::Json;

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "firmware")]
/// firmware boot entries: list, add, remove, next, order, prune
pub struct FirmwareCmd {
    #[argh(subcommand)]
    pub cmd: FwSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum FwSub {
    List(FwList),
    Add(FwAdd),
    Remove(FwRemove),
    Next(FwNext),
    Order(FwOrder),
    Prune(FwPrune),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
/// Boot#### entries, BootOrder, BootCurrent, BootNext, Timeout
pub struct FwList {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
/// add (or reuse) an entry for a loader on the ESP
pub struct FwAdd {
    /// loader path on the ESP (default \EFI\systemd\systemd-bootx64.efi)
    #[argh(option, default = "String::from(\"\\\\EFI\\\\systemd\\\\systemd-bootx64.efi\")")]
    pub loader: String,
    /// the entry's description (default "Linux Boot Manager")
    #[argh(option, default = "String::from(\"Linux Boot Manager\")")]
    pub label: String,
    /// put it first in BootOrder
    #[argh(switch)]
    pub first: bool,
    /// also boot it once, on the next boot (BootNext)
    #[argh(switch)]
    pub next: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
/// delete Boot#### N (hex, as firmware shows it)
pub struct FwRemove {
    #[argh(positional)]
    pub num: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "next")]
/// boot entry N once, on the next boot (BootNext)
pub struct FwNext {
    #[argh(positional)]
    pub num: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "order")]
/// set BootOrder, e.g. 0003,0001
pub struct FwOrder {
    #[argh(positional)]
    pub list: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "prune")]
/// remove entries whose partition or loader file no longer exists
pub struct FwPrune {
    /// only say what would be removed
    #[argh(switch)]
    pub dry_run: bool,
}

fn num(s: &str) -> Result<u16> {
    let t = s.trim_start_matches("Boot").trim_start_matches("boot");
    u16::from_str_radix(t, 16).map_err(|_| Error::bad_arg("boot entry", s, "not a boot entry number (hex, e.g. 0003)"))
}

/// A partition lifeboat knows, with a device to open it through.
struct KnownPart {
    shown: String,
    disk: PathBuf,
    info: PartitionInfo,
}

/// Partitions by PARTUUID: those of the ESP's disk, and every disk the system has.
fn known_partitions(root: &Path, args: &BootArgs) -> BTreeMap<String, KnownPart> {
    let mut out = BTreeMap::new();
    let mut disks: Vec<PathBuf> = Vec::new();
    if let Some(e) = &args.esp {
        let (p, _) = lifeboat_esp::target::split_spec(e);
        if !Path::new(p).is_dir() {
            disks.push(PathBuf::from(p));
        }
    }
    let sys = SysBlock::default();
    for (name, _) in sys.disks() {
        disks.push(sys.dev.join(name));
    }
    let _ = root;
    for d in disks {
        let Ok(disk) = Disk::open(&d, false) else {
            continue;
        };
        for p in &disk.partitions {
            out.entry(p.part_guid.clone()).or_insert_with(|| KnownPart {
                shown: format!("{}:{} ({})", d.display(), p.number, p.kind.as_str()),
                disk: d.clone(),
                info: p.clone(),
            });
        }
    }
    out
}

fn efivars(args: &BootArgs) -> Result<EfiVars> {
    let dir = args.efivars.clone().unwrap_or_else(|| PathBuf::from(lifeboat_boot::efivars::DEFAULT_DIR));
    Ok(EfiVars::open(&dir)?)
}

/// Whether the loader file of an option exists on its partition.
fn file_exists(k: &KnownPart, file: &str) -> Option<bool> {
    let disk = Disk::open(&k.disk, false).ok()?;
    let mut v = FatVolume::open(disk.window(&k.info), &k.shown).ok()?;
    let rel = file.replace('\\', "/");
    v.exists(rel.trim_start_matches('/')).ok()
}

fn describe(o: &LoadOption, known: &BTreeMap<String, KnownPart>) -> String {
    match o.partition() {
        Some((g, _)) => match known.get(&g.to_ascii_lowercase()) {
            Some(k) => format!("on {}", k.shown),
            None => "on a partition that is not present".into(),
        },
        None => "firmware device path".into(),
    }
}

pub fn run(root: &Path, args: &BootArgs, c: FirmwareCmd, out: &Out) -> Result<ExitCode> {
    let vars = efivars(args)?;
    match c.cmd {
        FwSub::List(_) => {
            let fw = firmware::read(&vars)?;
            let known = known_partitions(root, args);
            let fmt = |v: &[u16]| v.iter().map(|n| format!("{n:04X}")).collect::<Vec<_>>().join(",");
            out.line(format!("BootCurrent: {}", fw.current.map(|n| format!("{n:04X}")).unwrap_or_else(|| "-".into())));
            out.line(format!("BootNext:    {}", fw.next.map(|n| format!("{n:04X}")).unwrap_or_else(|| "-".into())));
            out.line(format!("BootOrder:   {}", fmt(&fw.order)));
            out.line(format!("Timeout:     {}", fw.timeout.map(|t| format!("{t} s")).unwrap_or_else(|| "-".into())));
            let mut arr = Vec::new();
            for e in &fw.entries {
                let mark = if fw.current == Some(e.num) { "*" } else { " " };
                match &e.option {
                    Ok(o) => {
                        let active = if o.attributes & ACTIVE != 0 { "" } else { " (inactive)" };
                        let opt = if o.optional.is_empty() {
                            String::new()
                        } else {
                            format!(" data={}", o.optional.iter().map(|b| format!("{b:02x}")).collect::<String>())
                        };
                        // The firmware's label and file path, escaped: another
                        // tool (or a hostile one) wrote them.
                        out.line(format!(
                            "{mark}{} {}{active}\n      {} [{}]{opt}",
                            boot_name(e.num),
                            lifeboat_fs::shown::controls_escaped(&o.description),
                            lifeboat_fs::shown::controls_escaped(&path_string(&o.path)),
                            describe(o, &known)
                        ));
                        arr.push(
                            Json::obj()
                                .with("num", format!("{:04X}", e.num))
                                .with("description", o.description.as_str())
                                .with("active", o.attributes & ACTIVE != 0)
                                .with("path", path_string(&o.path))
                                .with("partuuid", o.partition().map(|(g, _)| g.to_owned()))
                                .with("file", o.file().map(str::to_owned))
                                .with("where", describe(o, &known))
                                .with(
                                    "optional_hex",
                                    o.optional.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                                ),
                        );
                    }
                    Err(why) => {
                        out.line(format!("{mark}{} (undecodable: {why})", boot_name(e.num)));
                        arr.push(Json::obj().with("num", format!("{:04X}", e.num)).with("error", why.as_str()));
                    }
                }
            }
            out.json(
                &Json::obj()
                    .with("current", fw.current.map(|n| format!("{n:04X}")))
                    .with("next", fw.next.map(|n| format!("{n:04X}")))
                    .with("order", fw.order.iter().map(|n| format!("{n:04X}")).collect::<Vec<_>>())
                    .with("timeout", fw.timeout)
                    .with("entries", Json::Arr(arr)),
            );
        }
        FwSub::Add(a) => {
            let (cfg, _) = Config::load(root);
            let t = bootsync::open_targets(root, args, &cfg, false)?;
            let esp = t.esp.as_ref().unwrap_or(&t.boot);
            let (disk_path, guid) = match (&esp.disk, &esp.part_uuid) {
                (Some(d), Some(g)) => (d.clone(), g.clone()),
                _ => esp_of_mount(&esp.location)?,
            };
            let disk = Disk::open(&disk_path, false)?;
            let p = disk.partitions.iter().find(|p| p.part_guid == guid).ok_or_else(|| {
                Error::bad_arg("partition", guid.to_string(), format!("is not on {}", disk_path.display()))
            })?;
            let sector = disk.sector;
            let loader = a.loader.replace('/', "\\");
            let loader = if loader.starts_with('\\') { loader } else { format!("\\{loader}") };
            let opt = LoadOption {
                attributes: ACTIVE,
                description: a.label.clone(),
                path: vec![
                    Node::HardDrive {
                        number: p.number,
                        start: p.start / sector,
                        size: p.size / sector,
                        guid: p.part_guid.clone(),
                    },
                    Node::File(loader.clone()),
                ],
                optional: vec![],
            };
            let (n, reused) = firmware::add(&vars, &opt, a.first)?;
            if a.next {
                firmware::set_next(&vars, n)?;
            }
            out.line(format!(
                "{} {}: {} -> {loader} on {}:{}{}",
                if reused { "updated" } else { "added" },
                boot_name(n),
                a.label,
                disk_path.display(),
                p.number,
                if a.first { " (first in BootOrder)" } else { "" }
            ));
            if a.next {
                out.line(format!("next boot (once): {}", boot_name(n)));
            }
            out.json(&Json::obj().with("num", format!("{n:04X}")).with("reused", reused));
        }
        FwSub::Remove(r) => {
            let n = num(&r.num)?;
            firmware::remove(&vars, n)?;
            out.line(format!("removed {}", boot_name(n)));
        }
        FwSub::Next(r) => {
            let n = num(&r.num)?;
            firmware::set_next(&vars, n)?;
            out.line(format!("next boot (once): {}", boot_name(n)));
        }
        FwSub::Order(o) => {
            let list: Vec<u16> =
                o.list.split(',').filter(|s| !s.trim().is_empty()).map(|s| num(s.trim())).collect::<Result<_>>()?;
            firmware::set_order(&vars, &list)?;
            out.line(format!("BootOrder: {}", list.iter().map(|n| format!("{n:04X}")).collect::<Vec<_>>().join(",")));
        }
        FwSub::Prune(p) => {
            let fw = firmware::read(&vars)?;
            let known = known_partitions(root, args);
            let mut removed = Vec::new();
            for e in &fw.entries {
                let Ok(o) = &e.option else { continue };
                let Some((g, _)) = o.partition() else {
                    continue;
                };
                // Only what can be proven dead goes: a loader missing from a
                // partition that is here. A partition on no disk present may be
                // on a USB stick or another system's disk: left alone.
                let why = match known.get(&g.to_ascii_lowercase()) {
                    None => {
                        out.note(format!(
                            "{} ({}) left alone: partition {g} is on no disk present (a removable disk, another system's?)",
                            boot_name(e.num),
                            o.description
                        ));
                        None
                    }
                    Some(k) => match o.file() {
                        Some(f) if file_exists(k, f) == Some(false) => Some(format!("{f} is not on {}", k.shown)),
                        _ => None,
                    },
                };
                if let Some(why) = why {
                    out.line(format!(
                        "{}{} ({}): {why}",
                        if p.dry_run { "would remove " } else { "removed " },
                        boot_name(e.num),
                        o.description
                    ));
                    if !p.dry_run {
                        firmware::remove(&vars, e.num)?;
                    }
                    removed.push(format!("{:04X}", e.num));
                }
            }
            if removed.is_empty() {
                out.line("no stale entries");
            }
            out.json(&Json::obj().with("removed", removed).with("dry_run", p.dry_run));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The disk and PARTUUID of a mounted ESP.
fn esp_of_mount(location: &str) -> Result<(PathBuf, String)> {
    let found =
        discover::boot_partitions(Path::new(location), Path::new("/proc/self/mountinfo"), &SysBlock::default())?;
    let disk = Disk::open(&found.disk, false)?;
    let p = disk
        .find(lifeboat_esp::PartitionKind::Esp)
        .ok_or_else(|| Error::NoPartition { kind: "ESP", disk: found.disk.clone() })?;
    Ok((found.disk.clone(), p.part_guid.clone()))
}
