//! Hibernation, before anything is mounted: `resume=` (with `resume_offset=`)
//! is handed to the kernel through `/sys/power/resume`, which restores the
//! hibernated system if its image is there; a hibernation image that is still
//! on any block device afterwards stops the boot. A filesystem that is written
//! (or even mounted: ext4 replays its journal) while an image of the system that
//! had it mounted exists is corrupted when that image is restored, so PID 1 then
//! mounts nothing, rolls nothing back and repairs nothing until the user resumes
//! or discards the image from the rescue shell (`resume`, `discard-hibernation`).
//! `noresume` discards an image, as the kernel documents it. A swap *file*'s
//! image is seen only through `resume=` and `resume_offset=`: finding it
//! otherwise would mean mounting the filesystem that holds it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_esp::blockdev::{BlockDev, SysBlock};
use lifeboat_esp::hibernation::{self, PAGE};

use super::root::RootSpec;
use super::{say, Boot, BootError, Phase};
use crate::cmdline::KernelCmdline;

/// How long PID 1 waits for the `resume=` device once the root has appeared.
const RESUME_WAIT: Duration = Duration::from_secs(10);

/// A hibernation image on a device, as the console names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundImage {
    pub dev: PathBuf,
    pub devnum: Option<(u32, u32)>,
    pub image: hibernation::Image,
}

impl FoundImage {
    fn describe(&self) -> String {
        let at = if self.image.offset == 0 { String::new() } else { format!(" at page {}", self.image.offset / PAGE) };
        format!("{}{at} holds a hibernation image ({})", self.dev.display(), self.image.kind)
    }
}

/// A device node and its number.
type DevAndNum = (PathBuf, (u32, u32));

/// `resume=` as a device: the forms of `root=`, and `MAJ:MIN` as the kernel takes it.
fn resume_target(spec: &str, devs: &[BlockDev]) -> Result<Option<DevAndNum>, String> {
    if let Some((a, b)) = spec.split_once(':') {
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            let dev = devs.iter().find(|d| d.devnum == Some((a, b))).map(|d| d.dev.clone());
            return Ok(dev.map(|d| (d, (a, b))));
        }
    }
    let Some(dev) = RootSpec::parse(Some(spec))?.find(devs, None)? else {
        return Ok(None);
    };
    let devnum = devs.iter().find(|d| d.dev == dev).and_then(|d| d.devnum).or_else(|| devnum_of(&dev));
    Ok(devnum.map(|n| (dev, n)))
}

fn devnum_of(dev: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(dev).ok()?.rdev();
    Some((nix::sys::stat::major(rdev) as u32, nix::sys::stat::minor(rdev) as u32))
}

/// `resume_offset=` in pages (a swap file's header) as bytes, 0 without it. A
/// value that is not a page number is taken as 0, as the kernel does, and said.
fn resume_offset(c: &KernelCmdline) -> (u64, Option<String>) {
    match c.get("resume_offset") {
        None => (0, None),
        Some(v) => match v.parse::<u64>().ok().and_then(|n| n.checked_mul(PAGE)) {
            Some(b) => (b, None),
            None => {
                (0, Some(format!("resume_offset={} is not a page number; using 0", lifeboat_fs::shown::shown_str(v))))
            }
        },
    }
}

/// `resume=` and its offset, when it names a device present now.
fn resume_device(c: &KernelCmdline, sys: &SysBlock) -> Option<(PathBuf, (u32, u32), u64)> {
    let spec = c.get("resume")?;
    let (dev, n) = resume_target(spec, &sys.scan_with(true)).ok()??;
    Some((dev, n, resume_offset(c).0))
}

/// Every hibernation image on the block devices present (and at `resume=`'s
/// offset, for a swap file).
pub fn find_images(sys: &SysBlock, extra: Option<(&Path, u64)>) -> Vec<FoundImage> {
    let mut out = Vec::new();
    for d in sys.scan_with(true) {
        if d.fstype == Some("swsuspend") {
            if let Ok(Some(image)) = hibernation::find_image(&d.dev, 0) {
                out.push(FoundImage { dev: d.dev.clone(), devnum: d.devnum, image });
            }
        }
    }
    if let Some((dev, off)) = extra.filter(|(_, off)| *off != 0) {
        if let Ok(Some(image)) = hibernation::find_image(dev, off) {
            out.push(FoundImage { dev: dev.to_path_buf(), devnum: devnum_of(dev), image });
        }
    }
    out
}

/// Asks the kernel to restore the image on `devnum` (at `offset` bytes): it does
/// not return when the kernel restores one. `Ok` means the kernel found none it
/// could restore.
pub fn kernel_resume(devnum: (u32, u32), offset: u64) -> Result<(), String> {
    // The offset first: writing the device is what starts the restore.
    if offset != 0 {
        std::fs::write("/sys/power/resume_offset", (offset / PAGE).to_string())
            .map_err(|e| format!("/sys/power/resume_offset: {e}"))?;
    }
    std::fs::write("/sys/power/resume", format!("{}:{}", devnum.0, devnum.1))
        .map_err(|e| format!("/sys/power/resume ({}:{}): {e}", devnum.0, devnum.1))
}

/// What the console says while an image stops the boot.
pub fn refusal(images: &[FoundImage], resume_given: bool) -> String {
    let what: Vec<String> = images.iter().map(FoundImage::describe).collect();
    format!(
        "{}{}: the system hibernated and was not resumed, and writing to its filesystems now would corrupt them \
         when it is. lifeboat mounts nothing, rolls nothing back and repairs nothing while the image exists. \
         `resume` restores the hibernated system; `discard-hibernation` discards the image (what was open in \
         it is lost) and `continue` then boots",
        what.join("; "),
        if resume_given {
            " (resume= named another place or the kernel could not restore it)"
        } else {
            " (no resume= given)"
        }
    )
}

impl Boot {
    /// Resumes a hibernated system or stops the boot while its image exists; runs
    /// after the root device appeared and before anything is mounted.
    pub(super) fn hibernation(&mut self) -> Result<(), BootError> {
        let err = |why: String| BootError::new(Phase::Hibernation, why);
        let sys = SysBlock::default();
        let (offset, note) = resume_offset(&self.cmdline);
        if let Some(n) = note.filter(|_| self.cmdline.get("resume").is_some()) {
            say(n);
        }
        let mut target = None;
        if let Some(spec) = self.cmdline.get("resume").map(str::to_owned) {
            if self.cmdline.flag("noresume") {
                say(format!("resume={spec} and noresume: not resuming"));
                target = resume_target(&spec, &sys.scan_with(true)).ok().flatten();
            } else {
                let start = Instant::now();
                loop {
                    let devs = sys.scan_with(true);
                    match resume_target(&spec, &devs).map_err(err)? {
                        Some(t) => {
                            target = Some(t);
                            break;
                        }
                        None if start.elapsed() >= RESUME_WAIT => {
                            say(format!(
                                "resume={spec}: no such device within {} s; looking for hibernation images on every device",
                                RESUME_WAIT.as_secs()
                            ));
                            break;
                        }
                        None => match self.modules.as_mut() {
                            Some(m) => {
                                m.poll(Duration::from_millis(50));
                            }
                            None => std::thread::sleep(Duration::from_millis(50)),
                        },
                    }
                }
                if let Some((dev, devnum)) = &target {
                    let has = hibernation::find_image(dev, offset).ok().flatten();
                    if let Some(img) = has {
                        say(format!("{} holds a hibernation image ({}); resuming it", dev.display(), img.kind));
                        kernel_resume(*devnum, offset).map_err(err)?;
                        say(format!("the kernel did not restore the image on {}", dev.display()));
                    } else {
                        // The kernel still learns the device: a later hibernation uses it.
                        let _ = kernel_resume(*devnum, offset);
                        say(format!("resume={spec} ({}): no hibernation image; booting", dev.display()));
                    }
                }
            }
        }
        let images = find_images(&sys, target.as_ref().map(|(d, _)| (d.as_path(), offset)));
        if images.is_empty() {
            return Ok(());
        }
        if self.cmdline.flag("noresume") {
            // The kernel's noresume concerns its own resume device: that image
            // is discarded; one on another device (another system's swap, a
            // stick) is left as it is and named.
            let ours = |i: &FoundImage| target.as_ref().is_some_and(|(_, n)| i.devnum == Some(*n));
            for i in &images {
                if ours(i) {
                    hibernation::discard_image(&i.dev, i.image.offset)
                        .map_err(|e| err(format!("noresume: discarding the image on {}: {e}", i.dev.display())))?;
                    say(format!("noresume: discarded the hibernation image on {}", i.dev.display()));
                } else {
                    say(format!("noresume: {}; left as it is, booting", i.describe()));
                }
            }
            return Ok(());
        }
        Err(err(refusal(&images, self.cmdline.get("resume").is_some())))
    }
}

/// The rescue shell's `resume [DEV]`: restores the image on DEV (or the one
/// image found).
pub fn shell_resume(args: &[&str], cmdline: &KernelCmdline) -> Result<String, String> {
    let sys = SysBlock::default();
    let offset = resume_offset(cmdline).0;
    let (dev, devnum, off) = match args.first() {
        Some(spec) => {
            let (dev, n) = resume_target(spec, &sys.scan_with(true))?.ok_or_else(|| format!("no device {spec}"))?;
            let off = if hibernation::find_image(&dev, 0).ok().flatten().is_some() { 0 } else { offset };
            (dev, n, off)
        }
        None => {
            let extra = resume_device(cmdline, &sys);
            let images = find_images(&sys, extra.as_ref().map(|(d, _, o)| (d.as_path(), *o)));
            match images.as_slice() {
                [one] => (
                    one.dev.clone(),
                    one.devnum.ok_or_else(|| format!("{}: no device number", one.dev.display()))?,
                    one.image.offset,
                ),
                [] => return Err("no hibernation image found; `resume DEV` names the swap device".into()),
                many => {
                    return Err(format!(
                        "{} images found ({}); `resume DEV` picks one",
                        many.len(),
                        many.iter().map(|i| i.dev.display().to_string()).collect::<Vec<_>>().join(", ")
                    ))
                }
            }
        }
    };
    kernel_resume(devnum, off)?;
    Ok(format!("the kernel did not restore an image from {}", dev.display()))
}

/// The rescue shell's `discard-hibernation [DEV]`: discards the image on DEV
/// (any name of it: `/dev/VG/LV`, `/dev/mapper/X`, `/dev/dm-N`) or every image
/// found, a swap file's at `resume=`/`resume_offset=` included.
pub fn shell_discard(args: &[&str], cmdline: &KernelCmdline) -> Result<String, String> {
    let sys = SysBlock::default();
    let extra = resume_device(cmdline, &sys);
    let all = find_images(&sys, extra.as_ref().map(|(d, _, o)| (d.as_path(), *o)));
    let images: Vec<FoundImage> = match args.first() {
        Some(d) => {
            let want = devnum_of(Path::new(d)).ok_or_else(|| format!("{d}: not a block device"))?;
            all.into_iter().filter(|i| i.devnum == Some(want)).collect()
        }
        None => all,
    };
    if images.is_empty() {
        return Err("no hibernation image found".into());
    }
    let mut done = Vec::new();
    for i in images {
        hibernation::discard_image(&i.dev, i.image.offset).map_err(|e| format!("{}: {e}", i.dev.display()))?;
        done.push(i.dev.display().to_string());
    }
    Ok(format!("discarded the hibernation image on {}; `continue` boots", done.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// review27: a `resume_offset=` the kernel ignores (empty, junk; the kernel's
    /// own parser just keeps 0) stops lifeboat's boot in the hibernation phase
    /// even with no `resume=` at all, and `continue` cannot get past it: only a
    /// reboot with another command line does. Without `resume=` the offset names
    /// nothing and must not matter.
    #[test]
    fn review27_bad_resume_offset_without_resume_does_not_stop_the_boot() {
        for v in ["", "abc", "-1"] {
            let c = KernelCmdline::parse(&format!("root=/dev/vda2 resume_offset={v}"));
            // No resume= and no noresume: hibernation() only reads (the host's
            // block devices, for images), it writes nothing.
            let r = Boot::new(c).hibernation();
            if let Err(e) = r {
                assert!(!e.why.contains("resume_offset"), "with no resume= the boot stops: {}", e.why);
            }
        }
    }

    #[test]
    fn resume_forms() {
        let d = BlockDev {
            name: "vda3".into(),
            dev: PathBuf::from("/dev/vda3"),
            devnum: Some((252, 3)),
            partuuid: Some("ab".into()),
            uuid: Some("11-22".into()),
            ..BlockDev::default()
        };
        let devs = vec![d];
        assert_eq!(resume_target("252:3", &devs), Ok(Some((PathBuf::from("/dev/vda3"), (252, 3)))));
        assert_eq!(resume_target("PARTUUID=AB", &devs), Ok(Some((PathBuf::from("/dev/vda3"), (252, 3)))));
        assert_eq!(resume_target("UUID=11-22", &devs), Ok(Some((PathBuf::from("/dev/vda3"), (252, 3)))));
        assert_eq!(resume_target("252:4", &devs), Ok(None));
        assert_eq!(resume_target("UUID=nope", &devs), Ok(None));
        assert_eq!(resume_offset(&KernelCmdline::parse("resume_offset=2")), (2 * PAGE, None));
        for bad in ["99999999999999999999", "18446744073709551615", "", "abc", "-1"] {
            let (off, note) = resume_offset(&KernelCmdline::parse(&format!("resume_offset={bad}")));
            assert_eq!(off, 0, "{bad}");
            assert!(note.is_some_and(|n| n.contains("not a page number")), "{bad}");
        }
        assert_eq!(resume_offset(&KernelCmdline::parse("quiet")), (0, None));
    }
}
