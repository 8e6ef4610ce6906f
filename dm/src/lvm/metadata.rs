//! The typed volume group read from lvm2's metadata text: its name, id, extent
//! size and sequence number, its physical volumes (id, where their extents start,
//! how many), and its logical volumes with their segments. Striped segments (lvm
//! writes a linear LV as `striped` with one stripe) are checked here — stripe
//! count against the list, extents divisible among the stripes, every stripe on a
//! PV of the group — so that planning works on consistent numbers; segments of
//! other types are kept by name, for planning to refuse when they are selected.

use super::text::{self, Section, Value};
use super::LvmError;

/// lvm2's own limit on stripes per segment.
pub const MAX_STRIPES: u64 = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vg {
    pub name: String,
    /// The id as written, with dashes (`xxxxxx-xxxx-...`).
    pub id: String,
    pub seqno: u64,
    /// Extent size in 512-byte sectors.
    pub extent_size: u64,
    pub status: Vec<String>,
    pub flags: Vec<String>,
    pub tags: Vec<String>,
    pub pvs: Vec<PvMeta>,
    pub lvs: Vec<Lv>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvMeta {
    /// The section name (`pv0`) stripes refer to.
    pub key: String,
    pub id: String,
    /// The device path lvm last saw it on: a hint only.
    pub device_hint: Option<String>,
    pub status: Vec<String>,
    /// Sector where extent 0 starts.
    pub pe_start: u64,
    pub pe_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lv {
    pub name: String,
    pub id: String,
    pub status: Vec<String>,
    pub flags: Vec<String>,
    pub tags: Vec<String>,
    pub segments: Vec<Segment>,
}

impl Lv {
    /// Hidden sub-volumes (a thin pool's `_tdata`, raid images) lack `VISIBLE`.
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }

    /// `lvchange -ky`: not activated unless named.
    pub fn activation_skip(&self) -> bool {
        self.flags.iter().chain(&self.status).any(|s| s == "ACTIVATION_SKIP")
    }

    pub fn writable(&self) -> bool {
        self.status.iter().any(|s| s == "WRITE")
    }

    /// Length in extents (the end of the last segment).
    pub fn extents(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.start_extent + s.extent_count)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    pub kind: SegmentKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// One stripe is linear. `stripe_size` in sectors (0 when linear).
    Striped { stripe_size: u64, stripes: Vec<Stripe> },
    /// Reads return zeros (`lvcreate --type zero`).
    Zero,
    /// Every I/O fails (`lvcreate --type error`).
    Error,
    /// Anything else (thin, thin-pool, raid1, cache, mirror, snapshot, vdo, ...).
    Other(String),
}

impl SegmentKind {
    pub fn type_name(&self) -> &str {
        match self {
            SegmentKind::Striped { stripes, .. } if stripes.len() == 1 => "linear",
            SegmentKind::Striped { .. } => "striped",
            SegmentKind::Zero => "zero",
            SegmentKind::Error => "error",
            SegmentKind::Other(t) => t,
        }
    }
}

/// One stripe: `start_extent` on the PV whose section is `pv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stripe {
    pub pv: String,
    pub start_extent: u64,
}

/// Parses metadata text into its volume group.
pub fn parse_vg(text: &[u8]) -> Result<Vg, LvmError> {
    let top = text::parse(text)?;
    if let Some(c) = top.str("contents") {
        if c != "Text Format Volume Group" {
            return Err(LvmError::Text { line: 0, why: format!("contents {c:?} is not a volume group") });
        }
    }
    if let Some(v) = top.int("version") {
        if v != 1 {
            return Err(LvmError::Text { line: 0, why: format!("text format version {v}, lifeboat reads 1") });
        }
    }
    let mut sections = top.sections();
    let (name, s) = sections.next().ok_or_else(|| LvmError::Text { line: 0, why: "no volume group section".into() })?;
    if sections.next().is_some() {
        return Err(LvmError::Text { line: 0, why: "more than one volume group section".into() });
    }
    vg_from(name, s)
}

fn model(vg: &str, why: impl Into<String>) -> LvmError {
    LvmError::Model { vg: vg.to_string(), why: why.into() }
}

/// A non-negative integer field.
fn uint(vg: &str, s: &Section, key: &str, whose: &str) -> Result<u64, LvmError> {
    match s.int(key) {
        Some(i) if i >= 0 => Ok(i as u64),
        Some(i) => Err(model(vg, format!("{whose}: {key} = {i}"))),
        None => Err(model(vg, format!("{whose}: no integer {key}"))),
    }
}

fn str_list(s: &Section, key: &str) -> Vec<String> {
    s.str_list(key).unwrap_or_default()
}

fn vg_from(name: &str, s: &Section) -> Result<Vg, LvmError> {
    let id = s.str("id").ok_or_else(|| model(name, "no id"))?.to_string();
    let seqno = uint(name, s, "seqno", "the group")?;
    let extent_size = uint(name, s, "extent_size", "the group")?;
    if extent_size == 0 {
        return Err(model(name, "extent_size 0"));
    }
    let mut pvs = Vec::new();
    if let Some(p) = s.section("physical_volumes") {
        for (key, pv) in p.sections() {
            let whose = format!("PV {key}");
            pvs.push(PvMeta {
                key: key.to_string(),
                id: pv.str("id").ok_or_else(|| model(name, format!("{whose}: no id")))?.to_string(),
                device_hint: pv.str("device").map(str::to_string),
                status: str_list(pv, "status"),
                pe_start: uint(name, pv, "pe_start", &whose)?,
                pe_count: uint(name, pv, "pe_count", &whose)?,
            });
        }
    }
    let mut lvs = Vec::new();
    if let Some(l) = s.section("logical_volumes") {
        for (lv_name, lv) in l.sections() {
            lvs.push(lv_from(name, lv_name, lv, &pvs)?);
        }
    }
    Ok(Vg {
        name: name.to_string(),
        id,
        seqno,
        extent_size,
        status: str_list(s, "status"),
        flags: str_list(s, "flags"),
        tags: str_list(s, "tags"),
        pvs,
        lvs,
    })
}

fn lv_from(vg: &str, name: &str, s: &Section, pvs: &[PvMeta]) -> Result<Lv, LvmError> {
    let whose = format!("LV {name}");
    let id = s.str("id").ok_or_else(|| model(vg, format!("{whose}: no id")))?.to_string();
    let count = uint(vg, s, "segment_count", &whose)?;
    // The count is checked against the sections actually present before anything
    // is allocated for it.
    let present = s.sections().count() as u64;
    if count > present {
        return Err(model(vg, format!("{whose}: segment_count {count} but {present} sections")));
    }
    let mut segments = Vec::with_capacity(count as usize);
    let mut next_extent = 0u64;
    for i in 1..=count {
        let key = format!("segment{i}");
        let seg = s.section(&key).ok_or_else(|| model(vg, format!("{whose}: no {key}")))?;
        let w = format!("{whose} {key}");
        let start_extent = uint(vg, seg, "start_extent", &w)?;
        let extent_count = uint(vg, seg, "extent_count", &w)?;
        if start_extent != next_extent || extent_count == 0 {
            return Err(model(vg, format!("{w}: extents {start_extent}+{extent_count} do not follow {next_extent}")));
        }
        next_extent =
            start_extent.checked_add(extent_count).ok_or_else(|| model(vg, format!("{w}: extent overflow")))?;
        let kind = match seg.str("type") {
            Some("striped") | Some("linear") => striped(vg, &w, seg, extent_count, pvs)?,
            Some("zero") => SegmentKind::Zero,
            Some("error") => SegmentKind::Error,
            Some(t) => SegmentKind::Other(t.to_string()),
            None => return Err(model(vg, format!("{w}: no type"))),
        };
        segments.push(Segment { start_extent, extent_count, kind });
    }
    Ok(Lv {
        name: name.to_string(),
        id,
        status: str_list(s, "status"),
        flags: str_list(s, "flags"),
        tags: str_list(s, "tags"),
        segments,
    })
}

fn striped(vg: &str, w: &str, seg: &Section, extent_count: u64, pvs: &[PvMeta]) -> Result<SegmentKind, LvmError> {
    let n = seg.int("stripe_count").unwrap_or(1);
    if n < 1 || n as u64 > MAX_STRIPES {
        return Err(model(vg, format!("{w}: stripe_count {n}")));
    }
    let n = n as u64;
    let list = match seg.value("stripes") {
        Some(Value::List(l)) => l,
        _ => return Err(model(vg, format!("{w}: no stripes list"))),
    };
    if list.len() as u64 != 2 * n {
        return Err(model(vg, format!("{w}: {n} stripes but {} list items", list.len())));
    }
    if extent_count % n != 0 {
        return Err(model(vg, format!("{w}: {extent_count} extents do not divide into {n} stripes")));
    }
    let stripe_size = if n > 1 {
        match seg.int("stripe_size") {
            Some(s) if s > 0 && (s as u64).is_power_of_two() => s as u64,
            other => return Err(model(vg, format!("{w}: stripe_size {other:?} is not a power of two"))),
        }
    } else {
        0
    };
    let mut stripes = Vec::with_capacity(n as usize);
    for pair in list.chunks(2) {
        match pair {
            [Value::Str(pv), Value::Int(e)] if *e >= 0 => {
                if !pvs.iter().any(|p| &p.key == pv) {
                    return Err(model(vg, format!("{w}: stripe on {pv:?}, which is not a PV of the group")));
                }
                stripes.push(Stripe { pv: pv.clone(), start_extent: *e as u64 });
            }
            _ => return Err(model(vg, format!("{w}: stripes are not \"pvN\", extent pairs"))),
        }
    }
    Ok(SegmentKind::Striped { stripe_size, stripes })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");

    #[test]
    fn real_metadata_model() {
        let vg = parse_vg(FIXTURE).unwrap();
        assert_eq!((vg.name.as_str(), vg.extent_size, vg.seqno), ("tvg", 8192, 11));
        assert_eq!(vg.id, "w7SpTT-7GB7-QxJz-l56V-BSX0-lvyB-DJAbs9");
        assert_eq!(vg.pvs.len(), 2);
        assert_eq!((vg.pvs[0].pe_start, vg.pvs[0].pe_count), (2048, 15));
        assert_eq!(vg.pvs[1].device_hint.as_deref(), Some("/dev/loop3"));
        let lv = |n: &str| vg.lvs.iter().find(|l| l.name == n).unwrap();
        let lin = lv("lin");
        assert_eq!(lin.segments.len(), 2);
        assert_eq!(lin.extents(), 3);
        assert_eq!(
            lin.segments[1],
            Segment {
                start_extent: 2,
                extent_count: 1,
                kind: SegmentKind::Striped {
                    stripe_size: 0,
                    stripes: vec![Stripe { pv: "pv0".into(), start_extent: 5 }]
                }
            }
        );
        let s = lv("str");
        assert_eq!(s.segments[0].kind.type_name(), "striped");
        assert!(
            matches!(&s.segments[0].kind, SegmentKind::Striped { stripe_size: 128, stripes } if stripes.len() == 2)
        );
        assert!(lv("lin2").activation_skip());
        assert!(!lv("lin").activation_skip());
        assert_eq!(lv("pool").segments[0].kind, SegmentKind::Other("thin-pool".into()));
        assert!(!lv("pool_tdata").visible() && lv("pool").visible());
    }

    fn with(from: &str, to: &str) -> Vec<u8> {
        let t = String::from_utf8_lossy(FIXTURE);
        assert!(t.contains(from), "{from}");
        t.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn inconsistent_groups_are_refused() {
        for (from, to) in [
            ("segment_count = 2", "segment_count = 3"),
            ("segment_count = 2", "segment_count = 99999999999"),
            ("stripe_count = 2", "stripe_count = 3"),
            ("stripe_count = 2", "stripe_count = 1000"),
            ("stripe_size = 128", "stripe_size = 100"),
            ("\"pv1\", 0", "\"pv7\", 0"),
            ("\"pv1\", 0", "\"pv1\", -1"),
            ("start_extent = 2", "start_extent = 3"),
            ("extent_size = 8192", "extent_size = 0"),
            ("seqno = 11", "seqno = -1"),
        ] {
            assert!(matches!(parse_vg(&with(from, to)), Err(LvmError::Model { .. })), "{from} -> {to}");
        }
        assert!(parse_vg(b"a { id = \"x\" seqno = 1 extent_size = 8 }\nb { }").is_err());
        assert!(parse_vg(b"contents = \"x\"\na { id = \"x\" seqno = 1 extent_size = 8 }").is_err());
        assert!(parse_vg(b"a { id = \"x\" seqno = 1 extent_size = 8 }").is_ok());
    }
}
