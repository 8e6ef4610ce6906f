//! The byte layout of the device-mapper ioctl interface, version 4, as the kernel's
//! `include/uapi/linux/dm-ioctl.h` defines it: a `struct dm_ioctl` header (312
//! bytes) followed by a data area which, for a table load, holds one
//! `struct dm_target_spec` (40 bytes) per target, each followed by its
//! NUL-terminated parameter string padded to 8 bytes. Encoding builds the whole
//! buffer in one allocation that is wiped when dropped (dm-crypt keys travel in the
//! parameters); decoding reads the kernel's reply through the bounded reader, so a
//! reply of any shape is an error, never a panic. Nothing here touches a device:
//! [`crate::control`] sends the buffers.

use std::fmt;

use lifeboat_codec::{le_u32_at, le_u64_at, Reader};
use zeroize::Zeroizing;

use crate::DmError;

/// Size of `struct dm_ioctl`: 3 + 6 u32, a u32 of padding, the u64 `dev`,
/// `name[128]`, `uuid[129]` and `data[7]`, which rounds the whole to 8 bytes.
pub const HEADER_SIZE: usize = 312;
/// Size of `struct dm_target_spec`: two u64, an s32, a u32 and `target_type[16]`.
pub const SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN`, including the terminating NUL.
pub const NAME_LEN: usize = 128;
/// `DM_UUID_LEN`, including the terminating NUL.
pub const UUID_LEN: usize = 129;
/// `DM_MAX_TYPE_NAME`, including the terminating NUL.
pub const TYPE_LEN: usize = 16;
/// The interface version lifeboat sends. The kernel accepts a request whose major
/// is its own and whose minor is not above its own, so 4.0.0 works on every
/// kernel with the version-4 interface; nothing used here came later.
pub const VERSION: [u32; 3] = [4, 0, 0];
/// `DM_IOCTL`, the ioctl type byte.
pub const DM_IOCTL: u8 = 0xfd;

// Field offsets in struct dm_ioctl.
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_EVENT_NR: usize = 32;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const OFF_UUID: usize = OFF_NAME + NAME_LEN;

/// The flag bits of `dm_ioctl.flags` lifeboat uses.
pub mod flags {
    pub const READONLY: u32 = 1 << 0;
    pub const SUSPEND: u32 = 1 << 1;
    pub const PERSISTENT_DEV: u32 = 1 << 3;
    pub const ACTIVE_PRESENT: u32 = 1 << 5;
    pub const INACTIVE_PRESENT: u32 = 1 << 6;
    pub const BUFFER_FULL: u32 = 1 << 8;
    pub const UEVENT_GENERATED: u32 = 1 << 13;
    /// Asks the kernel to wipe its copy of the ioctl buffer: set on every table
    /// load, since a crypt table carries the key.
    pub const SECURE_DATA: u32 = 1 << 15;
}

/// `DM_NAME_LIST_FLAG_HAS_UUID` in a listed device's flags.
const NAME_LIST_HAS_UUID: u32 = 1;

/// The commands (the ioctl numbers, in the order of the header's enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Version = 0,
    ListDevices = 2,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    DevStatus = 7,
    TableLoad = 9,
}

impl Cmd {
    /// `_IOWR(DM_IOCTL, cmd, struct dm_ioctl)` with the generic (x86, arm, riscv)
    /// encoding: direction read|write in the top two bits, the size in the next 14.
    /// `control` takes the number from `nix`, which knows the other architectures;
    /// this one is for tests and documentation.
    pub fn request_code_generic(self) -> u32 {
        (3 << 30) | ((HEADER_SIZE as u32) << 16) | ((DM_IOCTL as u32) << 8) | self as u32
    }
}

/// A device number, as major:minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

impl DevNo {
    pub fn new(major: u32, minor: u32) -> Self {
        DevNo { major, minor }
    }

    /// From the kernel's `huge_encode_dev` form the `dev` fields carry (the same
    /// split as userspace `dev_t`: minor's low 8 bits, major's 12, minor's next 12,
    /// then the high halves).
    pub fn from_kernel(v: u64) -> Self {
        let major = ((v >> 8) & 0xfff) | ((v >> 32) & 0xffff_f000);
        let minor = (v & 0xff) | ((v >> 12) & 0xffff_ff00);
        DevNo { major: major as u32, minor: minor as u32 }
    }

    pub fn to_kernel(self) -> u64 {
        let (ma, mi) = (self.major as u64, self.minor as u64);
        (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & !0xff) << 12) | ((ma & !0xfff) << 32)
    }
}

impl fmt::Display for DevNo {
    /// `MAJOR:MINOR`, the form device-mapper tables accept without any `/dev` node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of a device-mapper table: `length` sectors from sector `start` of the
/// mapping go to target type `kind` with `params`. The parameters are wiped when
/// the target is dropped and `Debug` hides them for types that carry keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub length: u64,
    pub kind: String,
    params: Zeroizing<String>,
}

impl Target {
    /// A target of any type. `params` is moved in, not copied, so a key in it
    /// leaves no copy behind.
    pub fn new(start: u64, length: u64, kind: &str, params: String) -> Self {
        Target { start, length, kind: kind.to_string(), params: Zeroizing::new(params) }
    }

    /// `linear DEV OFFSET`.
    pub fn linear(start: u64, length: u64, dev: impl fmt::Display, offset: u64) -> Self {
        Target::new(start, length, "linear", format!("{dev} {offset}"))
    }

    /// `striped N CHUNK DEV OFFSET ...`, `chunk_sectors` per stripe in turn.
    pub fn striped<D: fmt::Display>(start: u64, length: u64, chunk_sectors: u64, stripes: &[(D, u64)]) -> Self {
        use fmt::Write;
        let mut p = format!("{} {}", stripes.len(), chunk_sectors);
        for (dev, off) in stripes {
            let _ = write!(p, " {dev} {off}");
        }
        Target::new(start, length, "striped", p)
    }

    /// `crypt CIPHER KEY IV_OFFSET DEV OFFSET [#OPTS OPTS...]` with the key written
    /// in hex straight into a buffer allocated once at its final size, so that no
    /// reallocation leaves a copy of the key in freed memory.
    #[allow(clippy::too_many_arguments)]
    pub fn crypt(
        start: u64,
        length: u64,
        cipher: &str,
        key: &[u8],
        iv_offset: u64,
        dev: impl fmt::Display,
        offset: u64,
        options: &[&str],
    ) -> Self {
        let mut tail = format!(" {iv_offset} {dev} {offset}");
        if !options.is_empty() {
            tail.push_str(&format!(" {}", options.len()));
            for o in options {
                tail.push(' ');
                tail.push_str(o);
            }
        }
        let mut p = String::with_capacity(cipher.len() + 1 + 2 * key.len() + tail.len());
        p.push_str(cipher);
        p.push(' ');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in key {
            p.push(HEX[(b >> 4) as usize] as char);
            p.push(HEX[(b & 15) as usize] as char);
        }
        p.push_str(&tail);
        Target::new(start, length, "crypt", p)
    }

    pub fn params(&self) -> &str {
        &self.params
    }

    /// Types whose parameters may hold a key.
    fn secret(&self) -> bool {
        matches!(self.kind.as_str(), "crypt" | "integrity")
    }

    /// Bytes this target takes in a table load: the spec, the parameters and their
    /// NUL, padded so the next spec starts 8-aligned.
    fn encoded_len(&self) -> usize {
        SPEC_SIZE + align8(self.params.len() + 1)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: &str = if self.secret() { "<redacted>" } else { &self.params };
        f.debug_struct("Target")
            .field("start", &self.start)
            .field("length", &self.length)
            .field("kind", &self.kind)
            .field("params", &params)
            .finish()
    }
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The header fields of one request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub cmd: Cmd,
    pub name: &'a str,
    pub uuid: &'a str,
    pub flags: u32,
    pub dev: u64,
    pub event_nr: u32,
}

impl<'a> Request<'a> {
    pub fn new(cmd: Cmd, name: &'a str) -> Self {
        Request { cmd, name, uuid: "", flags: 0, dev: 0, event_nr: 0 }
    }
}

/// Checks a mapping name the way the kernel will: non-empty, shorter than
/// `DM_NAME_LEN`, no `/` (it becomes a file name under /dev/mapper), not `.`/`..`.
pub fn check_name(name: &str) -> Result<(), DmError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() >= NAME_LEN {
        "longer than 127 bytes"
    } else if name.contains('/') {
        "contains '/'"
    } else if name == "." || name == ".." {
        "is . or .."
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(DmError::InvalidName { name: name.to_string(), why })
}

fn check_uuid(uuid: &str) -> Result<(), DmError> {
    if uuid.len() >= UUID_LEN {
        return Err(DmError::InvalidName { name: uuid.to_string(), why: "uuid longer than 128 bytes" });
    }
    if uuid.contains('\0') {
        return Err(DmError::InvalidName { name: uuid.to_string(), why: "uuid contains NUL" });
    }
    Ok(())
}

/// Lays out a request: the header, then the targets (for a table load), in a
/// buffer of at least `capacity` bytes (room for the kernel's reply). `data_size`
/// is the whole buffer, `data_start` the end of the header.
pub fn encode(req: &Request, targets: &[Target], capacity: usize) -> Result<Zeroizing<Vec<u8>>, DmError> {
    if !req.name.is_empty() || req.cmd != Cmd::ListDevices && req.cmd != Cmd::Version {
        check_name(req.name)?;
    }
    check_uuid(req.uuid)?;
    let bad = |why: String| DmError::BadTarget { name: req.name.to_string(), why };
    let mut payload = 0usize;
    for t in targets {
        if t.kind.is_empty() || t.kind.len() >= TYPE_LEN || !t.kind.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!("target type {:?} is not 1-15 printable characters", t.kind)));
        }
        if t.params.contains('\0') {
            return Err(bad(format!("parameters of the {} target at sector {} contain NUL", t.kind, t.start)));
        }
        payload = payload.checked_add(t.encoded_len()).ok_or_else(|| bad("table too large".into()))?;
    }
    let count = u32::try_from(targets.len()).map_err(|_| bad("too many targets".into()))?;
    let total = (HEADER_SIZE + payload).max(capacity);
    let total32 = u32::try_from(total).map_err(|_| bad("table too large".into()))?;
    // One allocation at the final size: the parameters are copied in once and the
    // buffer is wiped on drop.
    let mut b = Zeroizing::new(vec![0u8; total]);
    for (i, v) in VERSION.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    put_u32(&mut b, OFF_DATA_SIZE, total32);
    put_u32(&mut b, OFF_DATA_START, HEADER_SIZE as u32);
    put_u32(&mut b, OFF_TARGET_COUNT, count);
    put_u32(&mut b, OFF_FLAGS, req.flags);
    put_u32(&mut b, OFF_EVENT_NR, req.event_nr);
    b[OFF_DEV..OFF_DEV + 8].copy_from_slice(&req.dev.to_le_bytes());
    b[OFF_NAME..OFF_NAME + req.name.len()].copy_from_slice(req.name.as_bytes());
    b[OFF_UUID..OFF_UUID + req.uuid.len()].copy_from_slice(req.uuid.as_bytes());
    let mut at = HEADER_SIZE;
    for t in targets {
        let len = t.encoded_len();
        b[at..at + 8].copy_from_slice(&t.start.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&t.length.to_le_bytes());
        // status (at + 16) is output only and stays 0. `next` counts from the
        // start of this spec to the start of the next one.
        put_u32(&mut b, at + 20, len as u32);
        b[at + 24..at + 24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
        let p = at + SPEC_SIZE;
        b[p..p + t.params.len()].copy_from_slice(t.params.as_bytes());
        at += len;
    }
    Ok(b)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The header of the kernel's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub version: [u32; 3],
    pub data_size: u32,
    pub data_start: u32,
    pub target_count: u32,
    pub open_count: i32,
    pub flags: u32,
    pub event_nr: u32,
    pub dev: DevNo,
    pub name: String,
    pub uuid: String,
}

/// A NUL-terminated string in a fixed field (lossy: names are shown, not trusted).
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Decodes the `struct dm_ioctl` at the start of `buf`.
pub fn decode_reply(buf: &[u8]) -> Result<Reply, String> {
    let mut r = Reader::new(buf);
    let s = |e: lifeboat_codec::Short| e.to_string();
    let version = [r.u32_le("version").map_err(s)?, r.u32_le("version").map_err(s)?, r.u32_le("version").map_err(s)?];
    let data_size = r.u32_le("data_size").map_err(s)?;
    let data_start = r.u32_le("data_start").map_err(s)?;
    let target_count = r.u32_le("target_count").map_err(s)?;
    let open_count = r.u32_le("open_count").map_err(s)? as i32;
    let flags = r.u32_le("flags").map_err(s)?;
    let event_nr = r.u32_le("event_nr").map_err(s)?;
    r.skip(4, "padding").map_err(s)?;
    let dev = DevNo::from_kernel(r.u64_le("dev").map_err(s)?);
    let name = cstr(r.take(NAME_LEN, "name").map_err(s)?);
    let uuid = cstr(r.take(UUID_LEN, "uuid").map_err(s)?);
    r.skip(HEADER_SIZE - OFF_UUID - UUID_LEN, "data").map_err(s)?;
    Ok(Reply { version, data_size, data_start, target_count, open_count, flags, event_nr, dev, name, uuid })
}

/// The data area of a reply: from `data_start` to `data_size`, both checked
/// against the buffer.
pub fn reply_data<'a>(buf: &'a [u8], r: &Reply) -> Result<&'a [u8], String> {
    let (start, end) = (r.data_start as usize, r.data_size as usize);
    if start < HEADER_SIZE || start > end || end > buf.len() {
        return Err(format!("data area {start}..{end} outside the {}-byte buffer", buf.len()));
    }
    Ok(&buf[start..end])
}

/// One mapping listed by `DM_LIST_DEVICES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedDevice {
    pub name: String,
    pub dev: DevNo,
    /// Present from kernels that append it (interface 4.46 and later).
    pub uuid: Option<String>,
}

/// Decodes the `struct dm_name_list` records of a `DM_LIST_DEVICES` reply. Each
/// record is `dev` (u64), `next` (u32, offset of the next record from the start of
/// this one, 0 on the last) and the NUL-terminated name; newer kernels follow the
/// name, at the next 8-byte boundary, with `event_nr` and `flags` (u32 each) and,
/// when the flags say so, the uuid at the next boundary. A lone record with `dev`
/// 0 means no devices.
pub fn decode_name_list(data: &[u8]) -> Result<Vec<ListedDevice>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let dev = le_u64_at(data, at).ok_or("name list record past the end")?;
        let next = le_u32_at(data, at + 8).ok_or("name list record past the end")? as usize;
        if at == 0 && dev == 0 && next == 0 {
            return Ok(out);
        }
        let end = if next == 0 {
            data.len()
        } else {
            at.checked_add(next).filter(|&e| e <= data.len()).ok_or("name list next past the end")?
        };
        if next != 0 && next < 12 {
            return Err(format!("name list record at {at} has next {next}"));
        }
        let rec = &data[at..end];
        let name_end = rec[12..].iter().position(|&c| c == 0).ok_or("name list name without NUL")? + 12;
        let name = String::from_utf8_lossy(&rec[12..name_end]).into_owned();
        let mut uuid = None;
        // Alignment is of the kernel's buffer, whose data area starts 8-aligned.
        let extra = align8(at + name_end + 1) - at;
        if let (Some(_event_nr), Some(fl)) = (le_u32_at(rec, extra), le_u32_at(rec, extra + 4)) {
            if fl & NAME_LIST_HAS_UUID != 0 {
                let u = align8(at + extra + 8) - at;
                if let Some(tail) = rec.get(u..) {
                    let n = tail.iter().position(|&c| c == 0).ok_or("name list uuid without NUL")?;
                    uuid = Some(String::from_utf8_lossy(&tail[..n]).into_owned());
                }
            }
        }
        out.push(ListedDevice { name, dev: DevNo::from_kernel(dev), uuid });
        if next == 0 {
            return Ok(out);
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_are_iowr_of_the_312_byte_header() {
        assert_eq!(Cmd::Version.request_code_generic(), 0xc138_fd00);
        assert_eq!(Cmd::DevCreate.request_code_generic(), 0xc138_fd03);
        assert_eq!(Cmd::TableLoad.request_code_generic(), 0xc138_fd09);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86", target_arch = "riscv64"))]
        assert_eq!(nix::request_code_readwrite!(DM_IOCTL, Cmd::DevSuspend as u8, HEADER_SIZE) as u32, 0xc138_fd06);
    }

    #[test]
    fn devno_round_trips_the_kernel_encoding() {
        // 253:0 is the first dm device: new_encode_dev gives 0xfd00.
        assert_eq!(DevNo::new(253, 0).to_kernel(), 0xfd00);
        assert_eq!(DevNo::from_kernel(0xfd00), DevNo::new(253, 0));
        // minor 300 (0x12c): its low byte in bits 0-7, its 0x100 from bit 20.
        assert_eq!(DevNo::new(253, 300).to_kernel(), 0x10_fd2c);
        for d in [DevNo::new(8, 17), DevNo::new(4095, (1 << 20) - 1), DevNo::new(1 << 20, 5), DevNo::new(259, 70000)] {
            assert_eq!(DevNo::from_kernel(d.to_kernel()), d);
            assert_eq!(d.to_kernel(), nix::sys::stat::makedev(d.major as u64, d.minor as u64) as u64);
        }
        assert_eq!(DevNo::new(7, 3).to_string(), "7:3");
    }

    /// The table load of two targets, byte for byte against the header's layout.
    #[test]
    fn table_load_layout() {
        let targets = [
            Target::linear(0, 2048, DevNo::new(7, 0), 2048),
            Target::striped(2048, 4096, 128, &[("8:16", 2048u64), ("8:32", 10240)]),
        ];
        let mut req = Request::new(Cmd::TableLoad, "vg-root");
        req.uuid = "LVM-abc";
        req.flags = flags::SECURE_DATA | flags::READONLY;
        let b = encode(&req, &targets, 0).unwrap();
        let p0 = "7:0 2048";
        let p1 = "2 128 8:16 2048 8:32 10240";
        let len0 = 40 + (p0.len() + 1).div_ceil(8) * 8; // 40 + 16
        let len1 = 40 + (p1.len() + 1).div_ceil(8) * 8; // 40 + 32
        assert_eq!((len0, len1), (56, 72));
        assert_eq!(b.len(), 312 + 56 + 72);
        let mut want = vec![0u8; b.len()];
        want[0..4].copy_from_slice(&4u32.to_le_bytes());
        want[12..16].copy_from_slice(&(b.len() as u32).to_le_bytes());
        want[16..20].copy_from_slice(&312u32.to_le_bytes());
        want[20..24].copy_from_slice(&2u32.to_le_bytes());
        want[28..32].copy_from_slice(&(0x8001u32).to_le_bytes());
        want[48..55].copy_from_slice(b"vg-root");
        want[176..183].copy_from_slice(b"LVM-abc");
        let s = 312;
        want[s + 8..s + 16].copy_from_slice(&2048u64.to_le_bytes());
        want[s + 20..s + 24].copy_from_slice(&56u32.to_le_bytes());
        want[s + 24..s + 30].copy_from_slice(b"linear");
        want[s + 40..s + 40 + p0.len()].copy_from_slice(p0.as_bytes());
        let s = 312 + 56;
        want[s..s + 8].copy_from_slice(&2048u64.to_le_bytes());
        want[s + 8..s + 16].copy_from_slice(&4096u64.to_le_bytes());
        want[s + 20..s + 24].copy_from_slice(&72u32.to_le_bytes());
        want[s + 24..s + 31].copy_from_slice(b"striped");
        want[s + 40..s + 40 + p1.len()].copy_from_slice(p1.as_bytes());
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn capacity_leaves_room_for_the_reply() {
        let b = encode(&Request::new(Cmd::ListDevices, ""), &[], 16384).unwrap();
        assert_eq!(b.len(), 16384);
        assert_eq!(le_u32_at(&b, 12), Some(16384));
        assert_eq!(le_u32_at(&b, 16), Some(312));
    }

    #[test]
    fn names_and_targets_the_kernel_would_refuse_are_refused_here() {
        for n in ["", "a/b", ".", "..", &"x".repeat(128)] {
            assert!(
                matches!(encode(&Request::new(Cmd::DevCreate, n), &[], 0), Err(DmError::InvalidName { .. })),
                "{n}"
            );
        }
        assert!(encode(&Request::new(Cmd::DevCreate, &"x".repeat(127)), &[], 0).is_ok());
        let mut r = Request::new(Cmd::DevCreate, "a");
        let long = "u".repeat(129);
        r.uuid = &long;
        assert!(encode(&r, &[], 0).is_err());
        let r = Request::new(Cmd::TableLoad, "a");
        let t = Target::new(0, 1, "a-very-long-target-type", String::new());
        assert!(matches!(encode(&r, &[t], 0), Err(DmError::BadTarget { .. })));
        let t = Target::new(0, 1, "linear", "7:0\0 0".into());
        assert!(matches!(encode(&r, &[t], 0), Err(DmError::BadTarget { .. })));
    }

    #[test]
    fn crypt_params_are_hex_and_never_debug_printed() {
        let key = [0x00u8, 0x1f, 0xa0, 0xff];
        let t = Target::crypt(0, 100, "aes-xts-plain64", &key, 0, DevNo::new(8, 2), 32768, &["allow_discards"]);
        assert_eq!(t.params(), "aes-xts-plain64 001fa0ff 0 8:2 32768 1 allow_discards");
        let d = format!("{t:?}");
        assert!(!d.contains("001fa0ff") && d.contains("<redacted>"), "{d}");
        let l = Target::linear(0, 8, "7:0", 0);
        assert!(format!("{l:?}").contains("7:0 0"));
    }

    /// A reply built from the header's layout: DM_DEV_STATUS of an active mapping.
    fn status_reply() -> Vec<u8> {
        let mut b = vec![0u8; 312];
        for (i, v) in [4u32, 47, 0].iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[12..16].copy_from_slice(&312u32.to_le_bytes());
        b[16..20].copy_from_slice(&312u32.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..28].copy_from_slice(&2i32.to_le_bytes());
        b[28..32].copy_from_slice(&(flags::ACTIVE_PRESENT | flags::READONLY).to_le_bytes());
        b[32..36].copy_from_slice(&7u32.to_le_bytes());
        b[40..48].copy_from_slice(&DevNo::new(253, 3).to_kernel().to_le_bytes());
        b[48..55].copy_from_slice(b"vg-root");
        b[176..180].copy_from_slice(b"LVM-");
        b
    }

    #[test]
    fn decodes_a_status_reply() {
        let b = status_reply();
        let r = decode_reply(&b).unwrap();
        assert_eq!(r.version, [4, 47, 0]);
        assert_eq!((r.target_count, r.open_count, r.event_nr), (1, 2, 7));
        assert_eq!(r.flags, flags::ACTIVE_PRESENT | flags::READONLY);
        assert_eq!(r.dev, DevNo::new(253, 3));
        assert_eq!((r.name.as_str(), r.uuid.as_str()), ("vg-root", "LVM-"));
        assert_eq!(reply_data(&b, &r).unwrap(), &[] as &[u8]);
        assert!(decode_reply(&b[..311]).is_err());
        let mut bad = r.clone();
        bad.data_size = 400;
        assert!(reply_data(&b, &bad).is_err());
    }

    /// A DM_LIST_DEVICES data area as a 4.47 kernel lays it out.
    #[test]
    fn decodes_a_name_list() {
        let mut d = vec![0u8; 0];
        // Record 1 at 0: dev, next, "luks-1" NUL, pad to 24, event_nr, flags=HAS_UUID,
        // uuid at 32 "CRYPT-LUKS2-x" NUL, pad to 48.
        d.extend_from_slice(&DevNo::new(253, 0).to_kernel().to_le_bytes());
        d.extend_from_slice(&48u32.to_le_bytes());
        d.extend_from_slice(b"luks-1\0");
        d.resize(24, 0);
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&NAME_LIST_HAS_UUID.to_le_bytes());
        d.extend_from_slice(b"CRYPT-LUKS2-x\0");
        d.resize(48, 0);
        // Record 2 at 48: no uuid.
        d.extend_from_slice(&DevNo::new(253, 1).to_kernel().to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(b"vg-swap\0");
        d.resize(72, 0);
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&2u32.to_le_bytes());
        let l = decode_name_list(&d).unwrap();
        assert_eq!(
            l,
            vec![
                ListedDevice { name: "luks-1".into(), dev: DevNo::new(253, 0), uuid: Some("CRYPT-LUKS2-x".into()) },
                ListedDevice { name: "vg-swap".into(), dev: DevNo::new(253, 1), uuid: None },
            ]
        );
        // No devices: one zeroed record.
        assert_eq!(decode_name_list(&[0u8; 16]).unwrap(), vec![]);
        // A next pointing back or past the end is an error.
        let mut e = d.clone();
        e[8..12].copy_from_slice(&4u32.to_le_bytes());
        assert!(decode_name_list(&e).is_err());
        e[8..12].copy_from_slice(&4000u32.to_le_bytes());
        assert!(decode_name_list(&e).is_err());
        assert!(decode_name_list(&d[..20]).is_err());
    }
}
