//! The one ELF reader of the init check: a 64-bit little-endian ELF file's program
//! headers, its `PT_INTERP` (the dynamic loader) and, from `PT_DYNAMIC`, the
//! libraries it needs and its run paths. Every field goes through the bounded
//! reader, so a truncated or hostile file is "not an ELF file we understand",
//! never a panic.

use lifeboat_codec::{Reader, Short};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
/// Dynamic sections longer than this are not believed.
const MAX_DYNAMIC: u64 = 1 << 20;

#[derive(Clone, Copy, Debug)]
struct ProgramHeader {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// An ELF64 LE file's program headers over its bytes.
pub struct Elf<'a> {
    data: &'a [u8],
    phdrs: Vec<ProgramHeader>,
}

impl<'a> Elf<'a> {
    /// `None` unless `data` starts with an ELF64 little-endian header whose
    /// program headers are all inside `data`.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        Self::read(data).ok().flatten()
    }

    fn read(data: &'a [u8]) -> Result<Option<Self>, Short> {
        let mut r = Reader::new(data);
        let ident = r.take(16, "e_ident")?;
        if &ident[..4] != b"\x7fELF" || ident[4] != 2 || ident[5] != 1 {
            return Ok(None);
        }
        r.seek(0x20, "e_phoff")?;
        let phoff = r.u64_le("e_phoff")?;
        r.seek(0x36, "e_phentsize")?;
        let phentsize = r.u16_le("e_phentsize")? as usize;
        let phnum = r.u16_le("e_phnum")? as usize;
        if phentsize < 56 {
            return Ok(None);
        }
        let mut phdrs = Vec::with_capacity(phnum);
        for i in 0..phnum {
            let Some(at) = usize::try_from(phoff).ok().and_then(|o| o.checked_add(i * phentsize)) else {
                return Ok(None);
            };
            let mut p = Reader::new(data);
            p.seek(at, "program header")?;
            let kind = p.u32_le("p_type")?;
            p.skip(4, "p_flags")?;
            let offset = p.u64_le("p_offset")?;
            let vaddr = p.u64_le("p_vaddr")?;
            p.skip(8, "p_paddr")?;
            let filesz = p.u64_le("p_filesz")?;
            phdrs.push(ProgramHeader { kind, offset, vaddr, filesz });
        }
        Ok(Some(Elf { data, phdrs }))
    }

    /// The bytes `len` long at file offset `off`, if inside the file.
    fn bytes(&self, off: u64, len: u64) -> Option<&'a [u8]> {
        let off = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        self.data.get(off..off.checked_add(len)?)
    }

    /// The `PT_INTERP` path (the dynamic loader), if the file has one.
    pub fn interp(&self) -> Option<String> {
        let ph = self.phdrs.iter().find(|p| p.kind == PT_INTERP)?;
        let s = self.bytes(ph.offset, ph.filesz)?;
        let s = s.split(|&b| b == 0).next()?;
        std::str::from_utf8(s).ok().map(str::to_owned)
    }

    /// Whether the file has a `PT_INTERP` at all (read or not).
    pub fn has_interp(&self) -> bool {
        self.phdrs.iter().any(|p| p.kind == PT_INTERP)
    }

    /// The file offset of virtual address `va`, by the `PT_LOAD` segment holding it.
    fn file_offset(&self, va: u64) -> Option<u64> {
        self.phdrs
            .iter()
            .filter(|p| p.kind == PT_LOAD)
            .find(|p| va >= p.vaddr && va - p.vaddr < p.filesz)
            .and_then(|p| (va - p.vaddr).checked_add(p.offset))
    }

    /// The `DT_NEEDED` libraries and the `DT_RUNPATH`/`DT_RPATH` directories.
    pub fn needed(&self) -> Option<(Vec<String>, Vec<String>)> {
        let dynamic = self.phdrs.iter().find(|p| p.kind == PT_DYNAMIC)?;
        let table = self.bytes(dynamic.offset, dynamic.filesz.min(MAX_DYNAMIC))?;
        let mut r = Reader::new(table);
        let (mut strtab, mut needed, mut paths) = (None, Vec::new(), Vec::new());
        while let (Ok(tag), Ok(val)) = (r.u64_le("d_tag"), r.u64_le("d_val")) {
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed.push(val),
                DT_STRTAB => strtab = self.file_offset(val),
                DT_RPATH | DT_RUNPATH => paths.push(val),
                _ => {}
            }
        }
        let strtab = strtab?;
        let string = |o: u64| -> Option<String> {
            let bytes = self.data.get(usize::try_from(strtab.checked_add(o)?).ok()?..)?;
            let end = bytes.iter().position(|&b| b == 0)?;
            std::str::from_utf8(&bytes[..end]).ok().map(str::to_owned)
        };
        let needed = needed.into_iter().filter_map(string).collect();
        let runpath = paths
            .into_iter()
            .filter_map(string)
            .flat_map(|p| p.split(':').map(str::to_owned).collect::<Vec<_>>())
            .collect();
        Some((needed, runpath))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_binary_and_survives_every_truncation() {
        let data = std::fs::read("/bin/sh").unwrap();
        let elf = Elf::parse(&data).expect("/bin/sh is ELF64 LE");
        assert!(elf.interp().unwrap().contains("ld-linux"));
        let (needed, _) = elf.needed().unwrap();
        assert!(needed.iter().any(|n| n.starts_with("libc.so")), "{needed:?}");
        for cut in (0..data.len().min(8192)).step_by(7) {
            if let Some(e) = Elf::parse(&data[..cut]) {
                let _ = (e.interp(), e.needed());
            }
        }
        assert!(Elf::parse(b"#!/bin/sh\n").is_none());
    }
}
