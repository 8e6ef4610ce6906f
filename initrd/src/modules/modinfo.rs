//! A module's `.modinfo` section: the `key=value` strings modinfo(8) prints,
//! read from the ELF section table through the bounded reader. lifeboat asks it
//! for the firmware files a module declares.

use lifeboat_codec::Reader;

/// The values of `key` in the module's `.modinfo`, in order; empty when the file
/// is not an ELF64 LE object or has no such section.
pub fn values(elf: &[u8], key: &str) -> Vec<String> {
    section(elf, b".modinfo")
        .map(|s| {
            s.split(|&b| b == 0)
                .filter_map(|kv| std::str::from_utf8(kv).ok())
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn section<'a>(elf: &'a [u8], want: &[u8]) -> Option<&'a [u8]> {
    let mut r = Reader::new(elf);
    let ident = r.take(16, "e_ident").ok()?;
    if &ident[..4] != b"\x7fELF" || ident[4] != 2 || ident[5] != 1 {
        return None;
    }
    r.seek(0x28, "e_shoff").ok()?;
    let shoff = usize::try_from(r.u64_le("e_shoff").ok()?).ok()?;
    r.seek(0x3a, "e_shentsize").ok()?;
    let shentsize = r.u16_le("e_shentsize").ok()? as usize;
    let shnum = r.u16_le("e_shnum").ok()? as usize;
    let shstrndx = r.u16_le("e_shstrndx").ok()? as usize;
    if shentsize < 64 {
        return None;
    }
    // (name offset, file offset, size) of section i.
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let mut h = Reader::new(elf);
        h.seek(shoff.checked_add(i.checked_mul(shentsize)?)?, "section header").ok()?;
        let name = h.u32_le("sh_name").ok()? as usize;
        h.skip(20, "sh_type..sh_addr").ok()?;
        let off = usize::try_from(h.u64_le("sh_offset").ok()?).ok()?;
        let size = usize::try_from(h.u64_le("sh_size").ok()?).ok()?;
        Some((name, off, size))
    };
    let bytes = |off: usize, size: usize| elf.get(off..off.checked_add(size)?);
    let (_, stroff, strsize) = header(shstrndx)?;
    let strtab = bytes(stroff, strsize)?;
    (0..shnum).find_map(|i| {
        let (name, off, size) = header(i)?;
        let n = strtab.get(name..)?;
        let n = &n[..n.iter().position(|&b| b == 0)?];
        (n == want).then(|| bytes(off, size)).flatten()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_is_no_modinfo() {
        assert!(super::values(b"not elf", "firmware").is_empty());
        assert!(super::values(&[0x7f, b'E', b'L', b'F', 2, 1, 0, 0], "firmware").is_empty());
    }
}
