//! The root parameters `boot sync` writes into every entry of the running
//! system: `root=PARTUUID=` for a filesystem on a partition, and for one on
//! device-mapper layers what the initrd needs to build the stack again before
//! the root exists — `root=UUID=` of the filesystem itself (the device node of a
//! mapping has no PARTUUID, and the partition's would name the LUKS container),
//! `rd.luks.uuid=` for each LUKS container as systemd-cryptsetup-generator and
//! lifeboat's PID 1 take it, and `rd.lvm.lv=VG/LV` for each LVM volume as dracut
//! names it. A stack with a layer lifeboat cannot describe gets no guess, only a
//! note. Parameters the tree's or machine's cmdline files already give are not
//! written twice; an explicit `root=` there wins over lifeboat's.

use lifeboat_esp::blockdev::probe_fs;
use lifeboat_esp::discover::RootDevice;
use lifeboat_esp::stack::LayerKind;
use lifeboat_fs::shown::shown_path;

/// Root parameters for every entry, and why there are none when there are none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootParams {
    pub params: Vec<String>,
    pub notes: Vec<String>,
}

/// What to do about the root: the hint every note about a root lifeboat cannot
/// name ends with.
const HINT: &str = "no root= is written: name the root (and what the initrd must assemble for it) in \
                    /etc/kernel/cmdline.d/*.cmdline";

/// The root parameters for the root `found` describes.
pub fn root_params(found: &RootDevice) -> RootParams {
    let stack = &found.stack;
    let mut out = RootParams::default();
    if stack.is_plain() {
        out.params.extend(found.partuuid.as_ref().map(|u| format!("root=PARTUUID={u}")));
        return out;
    }
    let unknown = stack.unknown();
    if !unknown.is_empty() {
        out.notes.push(format!(
            "the root {} is on {}, which lifeboat cannot describe on a kernel command line ({}); {HINT}",
            shown_path(&found.dev),
            stack.describe(),
            unknown.join("; ")
        ));
        return out;
    }
    let fs = probe_fs(&found.dev);
    let Some(fs_uuid) = fs.as_ref().and_then(|f| f.uuid.clone()) else {
        let what = match &fs {
            Some(f) => format!("its {} superblock has no UUID", f.fstype),
            None => "its filesystem is not one lifeboat reads a UUID from (ext2/3/4, XFS, btrfs, f2fs, FAT)".into(),
        };
        out.notes.push(format!("the root {} ({}): {what}; {HINT}", shown_path(&found.dev), stack.describe()));
        return out;
    };
    let mut luks = Vec::new();
    let mut lvm: Vec<(&str, &str)> = Vec::new();
    for l in &stack.layers {
        match &l.kind {
            // The mapping keeps the name it has now (`sda3_crypt`, `cryptroot`):
            // crypttab, fstab and the system's own units know it by that name.
            LayerKind::Luks { uuid: Some(u), .. } => match l.dm_name.as_deref() {
                Some(n) if n != format!("luks-{u}") && valid_dm_name(n) => luks.push(format!("rd.luks.name={u}={n}")),
                _ => luks.push(format!("rd.luks.uuid={u}")),
            },
            LayerKind::Luks { uuid: None, .. } => {
                out.notes.push(format!(
                    "the root {} is on {}, but the UUID of LUKS container {} is not known; {HINT}",
                    shown_path(&found.dev),
                    stack.describe(),
                    l.shown()
                ));
                return out;
            }
            // The first layer of a volume group met from the top is the volume
            // the stack uses; those below it (a thin pool, a snapshot's origin,
            // RAID images) are activated with it.
            LayerKind::Lvm { vg, lv, .. } => {
                if !lvm.iter().any(|(g, _)| g == vg) {
                    lvm.push((vg, lv));
                }
            }
            LayerKind::LuksSubdev | LayerKind::Other { .. } => {}
        }
    }
    out.params.push(format!("root=UUID={fs_uuid}"));
    for p in luks {
        if !out.params.contains(&p) {
            out.params.push(p);
        }
    }
    out.params.extend(lvm.iter().map(|(vg, lv)| format!("rd.lvm.lv={vg}/{lv}")));
    out
}

/// A LUKS UUID as a cmdline word gives it (`luks-` prefix dropped, lowercase).
fn luks_id(v: &str) -> String {
    v.strip_prefix("luks-").unwrap_or(v).to_ascii_lowercase()
}

/// The root parameters `options` (the entry's options from the cmdline files)
/// does not already give: no `root=` when it names a root; no `rd.luks.uuid=`
/// for a container it already names (`rd.luks.uuid=`, `rd.luks.name=`, or the
/// `luks.*` forms) or when it sets `rd.luks=`/`luks=` itself; no `rd.lvm.lv=`
/// it already has, for a volume group it activates whole (`rd.lvm.vg=`), or
/// when it sets `rd.lvm=` itself.
pub fn missing<'a>(params: &'a [String], options: &str) -> Vec<&'a str> {
    let words: Vec<&str> = options.split_whitespace().collect();
    let value = |keys: &[&str], w: &str| -> Option<String> {
        let (k, v) = w.split_once('=')?;
        keys.contains(&k).then(|| v.to_owned())
    };
    let named_luks: Vec<String> = words
        .iter()
        .filter_map(|w| {
            value(&["rd.luks.uuid", "luks.uuid"], w)
                .or_else(|| value(&["rd.luks.name", "luks.name"], w).map(|v| v.split('=').next().unwrap_or("").into()))
        })
        .map(|v| luks_id(&v))
        .collect();
    let luks_set = words.iter().any(|w| value(&["rd.luks", "luks"], w).is_some());
    let lvm_set = words.iter().any(|w| value(&["rd.lvm"], w).is_some());
    let vgs: Vec<String> = words.iter().filter_map(|w| value(&["rd.lvm.vg"], w)).collect();
    params
        .iter()
        .filter(|p| {
            if p.starts_with("root=") {
                return !words.iter().any(|w| w.starts_with("root="));
            }
            if let Some(u) = p.strip_prefix("rd.luks.uuid=") {
                return !luks_set && !named_luks.contains(&luks_id(u));
            }
            if let Some(u) = p.strip_prefix("rd.luks.name=").and_then(|v| v.split('=').next()) {
                return !luks_set && !named_luks.contains(&luks_id(u));
            }
            if let Some(v) = p.strip_prefix("rd.lvm.lv=") {
                let vg = v.split('/').next().unwrap_or("");
                return !lvm_set && !words.contains(&p.as_str()) && !vgs.iter().any(|g| g == vg);
            }
            !words.contains(&p.as_str())
        })
        .map(String::as_str)
        .collect()
}

/// A device-mapper name PID 1 can give back: what the kernel takes (under 128
/// bytes, no `/`) and what a command line carries (no blanks, quotes or `=`).
fn valid_dm_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() < 128
        && n != "."
        && n != ".."
        && n.bytes().all(|c| c.is_ascii_graphic() && !matches!(c, b'/' | b'"' | b'\'' | b'=' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const U: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    #[test]
    fn what_the_cmdline_files_give_is_not_written_twice() {
        let all = p(&["root=UUID=abcd", &format!("rd.luks.uuid={U}"), "rd.lvm.lv=vg0/root"]);
        let m = |o: &str| missing(&all, o).join(" ");
        assert_eq!(m("quiet"), format!("root=UUID=abcd rd.luks.uuid={U} rd.lvm.lv=vg0/root"));
        // An explicit root= wins; the stack under it is still assembled.
        assert_eq!(m("root=/dev/mapper/vg0-root quiet"), format!("rd.luks.uuid={U} rd.lvm.lv=vg0/root"));
        for same in [
            format!("rd.luks.uuid={U}"),
            format!("rd.luks.uuid=luks-{}", U.to_uppercase()),
            format!("luks.uuid={U}"),
            format!("rd.luks.name={U}=cryptroot"),
            "rd.luks=no".to_owned(),
        ] {
            assert_eq!(m(&same), "root=UUID=abcd rd.lvm.lv=vg0/root", "{same}");
        }
        // Another container named is no reason to leave the root's out.
        assert_eq!(m("rd.luks.uuid=11111111-2222-3333-4444-555555555555").split(' ').count(), 3);
        for same in ["rd.lvm.lv=vg0/root", "rd.lvm.vg=vg0", "rd.lvm=0"] {
            assert_eq!(m(same), format!("root=UUID=abcd rd.luks.uuid={U}"), "{same}");
        }
        assert_eq!(m("rd.lvm.lv=vg0/swap").split(' ').count(), 3);
        assert_eq!(m("rd.lvm.vg=other").split(' ').count(), 3);
    }
}
