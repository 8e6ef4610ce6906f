//! `lifeboat disk ...`: make GPT disk images and work on their partitions without
//! mounting (`IMG[:PART[:PATH]]`, PART a number, `esp`, `xbootldr` or `root`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use lifeboat_esp::disk::{self, CreateSpec, Disk};
use lifeboat_esp::fat::FatVolume;
use lifeboat_esp::window::Window;
use lifeboat_esp::{parse_size, Volume};

use super::Out;
use crate::error::{Error, Result};
use crate::json::Json;

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "disk")]
/// disk images and partitions: create, ls, cat, put, rm, df, check
pub struct DiskCmd {
    #[argh(subcommand)]
    pub cmd: DiskSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum DiskSub {
    Create(CreateCmd),
    Ls(LsCmd),
    Cat(CatCmd),
    Put(PutCmd),
    Rm(RmCmd),
    Df(DfCmd),
    Check(CheckCmd),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "create")]
/// create a GPT disk image with a FAT ESP, optional XBOOTLDR and a root partition
pub struct CreateCmd {
    #[argh(positional)]
    pub image: PathBuf,
    /// total size (e.g. 2G)
    #[argh(option)]
    pub size: String,
    /// ESP size (default 256M)
    #[argh(option, default = "String::from(\"256M\")")]
    pub esp_size: String,
    /// XBOOTLDR size (none by default)
    #[argh(option)]
    pub xbootldr_size: Option<String>,
    /// root partition size (default: the rest of the disk; 0 for none)
    #[argh(option)]
    pub root_size: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ls")]
/// list partitions (IMG) or a directory (IMG:PART[:PATH])
pub struct LsCmd {
    #[argh(positional)]
    pub spec: String,
    /// list directories recursively
    #[argh(switch, short = 'r')]
    pub recursive: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "cat")]
/// write a file from IMG:PART:PATH to stdout
pub struct CatCmd {
    #[argh(positional)]
    pub spec: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "put")]
/// copy local files to IMG:PART:PATH (crash-safe replace; parents created); with
/// several files, or PATH ending in /, PATH is a directory
pub struct PutCmd {
    /// local files, then the destination IMG:PART:PATH
    #[argh(positional, greedy)]
    pub args: Vec<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "rm")]
/// remove a file or empty directory at IMG:PART:PATH
pub struct RmCmd {
    #[argh(positional)]
    pub spec: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "df")]
/// free and total space of IMG:PART
pub struct DfCmd {
    #[argh(positional)]
    pub spec: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
/// check the FAT volume at IMG:PART (or a bare FAT image) as every open does, and
/// say what is damaged and what the next write would repair; nothing is written.
/// Exit 0 when nothing is damaged, 1 when something is.
pub struct CheckCmd {
    #[argh(positional)]
    pub spec: String,
    /// mend what the volume alone decides: FAT copies that disagree, when one is
    /// consistent with the tree; files that share clusters, each given its own
    /// copy; then reconcile. What it cannot decide is left and named.
    #[argh(switch)]
    pub repair: bool,
}

/// `IMG[:PART[:PATH]]`, where IMG is the longest prefix naming an existing file.
pub struct Spec {
    pub image: PathBuf,
    pub part: Option<String>,
    pub path: Option<String>,
}

pub fn parse_spec(s: &str) -> Result<Spec> {
    if Path::new(s).exists() {
        return Ok(Spec { image: s.into(), part: None, path: None });
    }
    for (i, _) in s.match_indices(':').collect::<Vec<_>>().into_iter().rev() {
        if Path::new(&s[..i]).exists() {
            let rest = &s[i + 1..];
            let (part, path) = match rest.split_once(':') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (rest.to_owned(), None),
            };
            return Ok(Spec { image: s[..i].into(), part: Some(part), path });
        }
    }
    Err(Error::bad_arg("image", s, "no such image (expected IMG[:PART[:PATH]])"))
}

fn size(s: &str, what: &'static str) -> Result<u64> {
    parse_size(s).ok_or_else(|| Error::usage(format!("{what} {s:?}"), "not a size (e.g. 512M, 2G, 1T)"))
}

/// Opens the FAT volume of `spec`'s partition.
pub fn open_volume(spec: &Spec, writable: bool) -> Result<(FatVolume, Vec<String>)> {
    let part = spec
        .part
        .as_deref()
        .ok_or_else(|| Error::bad_arg("image", spec.image.display().to_string(), "a partition is needed: IMG:PART"))?;
    let d = Disk::open(&spec.image, writable)?;
    let p = d.select(part)?.clone();
    let v = FatVolume::open(d.window(&p), &format!("{}:{}", spec.image.display(), p.number))?;
    let mut notes = d.notes.clone();
    notes.extend(v.reconcile_notes());
    Ok((v, notes))
}

/// The window of `spec`'s partition, or of the whole file when it is a bare
/// FAT image or partition device (no PART given, no GPT), and its name.
fn window_of(spec: &Spec, writable: bool) -> Result<(Window, String, Vec<String>)> {
    match spec.part.as_deref() {
        Some(part) => {
            let d = Disk::open(&spec.image, writable)?;
            let p = d.select(part)?.clone();
            Ok((d.window(&p), format!("{}:{}", spec.image.display(), p.number), d.notes.clone()))
        }
        None => {
            if Disk::open(&spec.image, false).is_ok() {
                return Err(Error::bad_arg(
                    "image",
                    spec.image.display().to_string(),
                    "a disk with a partition table: name the partition, IMG:PART",
                ));
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&spec.image)
                .map_err(|e| Error::io("open", &spec.image, e))?;
            let len = disk::device_size(&f).map_err(|e| Error::io("size of", &spec.image, e))?;
            let w = Window::new(std::sync::Arc::new(f), 0, len, writable);
            Ok((w, spec.image.display().to_string(), Vec::new()))
        }
    }
}

fn check(c: CheckCmd, out: &Out) -> Result<ExitCode> {
    let spec = parse_spec(&c.spec)?;
    let (w, name, notes) = window_of(&spec, c.repair)?;
    for n in notes {
        out.note(n);
    }
    let done = lifeboat_esp::fat::check_volume(w, &name, c.repair)?;
    let r = &done.reconciled;
    if let Some(k) = done.fat_taken {
        out.line(format!("{name}: took FAT copy {} (the one consistent with the tree) over the others", k + 1));
    }
    for p in &done.unshared {
        out.line(format!("{name}: {p}: shared its clusters with another entry; given its own copy"));
    }
    for p in &done.completed {
        out.line(format!("{name}: {p}"));
    }
    let pending = r.pending();
    for p in &pending {
        if r.damage.is_empty() {
            out.line(format!("{name}: the next write completes {p}"));
        } else {
            out.line(format!("{name}: once mended, a write completes {p}"));
        }
    }
    let repairs = r.repairs();
    for d in &repairs {
        if c.repair {
            out.line(format!("{name}: repaired: {d}"));
        } else if r.damage.is_empty() {
            out.line(format!("{name}: the next write repairs: {d}"));
        }
    }
    for d in &r.damage {
        out.line(format!("{name}: damaged: {d}"));
    }
    if r.damage.is_empty() {
        if repairs.is_empty() && pending.is_empty() && done.fat_taken.is_none() && done.unshared.is_empty() {
            out.line(format!("{name}: clean"));
        }
    } else if c.repair {
        out.line(format!(
            "{name}: not repaired: lifeboat cannot decide these from the volume alone; `fsck.fat -a` \
             on the unmounted partition mends them its way (it may cut files short), then lifeboat writes again"
        ));
    } else {
        out.line(format!(
            "{name}: nothing is written to it until it is mended: `lifeboat disk check {name} --repair` \
             (or `fsck.fat -a` on the unmounted partition)"
        ));
    }
    out.json(
        &Json::obj()
            .with("volume", name.as_str())
            .with("damage", r.damage.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .with("repairs", repairs.clone())
            .with("repaired", c.repair)
            .with("fat_taken", done.fat_taken.map(|k| k as u64 + 1))
            .with("unshared", done.unshared.clone())
            .with("interrupted", r.interrupted.clone())
            .with("completed", done.completed.clone()),
    );
    Ok(if r.damage.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_FAIL) })
}

pub fn run(c: DiskCmd, out: &Out) -> Result<ExitCode> {
    match c.cmd {
        DiskSub::Create(c) => {
            let spec = CreateSpec {
                size: size(&c.size, "--size")?,
                esp: size(&c.esp_size, "--esp-size")?,
                xbootldr: c.xbootldr_size.as_deref().map(|s| size(s, "--xbootldr-size")).transpose()?,
                root: c.root_size.as_deref().map(|s| size(s, "--root-size")).transpose()?,
            };
            let d = disk::create(&c.image, &spec)?;
            out.line(format!("created {} ({} bytes, GPT {})", c.image.display(), d.size, d.disk_guid));
            print_parts(&d, out);
            Ok(ExitCode::SUCCESS)
        }
        DiskSub::Ls(c) => {
            let spec = parse_spec(&c.spec)?;
            if spec.part.is_none() {
                let d = Disk::open(&spec.image, false)?;
                for n in &d.notes {
                    out.note(n);
                }
                print_parts(&d, out);
                return Ok(ExitCode::SUCCESS);
            }
            let (mut v, notes) = open_volume(&spec, false)?;
            for n in notes {
                out.note(n);
            }
            let dir = spec.path.clone().unwrap_or_default();
            let mut rows = Vec::new();
            list(&mut v, &dir, c.recursive, &mut rows)?;
            let mut arr = Vec::new();
            for (path, e) in rows {
                out.line(format!(
                    "{:>10}  {}{}",
                    if e.is_dir { "-".into() } else { e.size.to_string() },
                    path,
                    if e.is_dir { "/" } else { "" }
                ));
                arr.push(Json::obj().with("path", path).with("dir", e.is_dir).with("size", e.size));
            }
            out.json(&Json::Arr(arr));
            Ok(ExitCode::SUCCESS)
        }
        DiskSub::Cat(c) => {
            let spec = parse_spec(&c.spec)?;
            let path = spec.path.clone().ok_or_else(|| Error::bad_arg("cat", c.spec.clone(), "needs IMG:PART:PATH"))?;
            let (mut v, _) = open_volume(&spec, false)?;
            if out.json {
                // The bytes inside the one document: as text when they are
                // UTF-8, else in base64.
                let mut buf = Vec::new();
                v.read_into(&path, &mut buf)?;
                let j = Json::obj().with("path", c.spec.as_str()).with("size", buf.len() as u64);
                out.json(&match String::from_utf8(buf) {
                    Ok(t) => j.with("text", t),
                    Err(e) => j.with("base64", crate::json::base64(e.as_bytes())),
                });
                return Ok(ExitCode::SUCCESS);
            }
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            v.read_into(&path, &mut lock)?;
            lock.flush().map_err(|e| Error::io("write", "stdout", e))?;
            Ok(ExitCode::SUCCESS)
        }
        DiskSub::Put(c) => {
            let Some((dest, locals)) = c.args.split_last().filter(|(_, l)| !l.is_empty()) else {
                return Err(Error::usage(
                    format!("disk put {}", c.args.join(" ")).trim_end().to_owned(),
                    "needs LOCAL... IMG:PART:PATH (the files to put, then where)",
                ));
            };
            let spec = parse_spec(dest)?;
            let path = spec.path.clone().ok_or_else(|| Error::bad_arg("put", dest.clone(), "needs IMG:PART:PATH"))?;
            // Sources through the one door for files lifeboat did not make:
            // a regular file only (a FIFO would block the copy forever, a
            // device never ends, a directory is not a file), named when refused.
            let mut files = Vec::new();
            for l in locals {
                let f = lifeboat_fs::foreign::open_named(Path::new(l)).map_err(|e| Error::io("put", l, e))?;
                let name = Path::new(l).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                files.push((name, f));
            }
            let (mut v, notes) = open_volume(&spec, true)?;
            for n in notes {
                out.note(n);
            }
            // PATH is a directory with several files, a trailing `/`, or when it
            // is one already (as cp has it).
            let into_dir = locals.len() > 1
                || path.ends_with('/')
                || path.trim_matches('/').is_empty()
                || v.stat(&path)?.is_some_and(|e| e.is_dir);
            let mut items: Vec<(String, Box<dyn std::io::Read>)> = Vec::new();
            for (name, f) in files {
                let target = if into_dir { lifeboat_esp::volume::join(&path, &name) } else { path.clone() };
                // Refused before anything is written: a directory is never
                // replaced, two sources never write one file (FAT names
                // ignore case), and a name the last rename could not give
                // would leave its `.lbnew` behind.
                if v.stat(&target)?.is_some_and(|e| e.is_dir) {
                    return Err(Error::bad_arg("put", format!("{dest}: {target}"), "a file's path, not a directory's"));
                }
                if items.iter().any(|(t, _)| t.eq_ignore_ascii_case(&target)) {
                    return Err(Error::bad_arg(
                        "put",
                        format!("{dest}: {target}"),
                        "two of the files to put have this name; nothing was written",
                    ));
                }
                v.check_name(&target)?;
                items.push((target, Box::new(f)));
            }
            // Directories this put creates go again if it fails: it leaves
            // nothing behind (replace_all settles its own `.lbtmp`/`.lbnew`).
            let mut made: Vec<String> = Vec::new();
            let r = (|| -> Result<Vec<u64>> {
                for (t, _) in &items {
                    let (parent, _) = lifeboat_esp::volume::split(t);
                    let parts = lifeboat_esp::volume::components(parent)?;
                    for k in 1..=parts.len() {
                        let d = parts[..k].join("/");
                        if v.stat(&d)?.is_none() {
                            v.create_dir_all(&d)?;
                            made.push(d);
                        }
                    }
                }
                Ok(v.replace_all(&mut items)?)
            })();
            let sizes = match r {
                Ok(s) => s,
                Err(e) => {
                    for d in made.iter().rev() {
                        let _ = v.remove(d);
                    }
                    let _ = v.flush();
                    return Err(e);
                }
            };
            v.close()?;
            out.line(format!("wrote {} bytes in {} files to {dest}", sizes.iter().sum::<u64>(), sizes.len()));
            out.json(
                &Json::obj().with("dest", dest.as_str()).with("bytes", sizes.iter().sum::<u64>()).with(
                    "files",
                    Json::Arr(
                        items
                            .iter()
                            .zip(&sizes)
                            .map(|((t, _), n)| Json::obj().with("path", t.as_str()).with("size", *n))
                            .collect(),
                    ),
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        DiskSub::Rm(c) => {
            let spec = parse_spec(&c.spec)?;
            let path = spec.path.clone().ok_or_else(|| Error::bad_arg("rm", c.spec.clone(), "needs IMG:PART:PATH"))?;
            let (mut v, notes) = open_volume(&spec, true)?;
            for n in notes {
                out.note(n);
            }
            // `file/` names a directory; a file there is not what was meant.
            if path.ends_with('/') && v.stat(&path)?.is_some_and(|e| !e.is_dir) {
                return Err(Error::bad_arg("rm", c.spec.clone(), "not a directory (the path ends with /)"));
            }
            v.remove(&path)?;
            v.close()?;
            out.line(format!("removed {}", c.spec));
            out.json(&Json::obj().with("removed", c.spec.as_str()));
            Ok(ExitCode::SUCCESS)
        }
        DiskSub::Check(c) => check(c, out),
        DiskSub::Df(c) => {
            let spec = parse_spec(&c.spec)?;
            let (mut v, _) = open_volume(&spec, false)?;
            let s = v.space()?;
            out.line(format!(
                "{}: {} total, {} free, {} used ({}, cluster {} bytes)",
                c.spec,
                human(s.total),
                human(s.free),
                human(s.total - s.free),
                v.fat_type(),
                s.cluster
            ));
            out.json(
                &Json::obj()
                    .with("total", s.total)
                    .with("free", s.free)
                    .with("cluster", s.cluster)
                    .with("fat", v.fat_type()),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A directory's entries, or (recursive) everything below it through the one
/// walk that stops at a directory cycle.
fn list(v: &mut FatVolume, dir: &str, recursive: bool, rows: &mut Vec<(String, lifeboat_esp::DirEntry)>) -> Result<()> {
    if recursive {
        rows.extend(lifeboat_esp::volume::walk(v, dir)?);
        return Ok(());
    }
    let mut entries = v.list(dir)?;
    entries.sort_by_key(|e| e.name.to_lowercase());
    for e in entries {
        rows.push((lifeboat_esp::volume::join(dir, &e.name), e));
    }
    Ok(())
}

pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut f = n as f64;
    let mut i = 0;
    while f >= 1024.0 && i < U.len() - 1 {
        f /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{f:.1} {}", U[i])
    }
}

fn print_parts(d: &Disk, out: &Out) {
    out.line(format!("{:>3}  {:<12}  {:>12}  {:>12}  {:<36}  {}", "#", "KIND", "START", "SIZE", "PARTUUID", "NAME"));
    let mut arr = Vec::new();
    for p in &d.partitions {
        out.line(format!(
            "{:>3}  {:<12}  {:>12}  {:>12}  {:<36}  {}",
            p.number,
            p.kind.as_str(),
            p.start,
            p.size,
            p.part_guid,
            p.name
        ));
        arr.push(
            Json::obj()
                .with("number", p.number)
                .with("kind", p.kind.as_str())
                .with("type", p.type_guid.as_str())
                .with("partuuid", p.part_guid.as_str())
                .with("name", p.name.as_str())
                .with("attributes", p.attributes)
                .with("start", p.start)
                .with("size", p.size),
        );
    }
    out.json(
        &Json::obj()
            .with("disk", d.path.display().to_string())
            .with("size", d.size)
            .with("guid", d.disk_guid.as_str())
            .with("notes", d.notes.clone())
            .with("partitions", Json::Arr(arr)),
    );
}
