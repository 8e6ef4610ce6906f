//! The entry points the fuzz targets (`fuzz/fuzz_targets/lvm_metadata.rs`,
//! `dm_reply.rs`) and the crate's deterministic mutation test share, so that both
//! exercise exactly the same paths. Not an API.

use crate::ioctl::{decode_name_list, decode_reply, reply_data};
use crate::lvm::{parse_vg, plan_activation, read_pv, PvInfo, Selection};
use crate::DevNo;

/// Arbitrary bytes as metadata text (parsed, then planned with every PV it names
/// present, and again with half of them missing) and as the start of a device
/// (label, metadata area, text, plan).
pub fn lvm_metadata(data: &[u8]) {
    if let Ok(vg) = parse_vg(data) {
        let pvs: Vec<(DevNo, PvInfo)> = vg
            .pvs
            .iter()
            .take(256)
            .enumerate()
            .map(|(i, p)| {
                let pv = PvInfo {
                    pv_uuid: p.id.replace('-', ""),
                    label_sector: 1,
                    device_size: 0,
                    data_areas: Vec::new(),
                    metadata_areas: Vec::new(),
                    // One copy is enough: the others are found by uuid.
                    metadata: (i == 0).then(|| data.to_vec()),
                    metadata_problem: None,
                };
                (DevNo::new(7, i as u32), pv)
            })
            .collect();
        let _ = plan_activation(&pvs, &Selection::all());
        if let Some(lv) = vg.lvs.first() {
            let sel = Selection { enabled: true, vgs: Vec::new(), lvs: vec![(vg.name.clone(), lv.name.clone())] };
            let _ = plan_activation(&pvs[..pvs.len().div_ceil(2)], &sel);
        }
    }
    if let Ok(Some(pv)) = read_pv(data) {
        let _ = plan_activation(&[(DevNo::new(7, 0), pv)], &Selection::all());
    }
}

/// Arbitrary bytes as a kernel reply: the header, its data area, a name list.
pub fn dm_reply(data: &[u8]) {
    if let Ok(r) = decode_reply(data) {
        if let Ok(d) = reply_data(data, &r) {
            let _ = decode_name_list(d);
        }
    }
    let _ = decode_name_list(data);
}
