//! Which logical volumes to activate and the device-mapper tables that do it.
//! The kernel command line selects (`rd.lvm.vg=VG`, `rd.lvm.lv=VG/LV`, any number
//! of each; neither means every VG found; `rd.lvm=0` none). Each VG is taken from
//! the copy of its metadata with the highest sequence number among the PVs given,
//! each PV found by the uuid in its own label — never by the device path the
//! metadata remembers, which differs in the initrd. Visible LVs are planned
//! (hidden sub-volumes never, LVs flagged "activation skip" only when named),
//! with the names lvm2 itself gives them so that fstab's `/dev/mapper/VG-LV` and
//! the real system's lvm find them as their own.

use std::collections::{BTreeMap, BTreeSet};

use super::label::PvInfo;
use super::metadata::{parse_vg, Lv, SegmentKind, Vg};
use super::LvmError;
use crate::{DevNo, Target};

/// What the kernel command line asks to activate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// `rd.lvm=0` turns LVM off.
    pub enabled: bool,
    pub vgs: Vec<String>,
    /// (VG, LV) pairs.
    pub lvs: Vec<(String, String)>,
}

impl Selection {
    /// Every VG found.
    pub fn all() -> Self {
        Selection { enabled: true, vgs: Vec::new(), lvs: Vec::new() }
    }

    /// Reads `rd.lvm.vg=`, `rd.lvm.lv=` and `rd.lvm=0` (and dracut's older
    /// `rd_LVM_VG=`, `rd_LVM_LV=`, `rd_NO_LVM`) from a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut s = Selection::all();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let value = value.trim_matches('"');
            match key {
                "rd.lvm" if value == "0" => s.enabled = false,
                "rd_NO_LVM" => s.enabled = false,
                "rd.lvm.vg" | "rd_LVM_VG" if !value.is_empty() => s.vgs.push(value.to_string()),
                "rd.lvm.lv" | "rd_LVM_LV" => {
                    let v = value.strip_prefix("/dev/").unwrap_or(value);
                    if let Some((vg, lv)) = v.split_once('/') {
                        if !vg.is_empty() && !lv.is_empty() {
                            s.lvs.push((vg.to_string(), lv.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// Nothing named: every VG.
    pub fn is_all(&self) -> bool {
        self.vgs.is_empty() && self.lvs.is_empty()
    }
}

/// One LV to activate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLv {
    pub vg: String,
    pub lv: String,
    /// `VG-LV` with dashes inside either doubled, as lvm2 names it.
    pub dm_name: String,
    /// `LVM-` then the VG id and LV id without their dashes.
    pub dm_uuid: String,
    pub read_only: bool,
    pub targets: Vec<Target>,
}

/// lvm2's device-mapper name for VG/LV: every `-` inside the names doubled, the
/// two joined by one `-`, so the split stays unambiguous.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// lvm2's device-mapper uuid of an LV.
pub fn dm_uuid(vg_id: &str, lv_id: &str) -> String {
    format!("LVM-{}{}", vg_id.replace('-', ""), lv_id.replace('-', ""))
}

fn norm_uuid(u: &str) -> String {
    u.replace('-', "")
}

/// Plans the activation of the selected LVs on the PVs found (each with the
/// device number of the device it was read from). The plan is in VG, then
/// metadata order; creating its mappings in order is all that is left to do.
pub fn plan_activation(pvs: &[(DevNo, PvInfo)], sel: &Selection) -> Result<Vec<PlannedLv>, LvmError> {
    plan(pvs, sel, false).map(|(p, _)| p)
}

/// [`plan_activation`] for PID 1 looking for a root nobody named: an LV that is
/// only selected because its whole VG (or every VG) is — a thin pool, a raid LV,
/// one on a PV that is missing — is left out with a note instead of failing the
/// plan, so the linear and striped LVs beside it still come up. An LV named by
/// `rd.lvm.lv=` still fails the plan.
pub fn plan_activation_lenient(
    pvs: &[(DevNo, PvInfo)],
    sel: &Selection,
) -> Result<(Vec<PlannedLv>, Vec<String>), LvmError> {
    plan(pvs, sel, true)
}

fn plan(pvs: &[(DevNo, PvInfo)], sel: &Selection, lenient: bool) -> Result<(Vec<PlannedLv>, Vec<String>), LvmError> {
    let mut notes = Vec::new();
    if !sel.enabled {
        return Ok((Vec::new(), notes));
    }
    let mut by_uuid: BTreeMap<String, DevNo> = BTreeMap::new();
    for (dev, pv) in pvs {
        let u = norm_uuid(&pv.pv_uuid);
        if by_uuid.insert(u, *dev).is_some_and(|d| d != *dev) {
            return Err(LvmError::DuplicatePv { pv: pv.pv_uuid.clone() });
        }
    }
    // The newest copy of each VG, by id; what could not be read, by PV.
    let mut vgs: BTreeMap<String, Vg> = BTreeMap::new();
    let mut unreadable: Vec<(String, String)> = Vec::new();
    for (_, pv) in pvs {
        if let Some(text) = &pv.metadata {
            match parse_vg(text) {
                Ok(vg) => {
                    if vgs.get(&vg.id).is_none_or(|old| vg.seqno > old.seqno) {
                        vgs.insert(vg.id.clone(), vg);
                    }
                }
                Err(e) => unreadable.push((pv.pv_uuid.clone(), e.to_string())),
            }
        } else if let Some(p) = &pv.metadata_problem {
            unreadable.push((pv.pv_uuid.clone(), p.clone()));
        }
    }
    // A bad copy on a PV of a VG read from another copy costs nothing; one on a
    // PV no VG claims may hide the very VG asked for.
    unreadable.retain(|(u, _)| !vgs.values().any(|vg| vg.pvs.iter().any(|p| norm_uuid(&p.id) == norm_uuid(u))));
    let unreadable_error = || {
        unreadable.first().map(|(pv, why)| LvmError::Model {
            vg: "(unknown)".into(),
            why: format!("the metadata on physical volume {pv} cannot be read: {why}"),
        })
    };
    if sel.is_all() {
        if let Some(e) = unreadable_error() {
            return Err(e);
        }
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for vg in vgs.values() {
        *names.entry(vg.name.as_str()).or_default() += 1;
    }
    let mut ordered: Vec<&Vg> = vgs.values().collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    let mut found_vgs = BTreeSet::new();
    let mut found_lvs = BTreeSet::new();
    for vg in ordered {
        let vg_named = sel.vgs.contains(&vg.name);
        if !(sel.is_all() || vg_named || sel.lvs.iter().any(|(v, _)| v == &vg.name)) {
            continue;
        }
        if names.get(vg.name.as_str()).copied().unwrap_or(0) > 1 {
            return Err(LvmError::DuplicateVg { vg: vg.name.clone() });
        }
        if vg.status.iter().any(|s| s == "EXPORTED") {
            return Err(LvmError::Exported { vg: vg.name.clone() });
        }
        found_vgs.insert(vg.name.clone());
        for lv in &vg.lvs {
            if !lv.visible() {
                continue;
            }
            // Names come from the disk and become /dev/VG/LV and /dev/mapper/VG-LV.
            if !lvm_name_ok(&vg.name) || !lvm_name_ok(&lv.name) {
                let why = format!("LV {:?} in VG {:?}: not a name lvm2 makes", lv.name, vg.name);
                if lenient {
                    notes.push(format!("{why}; left inactive"));
                    continue;
                }
                return Err(LvmError::Model { vg: vg.name.clone(), why });
            }
            let named = sel.lvs.iter().any(|(v, l)| v == &vg.name && l == &lv.name);
            if named {
                found_lvs.insert((vg.name.clone(), lv.name.clone()));
            }
            if named {
                out.push(plan_lv(vg, lv, &by_uuid)?);
            } else if (sel.is_all() || vg_named) && !lv.activation_skip() {
                match plan_lv(vg, lv, &by_uuid) {
                    Ok(p) => out.push(p),
                    Err(e @ (LvmError::Unsupported { .. } | LvmError::MissingPv { .. })) if lenient => {
                        notes.push(format!("{e}; left inactive"))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let missing =
        sel.vgs.iter().find(|v| !found_vgs.contains(*v)).map(|v| format!("volume group {v}")).or_else(|| {
            sel.lvs.iter().find(|p| !found_lvs.contains(*p)).map(|(v, l)| format!("logical volume {v}/{l}"))
        });
    if let Some(what) = missing {
        return Err(unreadable_error().unwrap_or(LvmError::NotFound { what }));
    }
    Ok((out, notes))
}

/// lvm2's rule for VG and LV names: `[A-Za-z0-9+_.-]`, under 128 bytes, not
/// starting with `-`, not `.` or `..`.
pub fn lvm_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() < 128
        && !n.starts_with('-')
        && n != "."
        && n != ".."
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'_' | b'.' | b'-'))
}

/// The table of one LV: one target per segment.
fn plan_lv(vg: &Vg, lv: &Lv, by_uuid: &BTreeMap<String, DevNo>) -> Result<PlannedLv, LvmError> {
    let es = vg.extent_size;
    let overflow = || LvmError::Model { vg: vg.name.clone(), why: format!("LV {}: sector numbers overflow", lv.name) };
    let mut targets = Vec::with_capacity(lv.segments.len());
    for seg in &lv.segments {
        let start = seg.start_extent.checked_mul(es).ok_or_else(overflow)?;
        let length = seg.extent_count.checked_mul(es).ok_or_else(overflow)?;
        let t = match &seg.kind {
            SegmentKind::Striped { stripe_size, stripes } => {
                let per_stripe = seg.extent_count / stripes.len().max(1) as u64;
                let mut devs = Vec::with_capacity(stripes.len());
                for s in stripes {
                    // parse_vg checked that every stripe names a PV of the group.
                    let pv = vg.pvs.iter().find(|p| p.key == s.pv).ok_or_else(overflow)?;
                    let dev = by_uuid.get(&norm_uuid(&pv.id)).ok_or_else(|| LvmError::MissingPv {
                        vg: vg.name.clone(),
                        lv: lv.name.clone(),
                        pv: pv.id.clone(),
                    })?;
                    let end = s.start_extent.checked_add(per_stripe).ok_or_else(overflow)?;
                    if end > pv.pe_count {
                        return Err(LvmError::Model {
                            vg: vg.name.clone(),
                            why: format!(
                                "LV {} uses extents up to {end} of PV {}, which has {}",
                                lv.name, pv.id, pv.pe_count
                            ),
                        });
                    }
                    let off =
                        s.start_extent.checked_mul(es).and_then(|o| o.checked_add(pv.pe_start)).ok_or_else(overflow)?;
                    devs.push((*dev, off));
                }
                match devs.as_slice() {
                    [(dev, off)] => Target::linear(start, length, dev, *off),
                    _ => Target::striped(start, length, *stripe_size, &devs),
                }
            }
            SegmentKind::Zero => Target::new(start, length, "zero", String::new()),
            SegmentKind::Error => Target::new(start, length, "error", String::new()),
            SegmentKind::Other(t) => {
                return Err(LvmError::Unsupported { vg: vg.name.clone(), lv: lv.name.clone(), segtype: t.clone() })
            }
        };
        targets.push(t);
    }
    let writable = lv.writable() && vg.status.iter().any(|s| s == "WRITE");
    Ok(PlannedLv {
        vg: vg.name.clone(),
        lv: lv.name.clone(),
        dm_name: dm_name(&vg.name, &lv.name),
        dm_uuid: dm_uuid(&vg.id, &lv.id),
        read_only: !writable,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::label::tests::image;
    use crate::lvm::read_pv;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");
    const PV0: &str = "OyzZeX-F5pn-puqa-jMpN-4egg-vcMC-Ulm770";
    const PV1: &str = "Bgo7U0-UH13-ywzT-JCRy-bObT-iDjl-ZJ8mEl";

    fn pv(uuid: &str, text: &[u8]) -> PvInfo {
        PvInfo {
            pv_uuid: uuid.replace('-', ""),
            label_sector: 1,
            device_size: 64 << 20,
            data_areas: vec![],
            metadata_areas: vec![],
            metadata: Some(text.to_vec()),
            metadata_problem: None,
        }
    }

    fn both(text: &[u8]) -> Vec<(DevNo, PvInfo)> {
        vec![(DevNo::new(7, 2), pv(PV0, text)), (DevNo::new(7, 3), pv(PV1, text))]
    }

    fn only(lvs: &[&str]) -> Selection {
        Selection::from_cmdline(&lvs.iter().map(|l| format!("rd.lvm.lv=tvg/{l}")).collect::<Vec<_>>().join(" "))
    }

    #[test]
    fn names_like_lvm2() {
        assert_eq!(dm_name("vg", "root"), "vg-root");
        assert_eq!(dm_name("my-vg", "a-b-c"), "my--vg-a--b--c");
        assert_eq!(
            dm_uuid("w7SpTT-7GB7-QxJz-l56V-BSX0-lvyB-DJAbs9", "y5CDL2-qJrx-HQKQ-Lya0-BbTT-x1oK-LMNUVr"),
            "LVM-w7SpTT7GB7QxJzl56VBSX0lvyBDJAbs9y5CDL2qJrxHQKQLya0BbTTx1oKLMNUVr"
        );
    }

    #[test]
    fn selection_from_cmdline() {
        let s = Selection::from_cmdline(
            "root=/dev/mapper/vg-root rd.lvm.vg=vg0 rd.lvm.lv=vg1/root rd.lvm.lv=/dev/vg1/swap rd.lvm.lv=bad quiet",
        );
        assert_eq!(s.vgs, vec!["vg0".to_string()]);
        assert_eq!(s.lvs, vec![("vg1".into(), "root".into()), ("vg1".into(), "swap".into())]);
        assert!(s.enabled && !s.is_all());
        assert!(Selection::from_cmdline("quiet").is_all());
        assert!(!Selection::from_cmdline("rd.lvm=0").enabled);
        assert_eq!(plan_activation(&both(FIXTURE), &Selection::from_cmdline("rd.lvm=0")).unwrap(), vec![]);
    }

    #[test]
    fn plans_linear_multi_segment_and_striped() {
        let p = plan_activation(&both(FIXTURE), &only(&["lin", "str"])).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].dm_name, "tvg-lin");
        assert_eq!(p[0].dm_uuid, "LVM-w7SpTT7GB7QxJzl56VBSX0lvyBDJAbs9y5CDL2qJrxHQKQLya0BbTTx1oKLMNUVr");
        assert!(!p[0].read_only);
        // lin: extents 0-1 on pv0 extent 0, extent 2 on pv0 extent 5; 8192-sector
        // extents after a 2048-sector pe_start.
        let t: Vec<_> = p[0].targets.iter().map(|t| (t.start, t.length, t.kind.as_str(), t.params())).collect();
        assert_eq!(t, vec![(0, 16384, "linear", "7:2 2048"), (16384, 8192, "linear", "7:2 43008")]);
        let t = &p[1].targets[0];
        assert_eq!((t.start, t.length, t.kind.as_str()), (0, 16384, "striped"));
        assert_eq!(t.params(), "2 128 7:2 34816 7:3 2048");
    }

    #[test]
    fn thin_pools_are_refused_hidden_lvs_and_skipped_lvs_left_out() {
        match plan_activation(&both(FIXTURE), &Selection::all()) {
            Err(e @ LvmError::Unsupported { .. }) => {
                let s = e.to_string();
                assert!(s.contains("tvg/pool") && s.contains("thin-pool") && s.contains("rescue shell"), "{s}");
            }
            other => panic!("{other:?}"),
        }
        // Without the pool: the hidden _tdata/_tmeta and the activation-skip lin2
        // are left out, unless lin2 is named.
        let t = String::from_utf8_lossy(FIXTURE);
        let (a, b) = t.split_once("\npool {").unwrap();
        let rest = &b[b.find("\n}\n}\n").unwrap() + 4..];
        let text = format!("{a}{rest}");
        assert!(!text.contains("thin-pool"));
        let p = plan_activation(&both(text.as_bytes()), &Selection::all()).unwrap();
        let names: Vec<_> = p.iter().map(|p| p.lv.as_str()).collect();
        assert_eq!(names, vec!["lin", "str"]);
        let p = plan_activation(&both(text.as_bytes()), &only(&["lin2"])).unwrap();
        assert_eq!(p[0].lv, "lin2");
        // A hidden LV is never activated, even when named.
        assert!(matches!(plan_activation(&both(FIXTURE), &only(&["pool_tdata"])), Err(LvmError::NotFound { .. })));
    }

    #[test]
    fn missing_and_duplicate_pvs() {
        let one = vec![(DevNo::new(7, 2), pv(PV0, FIXTURE))];
        // lin lives on pv0 only: fine without pv1.
        assert!(plan_activation(&one, &only(&["lin"])).is_ok());
        match plan_activation(&one, &only(&["str"])) {
            Err(LvmError::MissingPv { vg, lv, pv }) => {
                assert_eq!((vg.as_str(), lv.as_str(), pv.as_str()), ("tvg", "str", PV1))
            }
            other => panic!("{other:?}"),
        }
        // The same PV on two devices.
        let dup = vec![(DevNo::new(7, 2), pv(PV0, FIXTURE)), (DevNo::new(7, 9), pv(PV0, FIXTURE))];
        assert!(matches!(plan_activation(&dup, &only(&["lin"])), Err(LvmError::DuplicatePv { .. })));
        // Named but absent.
        assert!(matches!(
            plan_activation(&one, &Selection::from_cmdline("rd.lvm.vg=other")),
            Err(LvmError::NotFound { .. })
        ));
        assert!(matches!(plan_activation(&one, &only(&["nope"])), Err(LvmError::NotFound { .. })));
    }

    #[test]
    fn the_newest_copy_wins_and_bad_copies_elsewhere_do_not_matter() {
        let newer =
            String::from_utf8_lossy(FIXTURE).replace("seqno = 11", "seqno = 12").replace("\"pv0\", 5", "\"pv0\", 9");
        let pvs = vec![(DevNo::new(7, 2), pv(PV0, FIXTURE)), (DevNo::new(7, 3), pv(PV1, newer.as_bytes()))];
        let p = plan_activation(&pvs, &only(&["lin"])).unwrap();
        assert_eq!(p[0].targets[1].params(), "7:2 75776");
        // pv1's copy damaged: pv0's copy still describes the VG, pv1 included.
        let mut broken = pv(PV1, b"tvg { id = ");
        broken.metadata = None;
        broken.metadata_problem = Some("checksum".into());
        let pvs = vec![(DevNo::new(7, 2), pv(PV0, FIXTURE)), (DevNo::new(7, 3), broken.clone())];
        assert!(plan_activation(&pvs, &only(&["str"])).is_ok());
        // The only copy damaged: the error says so rather than "not found".
        let pvs = vec![(DevNo::new(7, 3), broken)];
        let e = plan_activation(&pvs, &Selection::all()).unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
        let e = plan_activation(&pvs, &only(&["lin"])).unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
    }

    #[test]
    fn from_device_images_to_a_plan() {
        let a = image(1, 0xf_f000, FIXTURE, 0x5400);
        let pv0 = read_pv(&a[..]).unwrap().unwrap();
        let p = plan_activation(&[(DevNo::new(7, 2), pv0)], &only(&["lin"])).unwrap();
        assert_eq!(p[0].targets.len(), 2);
    }
}
