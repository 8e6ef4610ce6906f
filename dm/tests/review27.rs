//! review27: names a hostile (or foreign) PV's metadata gives. lvm2 allows VG and
//! LV names of [a-zA-Z0-9+_.-] only, never "." or "..", never starting with '-'.
//! PID 1 makes `/dev/<VG>/<LV>` from these names (src/pid1/crypt.rs
//! activate_lvm): a VG called ".." puts `/<LV>` symlinks in the initrd's root
//! (`/sysroot` before the root is mounted), a name with '/' makes the dm create
//! fail and ends the root wait. The plan should refuse (or skip with a note)
//! names lvm2 itself would never write.

use lifeboat_dm::lvm::{plan_activation_lenient, PvInfo, Selection};
use lifeboat_dm::DevNo;

const FIXTURE: &str = include_str!("fixtures/tvg-thinpool.txt");
const PV0: &str = "OyzZeX-F5pn-puqa-jMpN-4egg-vcMC-Ulm770";
const PV1: &str = "Bgo7U0-UH13-ywzT-JCRy-bObT-iDjl-ZJ8mEl";

fn pv(uuid: &str, text: &str) -> PvInfo {
    PvInfo {
        pv_uuid: uuid.replace('-', ""),
        label_sector: 1,
        device_size: 64 << 20,
        data_areas: vec![],
        metadata_areas: vec![],
        metadata: Some(text.as_bytes().to_vec()),
        metadata_problem: None,
    }
}

fn planned_names(text: &str) -> Vec<(String, String)> {
    let pvs = vec![(DevNo::new(7, 2), pv(PV0, text)), (DevNo::new(7, 3), pv(PV1, text))];
    match plan_activation_lenient(&pvs, &Selection::all()) {
        Ok((plan, _notes)) => plan.into_iter().map(|p| (p.vg, p.lv)).collect(),
        Err(_) => Vec::new(),
    }
}

fn lvm2_would_accept(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && !n.starts_with('-')
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'_' | b'.' | b'-'))
}

#[test]
fn review27_vg_named_dotdot_is_not_planned() {
    let text = FIXTURE.replacen("tvg {", ".. {", 1).replacen("\nlin {", "\nsysroot {", 1);
    for (vg, lv) in planned_names(&text) {
        assert!(
            lvm2_would_accept(&vg) && lvm2_would_accept(&lv),
            "planned {vg:?}/{lv:?}: PID 1 would symlink /dev/{vg}/{lv}"
        );
    }
}
