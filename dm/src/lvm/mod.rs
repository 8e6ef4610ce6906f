//! LVM2 logical volumes without the lvm2 tools: [`label`] reads a physical
//! volume's label, header and current metadata text (checksums checked, a wrapped
//! circular buffer followed); [`text`] parses lvm's configuration-text syntax;
//! [`metadata`] turns the tree into a typed volume group; [`activate`] picks the
//! logical volumes the kernel command line asks for and plans their
//! device-mapper tables. Only linear and striped volumes (what installers make)
//! are planned; any other segment type is refused by name.

pub mod activate;
pub mod label;
pub mod metadata;
pub mod text;

use std::fmt;

pub use activate::{dm_name, dm_uuid, lvm_name_ok, plan_activation, plan_activation_lenient, PlannedLv, Selection};
pub use label::{calc_crc, read_pv, PvInfo, ReadAt};
pub use metadata::{parse_vg, Lv, PvMeta, Segment, SegmentKind, Stripe, Vg};

/// Everything that can go wrong between a device's first sectors and a plan.
#[derive(Debug)]
pub enum LvmError {
    /// Reading the device failed.
    Io { what: &'static str, offset: u64, err: std::io::Error },
    /// A `LABELONE` label or its PV header is malformed.
    BadLabel { sector: u64, why: String },
    /// A metadata area header is malformed.
    BadArea { offset: u64, why: String },
    /// A stored checksum does not match the bytes.
    Checksum { what: &'static str, offset: u64, stored: u32, computed: u32 },
    /// The metadata text is not valid lvm configuration text.
    Text { line: usize, why: String },
    /// The text parses but does not describe a consistent volume group.
    Model { vg: String, why: String },
    /// A selected LV has a segment type lifeboat does not map.
    Unsupported { vg: String, lv: String, segtype: String },
    /// A selected LV lives (partly) on a PV none of the given devices carries.
    MissingPv { vg: String, lv: String, pv: String },
    /// Two devices carry the same PV uuid (a cloned disk, multipath without dm-mpath).
    DuplicatePv { pv: String },
    /// Two different VGs carry the same name.
    DuplicateVg { vg: String },
    /// `rd.lvm.vg`/`rd.lvm.lv` named something no device carries.
    NotFound { what: String },
    /// The VG is exported (`vgexport`): lvm refuses to activate it too.
    Exported { vg: String },
}

impl fmt::Display for LvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LvmError::Io { what, offset, err } => write!(f, "LVM: reading {what} at byte {offset}: {err}"),
            LvmError::BadLabel { sector, why } => write!(f, "LVM label in sector {sector}: {why}"),
            LvmError::BadArea { offset, why } => write!(f, "LVM metadata area at byte {offset}: {why}"),
            LvmError::Checksum { what, offset, stored, computed } => {
                write!(f, "LVM {what} at byte {offset}: checksum {stored:#010x} stored, {computed:#010x} computed")
            }
            LvmError::Text { line, why } => write!(f, "LVM metadata text, line {line}: {why}"),
            LvmError::Model { vg, why } => write!(f, "LVM volume group {vg}: {why}"),
            LvmError::Unsupported { vg, lv, segtype } => write!(
                f,
                "LVM volume {vg}/{lv} is a {segtype} volume: thin pools, raid and cache LVs are not \
                 supported by lifeboat's initrd; use the rescue shell (lvm vgchange -ay {vg}) or \
                 the system's own initrd"
            ),
            LvmError::MissingPv { vg, lv, pv } => {
                write!(f, "LVM volume {vg}/{lv} needs physical volume {pv} of VG {vg}, which no device carries")
            }
            LvmError::DuplicatePv { pv } => {
                write!(f, "LVM physical volume {pv} is on more than one device (a cloned disk?); refusing to guess")
            }
            LvmError::DuplicateVg { vg } => {
                write!(f, "two different LVM volume groups are named {vg}; refusing to guess (rename one)")
            }
            LvmError::NotFound { what } => write!(f, "LVM: {what} is on none of the devices found"),
            LvmError::Exported { vg } => write!(f, "LVM volume group {vg} is exported (vgimport it first)"),
        }
    }
}

impl std::error::Error for LvmError {}
