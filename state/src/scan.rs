//! Reading a source tree for `state commit`: walk it without following symlinks,
//! refuse what a transaction cannot hold, and hash every regular file (in parallel).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash128;
use crate::layout::{check_name, EntryData, Layout, LayoutEntry, MAX_DEPTH};
use lifeboat_fs::{self as fsutil, libc_mode::*};

/// A scanned tree: its layout, and the tree's descriptor to copy content from.
pub struct ScannedTree {
    pub root: PathBuf,
    pub root_fd: OwnedFd,
    pub layout: Layout,
}

struct PendingFile {
    index: usize,
    dev: u64,
    ino: u64,
}

fn kind_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        0o140000 => "a socket",
        0o020000 => "a character device",
        0o060000 => "a block device",
        0o010000 => "a FIFO",
        _ => "of an unknown file type",
    }
}

/// Walks `root` (the contents of a `/usr`).
pub fn scan(root: &Path) -> Result<ScannedTree> {
    let root_fd = fsutil::open_dir(root).ctx("open source tree", root)?;
    let mut entries: Vec<LayoutEntry> = Vec::new();
    let mut files: Vec<PendingFile> = Vec::new();
    let mut link_buf = Vec::new();
    // (directory fd, its relative path, depth)
    let mut stack: Vec<(OwnedFd, Vec<u8>, usize)> =
        vec![(fsutil::dup(root_fd.as_fd()).ctx("open", root)?, Vec::new(), 0)];
    while let Some((dfd, rel, depth)) = stack.pop() {
        let full = |name: &[u8]| {
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            p
        };
        let abs = |p: &[u8]| root.join(fsutil::os(p));
        let mut names = fsutil::list_dir(dfd.as_fd()).ctx("read directory", abs(&rel))?;
        names.sort();
        for name in names {
            let path = full(&name);
            check_name(&name).map_err(|e| Error::BadTree { path: abs(&path), why: e.to_string() })?;
            if depth > MAX_DEPTH {
                return Err(Error::BadTree { path: abs(&path), why: "nested too deeply".into() });
            }
            let st = fsutil::lstat_at(dfd.as_fd(), &name)
                .ctx("stat", abs(&path))?
                .ok_or_else(|| Error::BadTree { path: abs(&path), why: "vanished while scanning".into() })?;
            let mode = st.st_mode;
            let perm = mode & 0o7777;
            let (uid, gid) = (st.st_uid, st.st_gid);
            match mode & S_IFMT {
                S_IFDIR => {
                    let sub = fsutil::open_dir_at(dfd.as_fd(), &name).ctx("open directory", abs(&path))?;
                    entries.push(LayoutEntry { path: path.clone().into(), perm, uid, gid, data: EntryData::Dir });
                    stack.push((sub, path, depth + 1));
                }
                S_IFREG => {
                    files.push(PendingFile { index: entries.len(), dev: st.st_dev, ino: st.st_ino });
                    entries.push(LayoutEntry {
                        path: path.into(),
                        perm,
                        uid,
                        gid,
                        data: EntryData::File { hash: Hash128(0), size: st.st_size as u64 },
                    });
                }
                S_IFLNK => {
                    let t = fsutil::read_link_into(dfd.as_fd(), &name, &mut link_buf).ctx("read link", abs(&path))?;
                    if t.is_empty() || t.len() > 4095 {
                        return Err(Error::BadTree {
                            path: abs(&path),
                            why: "symlink target empty or too long".into(),
                        });
                    }
                    entries.push(LayoutEntry {
                        path: path.into(),
                        perm: 0o777,
                        uid,
                        gid,
                        data: EntryData::Symlink { target: t.into() },
                    });
                }
                _ => {
                    return Err(Error::BadTree {
                        path: abs(&path),
                        why: format!(
                            "is {}; a transaction holds only directories, regular files and symlinks",
                            kind_name(mode)
                        ),
                    })
                }
            }
        }
    }

    hash_files(root, root_fd.as_fd(), &mut entries, &files)?;

    let layout = Layout::new(entries)
        .map_err(|(why, p)| Error::Layout { path: root.join(fsutil::os(&p)).display().to_string(), why })?;
    Ok(ScannedTree { root: root.to_owned(), root_fd, layout })
}

/// Hashes the pending files with one worker per core; files sharing an inode are
/// read once.
fn hash_files(root: &Path, root_fd: BorrowedFd, entries: &mut [LayoutEntry], files: &[PendingFile]) -> Result<()> {
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    let mut unique: Vec<&PendingFile> = Vec::new();
    for f in files {
        if first.insert((f.dev, f.ino), f.index).is_none() {
            unique.push(f);
        }
    }
    let workers = crate::workers::count();
    let chunk = unique.len().div_ceil(workers).max(1);
    let ents: &[LayoutEntry] = entries;
    let results: Vec<Result<Vec<(usize, Hash128, u64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = unique
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> Result<Vec<(usize, Hash128, u64)>> {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut out = Vec::with_capacity(part.len());
                    for f in part {
                        let path = &ents[f.index].path;
                        let abs = root.join(fsutil::os(path));
                        let fd = fsutil::open_beneath(root_fd, path, OFlag::O_RDONLY).map_err(|e| {
                            if e.kind() == std::io::ErrorKind::PermissionDenied {
                                Error::BadTree { path: abs.clone(), why: "is not readable".into() }
                            } else {
                                Error::io("open", abs.clone(), e)
                            }
                        })?;
                        let file = File::from(fd);
                        let (h, n) = Hash128::of_reader(&file, &mut buf).ctx("read", abs)?;
                        out.push((f.index, h, n));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(Error::WorkerLost { job: "hash" }))).collect()
    });
    let mut by_inode: HashMap<usize, (Hash128, u64)> = HashMap::new();
    for r in results {
        for (i, h, n) in r? {
            by_inode.insert(i, (h, n));
        }
    }
    for f in files {
        let src = first[&(f.dev, f.ino)];
        let (h, n) = by_inode[&src];
        entries[f.index].data = EntryData::File { hash: h, size: n };
    }
    Ok(())
}
