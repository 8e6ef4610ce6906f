//! The serde (postcard) shape of the state index payload.
//!
//! Column-oriented so that zstd finds the repetition (depths, modes, owners) and
//! postcard's varints keep small numbers small. Paths and entries shared between
//! transactions appear once; a transaction is a run-length list over entry ids.

use serde::{Deserialize, Serialize};

/// A byte string that postcard writes as one length plus raw bytes.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Every distinct path of every retained transaction, in depth-first order.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
pub struct PathsWire {
    /// Depth of each path (0 = child of `/usr`); the parent is the nearest earlier
    /// path one level up.
    pub depth: Bytes,
    /// Byte length of each name in `names`.
    pub name_len: Vec<u32>,
    /// All last components, concatenated.
    pub names: Bytes,
}

/// Every distinct (path, metadata, content) of every retained transaction, sorted by
/// path id.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
pub struct EntriesWire {
    /// Path id of each entry as a difference from the previous entry's.
    pub path_delta: Vec<u32>,
    /// `st_mode` (type and permission bits).
    pub mode: Vec<u32>,
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    /// Size of each regular file, in entry order.
    pub file_size: Vec<u64>,
    /// xxh3-128 (big-endian, 16 bytes) of each regular file, in entry order.
    pub file_hash: Bytes,
    /// Target of each symlink, in entry order.
    pub link_target: Vec<Bytes>,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq, Clone)]
pub struct TxWire {
    pub id: u64,
    /// Seconds since the Unix epoch.
    pub created: i64,
    pub summary: String,
    pub parent: Option<u64>,
    pub kernels: Vec<String>,
    /// Alternating (gap, length) over ascending entry ids: ids
    /// `[prev_end + gap, prev_end + gap + length)`.
    pub runs: Vec<u32>,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
pub struct PayloadWire {
    /// The id the next commit gets; ids are never reused, because boot entries and
    /// kernel command lines name them.
    pub next_id: u64,
    pub paths: PathsWire,
    pub entries: EntriesWire,
    pub transactions: Vec<TxWire>,
    /// Format 1.1's additions, written after this payload (see [`ExtensionWire`]).
    #[serde(skip)]
    pub ext: ExtensionWire,
}

/// What format 1.1 adds after the 1.0 payload (postcard values one after the
/// other, so a 1.0 reader, which stops after [`PayloadWire`], still reads the
/// layouts — without their attributes).
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq, Clone)]
pub struct ExtensionWire {
    pub attrs: AttrsWire,
    /// One per transaction, in the order of [`PayloadWire::transactions`].
    pub tx: Vec<TxExtWire>,
}

/// The extended attributes of the entries that have any, each distinct name,
/// (name, value) pair and set stored once.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq, Clone)]
pub struct AttrsWire {
    /// Distinct attribute names.
    pub names: Vec<Bytes>,
    /// Per distinct attribute: its name (index into `names`) and value.
    pub item_name: Vec<u32>,
    pub item_value: Vec<Bytes>,
    /// Per distinct set: how many attributes; the sets' attribute ids
    /// (into `item_*`) follow each other in `set_items`.
    pub set_len: Vec<u32>,
    pub set_items: Vec<u32>,
    /// The entries with attributes, ascending, each as a difference from the
    /// previous one (the first from 0), and the set each has.
    pub entry_delta: Vec<u32>,
    pub entry_set: Vec<u32>,
}

/// A transaction's flags — bit 0, its attributes were recorded (an entry with
/// none has none); other bits are for later minor versions and ignored — and
/// its tree's top directory, where recorded.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq, Clone, Copy)]
pub struct TxExtWire {
    pub flags: u32,
    pub top: Option<TopWire>,
}

/// The top directory's mode (permission bits), owner and attribute set (its
/// id in [`AttrsWire`] plus one; 0 for none).
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq, Clone, Copy)]
pub struct TopWire {
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub attrs: u32,
}

pub const TX_ATTRS_RECORDED: u32 = 1;
