//! The state index: every retained transaction's metadata and full `/usr` layout.
//!
//! [`StateIndex`] is the validated in-memory form. It is decoded from the compact
//! wire shape in [`wire`] (validation refuses any path that is not relative and
//! normalised, duplicates, and counts that do not add up), materialises one
//! transaction's [`Layout`] on demand, and is rebuilt from layouts by
//! [`StateIndex::build`] whenever the set of transactions changes. The file framing
//! (header, checksum, atomic replacement, fallback to `.prev`) is in [`mod@file`].

pub mod file;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::attrs::{AttrSet, Xattr};
use crate::hash::Hash128;
use crate::layout::{
    check_name, path_order, EntryData, Layout, LayoutEntry, PathShape, TopMeta, MAX_DEPTH, S_IFDIR, S_IFLNK, S_IFMT,
    S_IFREG,
};
use wire::{
    AttrsWire, Bytes, EntriesWire, ExtensionWire, PathsWire, PayloadWire, TopWire, TxExtWire, TxWire, TX_ATTRS_RECORDED,
};

/// Longest symlink target accepted (PATH_MAX).
const MAX_TARGET: usize = 4095;

/// Why a decoded payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    Path { index: usize, why: String },
    Entry { index: usize, why: String },
    Transaction { id: u64, why: String },
    Counts(String),
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Path { index, why } => write!(f, "path #{index}: {why}"),
            IndexError::Entry { index, why } => write!(f, "entry #{index}: {why}"),
            IndexError::Transaction { id, why } => write!(f, "transaction {id}: {why}"),
            IndexError::Counts(why) => write!(f, "inconsistent tables: {why}"),
        }
    }
}

impl std::error::Error for IndexError {}

/// Metadata of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxMeta {
    pub id: u64,
    pub created: i64,
    pub summary: String,
    pub parent: Option<u64>,
    pub kernels: Vec<String>,
}

#[derive(Clone, Debug)]
struct TxRecord {
    meta: TxMeta,
    runs: Vec<u32>,
    entries: usize,
    /// Its layout's attributes were recorded ([`Layout::attrs_recorded`]).
    attrs_recorded: bool,
    top: Option<TopMeta>,
}

/// The decoded, validated state index.
#[derive(Clone, Debug, Default)]
pub struct StateIndex {
    next_id: u64,
    depth: Vec<u8>,
    name_end: Vec<u32>,
    names: Vec<u8>,
    ent_path: Vec<u32>,
    ent_mode: Vec<u32>,
    ent_uid: Vec<u32>,
    ent_gid: Vec<u32>,
    /// Index into the file or symlink table, by the entry's type.
    ent_slot: Vec<u32>,
    file_size: Vec<u64>,
    file_hash: Vec<u8>,
    link_target: Vec<Bytes>,
    /// The entries with attributes, ascending, and their set (into `attr_sets`).
    attr_entries: Vec<(u32, u32)>,
    attr_sets: Vec<Arc<AttrSet>>,
    txs: Vec<TxRecord>,
}

const NO_PARENT: u32 = u32::MAX;

impl StateIndex {
    /// An index with no transactions.
    pub fn empty() -> Self {
        StateIndex { next_id: 1, ..Default::default() }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Metadata of every transaction, oldest first.
    pub fn transactions(&self) -> impl Iterator<Item = &TxMeta> {
        self.txs.iter().map(|t| &t.meta)
    }

    pub fn get(&self, id: u64) -> Option<&TxMeta> {
        self.txs.iter().find(|t| t.meta.id == id).map(|t| &t.meta)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    fn name(&self, p: usize) -> &[u8] {
        let start = if p == 0 { 0 } else { self.name_end[p - 1] as usize };
        &self.names[start..self.name_end[p] as usize]
    }

    fn entry_ids(runs: &[u32]) -> impl Iterator<Item = usize> + '_ {
        let mut pos = 0usize;
        runs.chunks_exact(2).flat_map(move |c| {
            let start = pos + c[0] as usize;
            pos = start + c[1] as usize;
            start..pos
        })
    }

    /// Materialises transaction `id`'s layout, or `None` if it is not in the index.
    ///
    /// One thread: building slices of it on several was measured no faster
    /// (the time goes to faulting in fresh pages for a quarter of a million
    /// paths, which threads contend for).
    pub fn layout(&self, id: u64) -> Option<Layout> {
        let tx = self.txs.iter().find(|t| t.meta.id == id)?;
        let mut out = Vec::with_capacity(tx.entries);
        // Each entry's depth and where its name starts come free here, and
        // every walk needs them.
        let mut shapes = Vec::with_capacity(tx.entries);
        // Full path of the directories enclosing the current entry, and where
        // each ends, by depth.
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let mut ends: Vec<usize> = Vec::with_capacity(32);
        // Entry ids ascend, so the entries with attributes are met in order.
        let mut attr_at = 0usize;
        for e in Self::entry_ids(&tx.runs) {
            let p = self.ent_path[e] as usize;
            let d = self.depth[p] as usize;
            ends.truncate(d);
            buf.truncate(ends.last().copied().unwrap_or(0));
            if d > 0 {
                buf.push(b'/');
            }
            let name_at = buf.len();
            buf.extend_from_slice(self.name(p));
            let mode = self.ent_mode[e];
            let slot = self.ent_slot[e] as usize;
            let data = match mode & S_IFMT {
                S_IFDIR => {
                    ends.push(buf.len());
                    EntryData::Dir
                }
                S_IFREG => {
                    let h: [u8; 16] = self.file_hash[slot * 16..slot * 16 + 16].try_into().unwrap_or([0; 16]);
                    EntryData::File { hash: Hash128::from_be_bytes(h), size: self.file_size[slot] }
                }
                _ => EntryData::Symlink { target: self.link_target[slot].0.clone().into() },
            };
            while self.attr_entries.get(attr_at).is_some_and(|&(ae, _)| (ae as usize) < e) {
                attr_at += 1;
            }
            let attrs = match self.attr_entries.get(attr_at) {
                Some(&(ae, set)) if ae as usize == e => self.attr_sets.get(set as usize).cloned(),
                _ => None,
            };
            out.push(LayoutEntry {
                path: buf.as_slice().into(),
                perm: mode & 0o7777,
                uid: self.ent_uid[e],
                gid: self.ent_gid[e],
                data,
                attrs,
            });
            shapes.push(PathShape { name_at: name_at as u32, depth: d as u16 });
        }
        // Decoding checked names, order, uniqueness and parents of every transaction.
        Some(Layout::from_trusted(out, shapes, tx.attrs_recorded, tx.top.clone()))
    }

    /// Every content hash any transaction references.
    pub fn referenced_hashes(&self) -> std::collections::HashSet<Hash128> {
        self.file_hash.chunks_exact(16).map(|c| Hash128::from_be_bytes(c.try_into().unwrap_or([0; 16]))).collect()
    }

    /// Every blob the store must hold for the retained transactions: (hash, size),
    /// sorted by hash, without empty files (those are never stored).
    pub fn referenced_blobs(&self) -> Vec<(Hash128, u64)> {
        let mut out: Vec<(Hash128, u64)> = self
            .file_hash
            .chunks_exact(16)
            .zip(&self.file_size)
            .filter(|(_, &size)| size > 0)
            .map(|(c, &size)| (Hash128::from_be_bytes(c.try_into().unwrap_or([0; 16])), size))
            .collect();
        out.sort_unstable();
        out.dedup_by_key(|b| b.0);
        out
    }

    /// Decodes and validates a wire payload.
    pub fn from_wire(w: PayloadWire) -> Result<Self, IndexError> {
        let PayloadWire { next_id, paths, entries, transactions, ext } = w;
        let PathsWire { depth, name_len, names } = paths;
        let depth = depth.0;
        let names = names.0;
        let n = depth.len();
        if name_len.len() != n {
            return Err(IndexError::Counts(format!("{} depths but {} names", n, name_len.len())));
        }
        if n >= NO_PARENT as usize {
            return Err(IndexError::Counts("too many paths".into()));
        }
        let mut name_end = Vec::with_capacity(n);
        let mut parent = Vec::with_capacity(n);
        // Last path seen at each depth among the current ancestors' children.
        let mut stack: Vec<usize> = Vec::with_capacity(32);
        let mut off = 0usize;
        for i in 0..n {
            let bad = |why: String| IndexError::Path { index: i, why };
            let len = name_len[i] as usize;
            let end = off.checked_add(len).filter(|&e| e <= names.len());
            let Some(end) = end else {
                return Err(bad("name runs past the name table".into()));
            };
            let name = &names[off..end];
            check_name(name).map_err(|e| bad(e.to_string()))?;
            let d = depth[i] as usize;
            if d > MAX_DEPTH || d > stack.len() {
                return Err(bad(format!("depth {d} skips a level")));
            }
            if d < stack.len() {
                // A sibling of stack[d]: names must strictly increase.
                let prev = stack[d];
                let ps = if prev == 0 { 0 } else { name_end[prev - 1] as usize };
                let prev_name = &names[ps..name_end[prev] as usize];
                if path_order(prev_name, name) != std::cmp::Ordering::Less {
                    return Err(bad("duplicate or out-of-order name".into()));
                }
                stack.truncate(d);
            }
            parent.push(if d == 0 { NO_PARENT } else { stack[d - 1] as u32 });
            stack.push(i);
            name_end.push(end as u32);
            off = end;
        }
        if off != names.len() {
            return Err(IndexError::Counts("unused bytes in the name table".into()));
        }

        let EntriesWire { path_delta, mode, uid, gid, file_size, file_hash, link_target } = entries;
        let m = path_delta.len();
        if mode.len() != m || uid.len() != m || gid.len() != m {
            return Err(IndexError::Counts("entry columns differ in length".into()));
        }
        let mut ent_path = Vec::with_capacity(m);
        let mut ent_slot = Vec::with_capacity(m);
        let (mut files, mut links) = (0u32, 0u32);
        let mut p = 0u64;
        for i in 0..m {
            let bad = |why: String| IndexError::Entry { index: i, why };
            p += path_delta[i] as u64;
            if p >= n as u64 {
                return Err(bad("path id out of range".into()));
            }
            ent_path.push(p as u32);
            if mode[i] & !(S_IFMT | 0o7777) != 0 {
                return Err(bad(format!("mode {:o} invalid", mode[i])));
            }
            match mode[i] & S_IFMT {
                S_IFDIR => ent_slot.push(0),
                S_IFREG => {
                    ent_slot.push(files);
                    files += 1;
                }
                S_IFLNK => {
                    ent_slot.push(links);
                    links += 1;
                }
                t => return Err(bad(format!("unsupported file type {t:o}"))),
            }
        }
        if file_size.len() != files as usize || file_hash.0.len() != files as usize * 16 {
            return Err(IndexError::Counts(format!(
                "{files} files but {} sizes and {} hash bytes",
                file_size.len(),
                file_hash.0.len()
            )));
        }
        if link_target.len() != links as usize {
            return Err(IndexError::Counts(format!("{links} symlinks but {} targets", link_target.len())));
        }
        for (i, t) in link_target.iter().enumerate() {
            if t.0.is_empty() || t.0.len() > MAX_TARGET || t.0.contains(&0) {
                return Err(IndexError::Counts(format!("symlink target #{i} invalid")));
            }
        }

        // The shape of the list first, in order; then every entry of every
        // transaction — most of the time a load takes — on all cores.
        let mut last_id: Option<u64> = None;
        for t in &transactions {
            let bad = |why: &str| IndexError::Transaction { id: t.id, why: why.into() };
            if t.id >= next_id {
                return Err(bad("id not below next_id"));
            }
            if last_id.is_some_and(|l| l >= t.id) {
                return Err(bad("ids not strictly increasing"));
            }
            if t.runs.len() % 2 != 0 {
                return Err(bad("odd run list"));
            }
            last_id = Some(t.id);
        }
        let ExtensionWire { attrs, tx: tx_ext } = ext;
        if !tx_ext.is_empty() && tx_ext.len() != transactions.len() {
            return Err(IndexError::Counts(format!(
                "{} transactions but {} transaction flags",
                transactions.len(),
                tx_ext.len()
            )));
        }
        let (attr_entries, attr_sets) = decode_attrs(attrs, m)?;
        let cols = RunColumns { ent_path: &ent_path, depth: &depth, parent: &parent, mode: &mode };
        let counts = cols.check_all(&transactions);
        let mut txs: Vec<TxRecord> = Vec::with_capacity(transactions.len());
        for (i, (t, count)) in transactions.into_iter().zip(counts).enumerate() {
            let count = count.map_err(|why| IndexError::Transaction { id: t.id, why: why.into() })?;
            let TxWire { id, created, summary, parent, kernels, runs } = t;
            let attrs_recorded = tx_ext.get(i).is_some_and(|x| x.flags & TX_ATTRS_RECORDED != 0);
            let top = match tx_ext.get(i).and_then(|x| x.top) {
                None => None,
                Some(t) => {
                    let bad = |why: &str| IndexError::Transaction { id, why: why.into() };
                    if t.perm & !0o7777 != 0 {
                        return Err(bad("top directory mode invalid"));
                    }
                    let attrs = match t.attrs {
                        0 => None,
                        n => Some(
                            attr_sets
                                .get(n as usize - 1)
                                .cloned()
                                .ok_or_else(|| bad("top directory attribute set out of range"))?,
                        ),
                    };
                    Some(TopMeta { perm: t.perm, uid: t.uid, gid: t.gid, attrs })
                }
            };
            txs.push(TxRecord {
                meta: TxMeta { id, created, summary, parent, kernels },
                runs,
                entries: count,
                attrs_recorded,
                top,
            });
        }
        Ok(StateIndex {
            next_id,
            depth,
            name_end,
            names,
            ent_path,
            ent_mode: mode,
            ent_uid: uid,
            ent_gid: gid,
            ent_slot,
            file_size,
            file_hash: file_hash.0,
            link_target,
            attr_entries,
            attr_sets,
            txs,
        })
    }

    /// Builds an index holding exactly `txs` (metadata and layout each), sharing
    /// paths and entries between them.
    pub fn build(next_id: u64, txs: &[(TxMeta, &Layout)]) -> PayloadWire {
        // Distinct paths, in depth-first order: every layout is already in that
        // order, so the union is a merge, and each entry finds its path's id
        // with a forward cursor — no hashing of a quarter of a million paths
        // per transaction.
        let mut paths: Vec<&[u8]> = Vec::new();
        for (_, l) in txs {
            paths = merge_sorted(&paths, l.entries().iter().map(|e| &e.path[..]));
        }

        // Distinct entries; first-seen order breaks ties between entries of one path.
        #[derive(Hash, PartialEq, Eq)]
        struct Key<'a> {
            path: u32,
            mode: u32,
            uid: u32,
            gid: u32,
            data: &'a EntryData,
            attrs: Option<&'a AttrSet>,
        }
        let mut ids: HashMap<Key, u32, crate::fasthash::FastBuild> =
            HashMap::with_capacity_and_hasher(paths.len() + paths.len() / 4, Default::default());
        let mut uniq: Vec<(u32, u32, &LayoutEntry)> = Vec::new(); // (path, seq, entry)
        let mut tx_seq: Vec<Vec<u32>> = Vec::with_capacity(txs.len());
        for (_, l) in txs {
            let mut mine = Vec::with_capacity(l.len());
            let mut cursor = 0usize;
            for e in l.entries() {
                while paths[cursor] != &e.path[..] {
                    cursor += 1;
                }
                let pid = cursor as u32;
                let key = Key {
                    path: pid,
                    mode: e.perm | e.data.type_bits(),
                    uid: e.uid,
                    gid: e.gid,
                    data: &e.data,
                    attrs: e.attrs.as_deref(),
                };
                let next = uniq.len() as u32;
                let seq = *ids.entry(key).or_insert_with(|| {
                    uniq.push((pid, next, e));
                    next
                });
                mine.push(seq);
            }
            tx_seq.push(mine);
        }
        let mut order: Vec<u32> = (0..uniq.len() as u32).collect();
        order.sort_unstable_by_key(|&s| (uniq[s as usize].0, s));
        let mut rank = vec![0u32; uniq.len()];
        for (r, &s) in order.iter().enumerate() {
            rank[s as usize] = r as u32;
        }

        let mut pw = PathsWire::default();
        for p in &paths {
            let depth = p.iter().filter(|&&b| b == b'/').count();
            let name = match p.iter().rposition(|&b| b == b'/') {
                Some(i) => &p[i + 1..],
                None => p,
            };
            pw.depth.0.push(depth as u8);
            pw.name_len.push(name.len() as u32);
            pw.names.0.extend_from_slice(name);
        }

        let mut ew = EntriesWire::default();
        let mut aw = AttrsBuilder::default();
        let mut prev_path = 0u32;
        for (rank, &s) in order.iter().enumerate() {
            let (pid, _, e) = uniq[s as usize];
            if let Some(a) = e.attrs.as_deref() {
                aw.add(rank as u32, a);
            }
            ew.path_delta.push(pid - prev_path);
            prev_path = pid;
            ew.mode.push(e.perm | e.data.type_bits());
            ew.uid.push(e.uid);
            ew.gid.push(e.gid);
            match &e.data {
                EntryData::Dir => {}
                EntryData::File { hash, size } => {
                    ew.file_size.push(*size);
                    ew.file_hash.0.extend_from_slice(&hash.to_be_bytes());
                }
                EntryData::Symlink { target } => ew.link_target.push(Bytes(target.to_vec())),
            }
        }

        let mut transactions = Vec::with_capacity(txs.len());
        let mut tx_ext = Vec::with_capacity(txs.len());
        for ((meta, layout), seqs) in txs.iter().zip(tx_seq) {
            let mut ranks: Vec<u32> = seqs.iter().map(|&s| rank[s as usize]).collect();
            ranks.sort_unstable();
            let mut runs = Vec::new();
            let mut pos = 0u32;
            let mut i = 0;
            while i < ranks.len() {
                let start = ranks[i];
                let mut end = start + 1;
                i += 1;
                while i < ranks.len() && ranks[i] == end {
                    end += 1;
                    i += 1;
                }
                runs.push(start - pos);
                runs.push(end - start);
                pos = end;
            }
            transactions.push(TxWire {
                id: meta.id,
                created: meta.created,
                summary: meta.summary.clone(),
                parent: meta.parent,
                kernels: meta.kernels.clone(),
                runs,
            });
            let top = layout.top().map(|t| TopWire {
                perm: t.perm,
                uid: t.uid,
                gid: t.gid,
                attrs: t.attrs.as_deref().map_or(0, |a| aw.set_id(a) + 1),
            });
            tx_ext.push(TxExtWire { flags: if layout.attrs_recorded() { TX_ATTRS_RECORDED } else { 0 }, top });
        }
        let mut by_id: Vec<(TxWire, TxExtWire)> = transactions.into_iter().zip(tx_ext).collect();
        by_id.sort_by_key(|(t, _)| t.id);
        let (transactions, tx) = by_id.into_iter().unzip();
        let ext = ExtensionWire { attrs: aw.wire, tx };
        PayloadWire { next_id, paths: pw, entries: ew, transactions, ext }
    }

    /// Rebuilds this index with `add` added and the transactions in `drop` removed.
    pub fn rebuilt(&self, add: Option<(TxMeta, &Layout)>, drop: &[u64]) -> Result<PayloadWire, IndexError> {
        self.rebuilt_with(add.into_iter().collect(), drop)
    }

    /// [`StateIndex::rebuilt`] with any number of transactions added (an id the
    /// index has already is replaced).
    pub fn rebuilt_with(&self, add: Vec<(TxMeta, &Layout)>, drop: &[u64]) -> Result<PayloadWire, IndexError> {
        let mut owned: Vec<(TxMeta, Layout)> = Vec::new();
        for t in &self.txs {
            if drop.contains(&t.meta.id) || add.iter().any(|(m, _)| m.id == t.meta.id) {
                continue;
            }
            let l = self
                .layout(t.meta.id)
                .ok_or_else(|| IndexError::Transaction { id: t.meta.id, why: "layout does not materialise".into() })?;
            owned.push((t.meta.clone(), l));
        }
        let mut refs: Vec<(TxMeta, &Layout)> = owned.iter().map(|(m, l)| (m.clone(), l)).collect();
        let mut next = self.next_id;
        for (m, l) in add {
            next = next.max(m.id + 1);
            refs.push((m, l));
        }
        Ok(Self::build(next, &refs))
    }

    /// Raises `next_id` (after an id was handed out without being committed).
    pub fn with_next_id(mut self, next: u64) -> Self {
        self.next_id = self.next_id.max(next);
        self
    }
}

/// The union of two path lists in depth-first order (`a` without duplicates,
/// `b` sorted), without duplicates.
fn merge_sorted<'a>(a: &[&'a [u8]], b: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    let mut out: Vec<&[u8]> = Vec::with_capacity(a.len() + a.len() / 8 + 16);
    let mut i = 0;
    for p in b {
        while i < a.len() && path_order(a[i], p) == std::cmp::Ordering::Less {
            out.push(a[i]);
            i += 1;
        }
        if i < a.len() && a[i] == p {
            i += 1;
        }
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out.extend_from_slice(&a[i..]);
    out
}

/// Collects the attribute tables of [`AttrsWire`] as entries are written.
#[derive(Default)]
struct AttrsBuilder<'a> {
    wire: AttrsWire,
    names: HashMap<&'a [u8], u32>,
    items: HashMap<&'a Xattr, u32>,
    sets: HashMap<&'a AttrSet, u32>,
    last_entry: u32,
}

impl<'a> AttrsBuilder<'a> {
    /// Entry `entry` (in ascending order) has `set`.
    fn add(&mut self, entry: u32, set: &'a AttrSet) {
        let id = self.set_id(set);
        let first = self.wire.entry_delta.is_empty();
        self.wire.entry_delta.push(if first { entry } else { entry - self.last_entry });
        self.wire.entry_set.push(id);
        self.last_entry = entry;
    }

    /// The id of `set` in the table, added if new.
    fn set_id(&mut self, set: &'a AttrSet) -> u32 {
        let next = self.sets.len() as u32;
        let id = *self.sets.entry(set).or_insert(next);
        if id == next {
            self.wire.set_len.push(set.items().len() as u32);
            for x in set.items() {
                let next_item = self.items.len() as u32;
                let item = *self.items.entry(x).or_insert(next_item);
                if item == next_item {
                    let next_name = self.names.len() as u32;
                    let name = *self.names.entry(&x.name).or_insert(next_name);
                    if name == next_name {
                        self.wire.names.push(Bytes(x.name.to_vec()));
                    }
                    self.wire.item_name.push(name);
                    self.wire.item_value.push(Bytes(x.value.to_vec()));
                }
                self.wire.set_items.push(item);
            }
        }
        id
    }
}

/// Decodes and checks the attribute tables against `entries` entries: every
/// name one a transaction keeps, every id in range, entries ascending.
#[allow(clippy::type_complexity)]
fn decode_attrs(w: AttrsWire, entries: usize) -> Result<(Vec<(u32, u32)>, Vec<Arc<AttrSet>>), IndexError> {
    let AttrsWire { names, item_name, item_value, set_len, set_items, entry_delta, entry_set } = w;
    let bad = |why: String| IndexError::Counts(format!("attributes: {why}"));
    if item_name.len() != item_value.len() {
        return Err(bad(format!("{} names but {} values", item_name.len(), item_value.len())));
    }
    if entry_delta.len() != entry_set.len() || entry_delta.len() > entries {
        return Err(bad("entry columns differ in length".into()));
    }
    let mut items = Vec::with_capacity(item_name.len());
    for (n, v) in item_name.iter().zip(item_value) {
        let name = names.get(*n as usize).ok_or_else(|| bad(format!("name #{n} out of range")))?;
        items.push(Xattr { name: name.0.clone().into(), value: v.0.into() });
    }
    let mut sets = Vec::with_capacity(set_len.len());
    let mut at = 0usize;
    for (i, &len) in set_len.iter().enumerate() {
        let end = at.checked_add(len as usize).filter(|&e| e <= set_items.len() && len > 0);
        let Some(end) = end else {
            return Err(bad(format!("set #{i} runs past the table")));
        };
        let mut v = Vec::with_capacity(len as usize);
        for &it in &set_items[at..end] {
            v.push(
                items
                    .get(it as usize)
                    .cloned()
                    .ok_or_else(|| bad(format!("set #{i}: attribute #{it} out of range")))?,
            );
        }
        let set = AttrSet::new(v).map_err(|e| bad(format!("set #{i}: {e}")))?;
        sets.push(set.ok_or_else(|| bad(format!("set #{i} is empty")))?);
        at = end;
    }
    if at != set_items.len() {
        return Err(bad("unused attribute ids".into()));
    }
    let mut out = Vec::with_capacity(entry_delta.len());
    let mut e = 0u64;
    for (i, (&d, &s)) in entry_delta.iter().zip(&entry_set).enumerate() {
        if i > 0 && d == 0 {
            return Err(bad("two sets for one entry".into()));
        }
        e += d as u64;
        if e >= entries as u64 {
            return Err(bad(format!("entry #{e} out of range")));
        }
        if s as usize >= sets.len() {
            return Err(bad(format!("set #{s} out of range")));
        }
        out.push((e as u32, s));
    }
    Ok((out, sets))
}

/// The entry columns a transaction's runs are checked against.
struct RunColumns<'a> {
    ent_path: &'a [u32],
    depth: &'a [u8],
    parent: &'a [u32],
    mode: &'a [u32],
}

impl RunColumns<'_> {
    /// Checks one transaction's runs: in range, one entry per path in path order,
    /// every entry's parent directory in the transaction. Returns its entry count.
    fn check(&self, runs: &[u32]) -> Result<usize, &'static str> {
        let m = self.ent_path.len() as u64;
        let mut pos = 0u64;
        let mut last_path: Option<u32> = None;
        let mut count = 0usize;
        // Directories of this transaction enclosing the current entry, by depth.
        let mut dirs: Vec<u32> = Vec::with_capacity(32);
        for c in runs.chunks_exact(2) {
            let start = pos + c[0] as u64;
            let end = start + c[1] as u64;
            if end > m || c[1] == 0 {
                return Err("entry run out of range");
            }
            for e in start..end {
                let pp = self.ent_path[e as usize];
                if last_path.is_some_and(|l| l >= pp) {
                    return Err("two entries for one path");
                }
                last_path = Some(pp);
                let d = self.depth[pp as usize] as usize;
                dirs.truncate(d);
                if d > 0 && (dirs.len() != d || dirs[d - 1] != self.parent[pp as usize]) {
                    return Err("an entry's parent directory is not in it");
                }
                if self.mode[e as usize] & S_IFMT == S_IFDIR {
                    dirs.push(pp);
                }
            }
            count += c[1] as usize;
            pos = end;
        }
        Ok(count)
    }

    /// [`check`](Self::check) of every transaction, in their order; on two
    /// threads when there is enough to do (ten transactions of 250,000 entries
    /// take ~16 ms on one core here).
    fn check_all(&self, txs: &[TxWire]) -> Vec<Result<usize, &'static str>> {
        let work: usize = txs.iter().map(|t| t.runs.len()).sum::<usize>() + self.ent_path.len();
        if txs.len() < 2 || work < 100_000 {
            return txs.iter().map(|t| self.check(&t.runs)).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let worker = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(t) = txs.get(i) else { break };
                done.push((i, self.check(&t.runs)));
            }
            done
        };
        let mut all = std::thread::scope(|s| {
            let helper = s.spawn(worker);
            let mut mine = worker();
            // A helper that died leaves its transactions unchecked: check them here.
            mine.extend(helper.join().unwrap_or_default());
            mine
        });
        all.sort_unstable_by_key(|r| r.0);
        let mut all = all.into_iter().peekable();
        txs.iter()
            .enumerate()
            .map(|(i, t)| match all.next_if(|r| r.0 == i) {
                Some((_, r)) => r,
                None => self.check(&t.runs),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::{dir, file, link};

    fn meta(id: u64) -> TxMeta {
        TxMeta { id, created: 1_700_000_000 + id as i64, summary: format!("tx {id}"), parent: None, kernels: vec![] }
    }

    fn sample(v: u8) -> Layout {
        Layout::new(vec![
            dir("bin"),
            file("bin/sh", &[b's', v]),
            link("bin/bash", "sh"),
            dir("lib"),
            file("lib/libc.so.6", b"libc"),
            dir("lib-extra"),
            file(&format!("lib/v{v}"), b""),
        ])
        .unwrap()
    }

    #[test]
    fn round_trip_shares_entries() {
        let (a, b) = (sample(1), sample(2));
        let w = StateIndex::build(3, &[(meta(1), &a), (meta(2), &b)]);
        // Shared: bin, bin/bash, lib, lib/libc.so.6, lib-extra; distinct: bin/sh x2, lib/v1, lib/v2.
        assert_eq!(w.entries.mode.len(), 9);
        let idx = StateIndex::from_wire(w).unwrap();
        assert_eq!(idx.layout(1).unwrap(), a);
        assert_eq!(idx.layout(2).unwrap(), b);
        assert!(idx.layout(3).is_none());
    }

    #[test]
    fn rebuilt_drops_and_adds() {
        let (a, b) = (sample(1), sample(2));
        let idx = StateIndex::from_wire(StateIndex::build(3, &[(meta(1), &a), (meta(2), &b)])).unwrap();
        let c = sample(3);
        let w = idx.rebuilt(Some((meta(3), &c)), &[1]).unwrap();
        let idx = StateIndex::from_wire(w).unwrap();
        assert_eq!(idx.transactions().map(|t| t.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(idx.next_id(), 4);
        assert_eq!(idx.layout(3).unwrap(), c);
        assert!(idx.referenced_hashes().contains(&Hash128::of(b"s\x03")));
        assert!(!idx.referenced_hashes().contains(&Hash128::of(b"s\x01")));
    }

    #[test]
    fn big_indexes_are_checked_on_two_threads_with_the_same_verdicts() {
        // Enough entries for the parallel path: 4 transactions of ~30,000 files.
        let big = |v: u8| {
            let mut es = vec![dir("d")];
            for i in 0..30_000u32 {
                es.push(file(&format!("d/f{i:05}"), &[v, (i % 7) as u8]));
            }
            Layout::new(es).unwrap()
        };
        let ls: Vec<Layout> = (1..=4).map(big).collect();
        let txs: Vec<(TxMeta, &Layout)> = ls.iter().enumerate().map(|(i, l)| (meta(i as u64 + 1), l)).collect();
        let idx = StateIndex::from_wire(StateIndex::build(5, &txs)).unwrap();
        for (i, l) in ls.iter().enumerate() {
            assert_eq!(&idx.layout(i as u64 + 1).unwrap(), l);
        }
        // Damage the third transaction's runs and the fourth's: the third is named.
        let mut w = StateIndex::build(5, &txs);
        w.transactions[2].runs.extend([0, 1]);
        w.transactions[3].runs = vec![0, u32::MAX];
        match StateIndex::from_wire(w) {
            Err(IndexError::Transaction { id: 3, .. }) => {}
            other => panic!("expected transaction 3 refused, got {other:?}"),
        }
    }

    fn wire() -> PayloadWire {
        StateIndex::build(2, &[(meta(1), &sample(1))])
    }

    #[test]
    fn hostile_payloads_refused() {
        let mut w = wire();
        w.paths.names.0[0] = b'/';
        assert!(StateIndex::from_wire(w).is_err());

        let mut w = wire();
        // Make the first name "..".
        let n0 = w.paths.name_len[0] as usize;
        w.paths.names.0.splice(0..n0, b"..".iter().copied());
        w.paths.name_len[0] = 2;
        assert!(StateIndex::from_wire(w).is_err());

        let mut w = wire();
        w.paths.depth.0[0] = 1;
        assert!(StateIndex::from_wire(w).is_err(), "depth skips a level");

        let mut w = wire();
        w.paths.name_len[0] = u32::MAX;
        assert!(StateIndex::from_wire(w).is_err(), "name past table");

        let mut w = wire();
        w.entries.path_delta[1] = 1_000_000;
        assert!(StateIndex::from_wire(w).is_err(), "path id out of range");

        let mut w = wire();
        w.transactions[0].runs = vec![0, u32::MAX];
        assert!(StateIndex::from_wire(w).is_err(), "huge run");

        let mut w = wire();
        w.entries.file_hash.0.pop();
        assert!(StateIndex::from_wire(w).is_err(), "hash count");

        let mut w = wire();
        w.entries.mode[0] = 0o020644; // character device
        assert!(StateIndex::from_wire(w).is_err(), "device");

        let mut w = wire();
        // Duplicate a path: two depth-0 paths with the same name.
        let first = w.paths.name_len[0] as usize;
        let name = w.paths.names.0[..first].to_vec();
        w.paths.depth.0.insert(0, 0);
        w.paths.name_len.insert(0, first as u32);
        let mut names = name.clone();
        names.extend_from_slice(&w.paths.names.0);
        w.paths.names.0 = names;
        assert!(StateIndex::from_wire(w).is_err(), "duplicate path");

        let mut w = wire();
        w.transactions[0].id = 7;
        assert!(StateIndex::from_wire(w).is_err(), "id >= next_id");
    }

    #[test]
    fn missing_parent_refused() {
        let mut w = wire();
        // Drop the "bin" directory entry (entry 0) from the transaction.
        w.transactions[0].runs = vec![1, (w.entries.mode.len() - 1) as u32];
        assert!(StateIndex::from_wire(w).is_err());
    }
}
