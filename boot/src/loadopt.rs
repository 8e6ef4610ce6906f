//! `EFI_LOAD_OPTION` (the content of `Boot####` variables) and the device-path
//! nodes firmware entries use, encoded and decoded byte for byte per the UEFI
//! specification (3.1.3 Load Options; 10.3 Device Path Nodes). Every length is
//! checked before it is used; unknown nodes are kept as raw bytes.

use std::fmt;

use lifeboat_codec::{Reader, Short};

use crate::efivars::{from_utf16, utf16_nul};

/// `LOAD_OPTION_ACTIVE`.
pub const ACTIVE: u32 = 0x1;
/// `LOAD_OPTION_HIDDEN`.
pub const HIDDEN: u32 = 0x8;

/// One device-path node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Media / Hard Drive (4/1) of a GPT partition.
    HardDrive { number: u32, start: u64, size: u64, guid: String },
    /// Media / File Path (4/4).
    File(String),
    /// Any other node, raw.
    Other { kind: u8, sub: u8, data: Vec<u8> },
}

/// A decoded load option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    /// The first device path instance (up to the end node).
    pub path: Vec<Node>,
    pub optional: Vec<u8>,
}

/// Why bytes are not a load option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed EFI_LOAD_OPTION: {}", self.0)
    }
}

/// A GUID as EFI stores it (first three fields little-endian) to the usual form.
pub fn guid_from_efi(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The usual GUID form to EFI's byte order; `None` if malformed.
pub fn guid_to_efi(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, r) in raw.iter_mut().enumerate() {
        *r = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(out)
}

impl From<Short> for DecodeError {
    fn from(e: Short) -> Self {
        DecodeError(e.to_string())
    }
}

/// Decodes a device path (up to its first end node).
pub fn decode_path(b: &[u8]) -> Result<Vec<Node>, DecodeError> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    loop {
        let kind = r.u8("node type")?;
        let sub = r.u8("node subtype")?;
        let len = r.u16_le("node length")? as usize;
        if len < 4 {
            return Err(DecodeError(format!("node {kind:#x}/{sub:#x} with length {len}")));
        }
        let mut data_r = r.sub(len - 4, "node data")?;
        let data = data_r.rest();
        match (kind, sub) {
            (0x7f, 0xff) => return Ok(out),
            (0x7f, _) => return Ok(out), // end of this instance
            (4, 1) if data.len() == 38 && data[36] == 2 && data[37] == 2 => {
                let mut d = Reader::new(data);
                out.push(Node::HardDrive {
                    number: d.u32_le("partition number")?,
                    start: d.u64_le("partition start")?,
                    size: d.u64_le("partition size")?,
                    guid: guid_from_efi(&d.array("partition GUID")?),
                });
            }
            (4, 4) => {
                if data.len() % 2 != 0 {
                    return Err(DecodeError("file path of odd length".into()));
                }
                out.push(Node::File(from_utf16(data)));
            }
            _ => out.push(Node::Other { kind, sub, data: data.to_vec() }),
        }
    }
}

/// Encodes a device path with its end node.
pub fn encode_path(nodes: &[Node]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut node = |kind: u8, sub: u8, data: &[u8]| {
        out.push(kind);
        out.push(sub);
        out.extend_from_slice(&((data.len() + 4) as u16).to_le_bytes());
        out.extend_from_slice(data);
    };
    for n in nodes {
        match n {
            Node::HardDrive { number, start, size, guid } => {
                let mut d = Vec::with_capacity(38);
                d.extend_from_slice(&number.to_le_bytes());
                d.extend_from_slice(&start.to_le_bytes());
                d.extend_from_slice(&size.to_le_bytes());
                d.extend_from_slice(&guid_to_efi(guid).unwrap_or([0; 16]));
                d.push(2); // MBR type: GPT
                d.push(2); // signature type: GUID
                node(4, 1, &d);
            }
            Node::File(p) => node(4, 4, &utf16_nul(p)),
            Node::Other { kind, sub, data } => node(*kind, *sub, data),
        }
    }
    node(0x7f, 0xff, &[]);
    out
}

impl LoadOption {
    pub fn decode(b: &[u8]) -> Result<LoadOption, DecodeError> {
        let mut r = Reader::new(b);
        let attributes = r.u32_le("attributes")?;
        let path_len = r.u16_le("file path list length")? as usize;
        // The description: UTF-16LE up to and including a NUL.
        let mut units = Vec::new();
        loop {
            let u = r.u16_le("description")?;
            if u == 0 {
                break;
            }
            units.push(u);
        }
        let description = String::from_utf16_lossy(&units);
        let path_bytes = r.take(path_len, "file path list")?;
        let path = decode_path(path_bytes)?;
        let optional = r.rest().to_vec();
        Ok(LoadOption { attributes, description, path, optional })
    }

    pub fn encode(&self) -> Vec<u8> {
        let path = encode_path(&self.path);
        let mut out = Vec::new();
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(&utf16_nul(&self.description));
        out.extend_from_slice(&path);
        out.extend_from_slice(&self.optional);
        out
    }

    /// The hard-drive node, if the option points at a GPT partition.
    pub fn partition(&self) -> Option<(&str, u32)> {
        self.path.iter().find_map(|n| match n {
            Node::HardDrive { guid, number, .. } => Some((guid.as_str(), *number)),
            _ => None,
        })
    }

    pub fn file(&self) -> Option<&str> {
        self.path.iter().find_map(|n| match n {
            Node::File(f) => Some(f.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::HardDrive { number, start, size, guid } => write!(f, "HD({number},GPT,{guid},{start:#x},{size:#x})"),
            Node::File(p) => write!(f, "{p}"),
            Node::Other { kind: 2, sub: 1, data } if data.len() >= 8 => {
                write!(f, "PciRoot({:#x})", u32::from_le_bytes([data[4], data[5], data[6], data[7]]))
            }
            Node::Other { kind: 1, sub: 1, data } if data.len() >= 2 => write!(f, "Pci({:#x},{:#x})", data[1], data[0]),
            Node::Other { kind: 3, sub: 23, data } if data.len() >= 4 => {
                write!(f, "NVMe({:#x})", u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            }
            Node::Other { kind: 3, sub: 18, data } if data.len() >= 6 => write!(
                f,
                "Sata({:#x},{:#x},{:#x})",
                u16::from_le_bytes([data[0], data[1]]),
                u16::from_le_bytes([data[2], data[3]]),
                u16::from_le_bytes([data[4], data[5]])
            ),
            Node::Other { kind: 3, sub: 11, data } if data.len() >= 33 => {
                write!(f, "MAC(")?;
                for b in &data[..6] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ",{:#x})", data[32])
            }
            Node::Other { kind: 3, sub: 12, .. } => write!(f, "IPv4(...)"),
            Node::Other { kind: 3, sub: 13, .. } => write!(f, "IPv6(...)"),
            Node::Other { kind: 3, sub: 24, data } => write!(f, "Uri({})", String::from_utf8_lossy(data)),
            Node::Other { kind: 4, sub: 6, data } if data.len() == 16 => {
                let g: [u8; 16] = data[..16].try_into().unwrap_or([0; 16]);
                write!(f, "FvFile({})", guid_from_efi(&g))
            }
            Node::Other { kind: 4, sub: 7, data } if data.len() == 16 => {
                let g: [u8; 16] = data[..16].try_into().unwrap_or([0; 16]);
                write!(f, "Fv({})", guid_from_efi(&g))
            }
            Node::Other { kind, sub, data } => {
                write!(f, "Path({kind},{sub},")?;
                for b in data {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// A device path as people read it: nodes joined by `/`.
pub fn path_string(nodes: &[Node]) -> String {
    nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("/")
}

/// `BootOrder` and friends: little-endian u16 arrays.
pub fn u16_list(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

pub fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector built by hand from the specification's layout: attributes ACTIVE,
    /// description "Linux", HD(1, GPT, start 2048, size 0x100000, GUID), File
    /// "\EFI\x.efi", End; no optional data.
    fn spec_vector() -> Vec<u8> {
        let mut v = vec![1, 0, 0, 0];
        let mut path = vec![4, 1, 42, 0];
        path.extend_from_slice(&1u32.to_le_bytes());
        path.extend_from_slice(&2048u64.to_le_bytes());
        path.extend_from_slice(&0x100000u64.to_le_bytes());
        // 12345678-9abc-def0-1122-334455667788 in EFI byte order.
        path.extend_from_slice(&[
            0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        ]);
        path.extend_from_slice(&[2, 2]);
        let file = "\\EFI\\x.efi";
        path.extend_from_slice(&[4, 4, (4 + (file.len() + 1) * 2) as u8, 0]);
        for u in file.encode_utf16().chain([0]) {
            path.extend_from_slice(&u.to_le_bytes());
        }
        path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        v.extend_from_slice(&(path.len() as u16).to_le_bytes());
        for u in "Linux".encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(&path);
        v
    }

    #[test]
    fn byte_exact_both_ways() {
        let want = LoadOption {
            attributes: ACTIVE,
            description: "Linux".into(),
            path: vec![
                Node::HardDrive {
                    number: 1,
                    start: 2048,
                    size: 0x100000,
                    guid: "12345678-9abc-def0-1122-334455667788".into(),
                },
                Node::File("\\EFI\\x.efi".into()),
            ],
            optional: vec![],
        };
        assert_eq!(want.encode(), spec_vector());
        assert_eq!(LoadOption::decode(&spec_vector()).unwrap(), want);
        let mut with_data = spec_vector();
        with_data.extend_from_slice(b"opt");
        assert_eq!(LoadOption::decode(&with_data).unwrap().optional, b"opt");
        assert_eq!(
            path_string(&want.path),
            "HD(1,GPT,12345678-9abc-def0-1122-334455667788,0x800,0x100000)/\\EFI\\x.efi"
        );
    }

    /// OVMF's own entry for an NVMe disk, as read from its variable store.
    #[test]
    fn ovmf_style_nodes() {
        let mut path = vec![2, 1, 12, 0, 0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0];
        path.extend_from_slice(&[1, 1, 6, 0, 0, 3]);
        path.extend_from_slice(&[3, 23, 16, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        let nodes = decode_path(&path).unwrap();
        assert_eq!(path_string(&nodes), "PciRoot(0x0)/Pci(0x3,0x0)/NVMe(0x1)");
        assert_eq!(encode_path(&nodes), path);
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        let v = spec_vector();
        for cut in 0..v.len() {
            let _ = LoadOption::decode(&v[..cut]);
        }
        let mut bad = v.clone();
        bad[16] = 2; // a node length below 4
        assert!(LoadOption::decode(&v[..10]).is_err());
        let mut zero_len = v.clone();
        zero_len[4] = 0xff;
        zero_len[5] = 0xff;
        assert!(LoadOption::decode(&zero_len).is_err());
        let _ = LoadOption::decode(&bad);
    }

    #[test]
    fn guids_round_trip() {
        let g = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        assert_eq!(guid_from_efi(&guid_to_efi(g).unwrap()), g);
        assert!(guid_to_efi("nope").is_none());
    }
}
