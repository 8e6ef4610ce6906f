//! Firmware boot entries: `Boot####`, `BootOrder`, `BootNext`, `BootCurrent` and
//! `Timeout` in the EFI global namespace, read and changed through efivarfs.

use crate::efivars::{EfiVars, GLOBAL_GUID, NV_BS_RT};
use crate::loadopt::{u16_bytes, u16_list, LoadOption, ACTIVE};
use crate::{Error, Result};

/// One `Boot####` variable.
#[derive(Clone, Debug)]
pub struct BootVar {
    pub num: u16,
    /// The decoded option, or why it could not be decoded (shown, never fatal).
    pub option: std::result::Result<LoadOption, String>,
}

/// Everything `firmware list` shows.
#[derive(Clone, Debug, Default)]
pub struct Firmware {
    pub entries: Vec<BootVar>,
    pub order: Vec<u16>,
    pub current: Option<u16>,
    pub next: Option<u16>,
    pub timeout: Option<u16>,
}

pub fn boot_name(n: u16) -> String {
    format!("Boot{n:04X}")
}

fn parse_boot_name(s: &str) -> Option<u16> {
    let h = s.strip_prefix("Boot")?;
    (h.len() == 4 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u16::from_str_radix(h, 16).ok()).flatten()
}

fn one_u16(v: &EfiVars, name: &str) -> Result<Option<u16>> {
    Ok(v.read(name, GLOBAL_GUID)?.and_then(|(_, d)| u16_list(&d).first().copied()))
}

pub fn read(v: &EfiVars) -> Result<Firmware> {
    let mut entries = Vec::new();
    for name in v.list(GLOBAL_GUID)? {
        let Some(num) = parse_boot_name(&name) else {
            continue;
        };
        let Some((_, data)) = v.read(&name, GLOBAL_GUID)? else {
            continue;
        };
        entries.push(BootVar { num, option: LoadOption::decode(&data).map_err(|e| e.to_string()) });
    }
    entries.sort_by_key(|e| e.num);
    Ok(Firmware {
        entries,
        order: v.read("BootOrder", GLOBAL_GUID)?.map(|(_, d)| u16_list(&d)).unwrap_or_default(),
        current: one_u16(v, "BootCurrent")?,
        next: one_u16(v, "BootNext")?,
        timeout: one_u16(v, "Timeout")?,
    })
}

fn write_order(v: &EfiVars, order: &[u16]) -> Result<()> {
    v.write("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(order))
}

/// Adds (or updates) an entry for `opt`: an entry with the same partition GUID and
/// the same file path (compared case-insensitively, as FAT does) is reused, else the
/// lowest free number is taken. Returns the number and whether it was reused.
pub fn add(v: &EfiVars, opt: &LoadOption, first: bool) -> Result<(u16, bool)> {
    let fw = read(v)?;
    let same = |o: &LoadOption| {
        o.partition().map(|(g, _)| g.to_ascii_lowercase()) == opt.partition().map(|(g, _)| g.to_ascii_lowercase())
            && o.file().map(str::to_ascii_lowercase) == opt.file().map(str::to_ascii_lowercase)
    };
    let existing = fw.entries.iter().find(|e| e.option.as_ref().is_ok_and(same)).map(|e| e.num);
    let num = match existing {
        Some(n) => n,
        None => (0..=0xffffu16)
            .find(|n| !fw.entries.iter().any(|e| e.num == *n))
            .ok_or_else(|| Error::Invalid("all 65536 Boot#### numbers are in use".into()))?,
    };
    let mut o = opt.clone();
    o.attributes |= ACTIVE;
    let bytes = o.encode();
    let current = fw.entries.iter().find(|e| e.num == num).and_then(|e| e.option.as_ref().ok()).map(|c| c.encode());
    if current.as_deref() != Some(bytes.as_slice()) {
        v.write(&boot_name(num), GLOBAL_GUID, NV_BS_RT, &bytes)?;
    }
    let mut order = fw.order.clone();
    if first {
        order.retain(|&x| x != num);
        order.insert(0, num);
    } else if !order.contains(&num) {
        order.push(num);
    }
    if order != fw.order {
        write_order(v, &order)?;
    }
    Ok((num, existing.is_some()))
}

/// Deletes `Boot####` and drops it from `BootOrder` (and `BootNext`).
pub fn remove(v: &EfiVars, num: u16) -> Result<()> {
    let fw = read(v)?;
    if !fw.entries.iter().any(|e| e.num == num) {
        return Err(Error::Invalid(format!(
            "{} does not exist (`lifeboat firmware list` lists the entries)",
            boot_name(num)
        )));
    }
    if fw.order.contains(&num) {
        let order: Vec<u16> = fw.order.iter().copied().filter(|&x| x != num).collect();
        write_order(v, &order)?;
    }
    if fw.next == Some(num) {
        v.delete("BootNext", GLOBAL_GUID)?;
    }
    v.delete(&boot_name(num), GLOBAL_GUID)
}

/// Boots `num` once, on the next boot.
pub fn set_next(v: &EfiVars, num: u16) -> Result<()> {
    let fw = read(v)?;
    if !fw.entries.iter().any(|e| e.num == num) {
        return Err(Error::Invalid(format!(
            "{} does not exist (`lifeboat firmware list` lists the entries)",
            boot_name(num)
        )));
    }
    v.write("BootNext", GLOBAL_GUID, NV_BS_RT, &num.to_le_bytes())
}

/// Sets `BootOrder` exactly; every number must exist and appear once.
pub fn set_order(v: &EfiVars, order: &[u16]) -> Result<()> {
    let fw = read(v)?;
    for (i, n) in order.iter().enumerate() {
        if !fw.entries.iter().any(|e| e.num == *n) {
            return Err(Error::Invalid(format!(
                "{} does not exist (`lifeboat firmware list` lists the entries)",
                boot_name(*n)
            )));
        }
        if order[..i].contains(n) {
            return Err(Error::Invalid(format!("{} appears twice", boot_name(*n))));
        }
    }
    write_order(v, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadopt::Node;

    fn opt(guid: &str, file: &str, label: &str) -> LoadOption {
        LoadOption {
            attributes: ACTIVE,
            description: label.into(),
            path: vec![
                Node::HardDrive { number: 1, start: 2048, size: 4096, guid: guid.into() },
                Node::File(file.into()),
            ],
            optional: vec![],
        }
    }

    #[test]
    fn add_reuses_and_orders() {
        let d = std::env::temp_dir().join(format!("lb-fw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let v = EfiVars::open(&d).unwrap();
        let g = "11111111-2222-3333-4444-555555555555";
        v.write(
            "Boot0000",
            GLOBAL_GUID,
            NV_BS_RT,
            &opt(
                "99999999-2222-3333-4444-555555555555",
                "\\EFI\\Microsoft\\Boot\\bootmgfw.efi",
                "Windows Boot Manager",
            )
            .encode(),
        )
        .unwrap();
        v.write("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(&[0])).unwrap();
        let (n, reused) = add(&v, &opt(g, "\\EFI\\systemd\\systemd-bootx64.efi", "Linux Boot Manager"), false).unwrap();
        assert_eq!((n, reused), (1, false));
        assert_eq!(read(&v).unwrap().order, [0, 1]);
        let (n, reused) =
            add(&v, &opt(&g.to_uppercase(), "\\efi\\SYSTEMD\\systemd-bootx64.efi", "Linux Boot Manager"), true)
                .unwrap();
        assert_eq!((n, reused), (1, true));
        assert_eq!(read(&v).unwrap().order, [1, 0]);
        set_next(&v, 0).unwrap();
        assert_eq!(read(&v).unwrap().next, Some(0));
        assert!(set_next(&v, 7).is_err());
        assert!(set_order(&v, &[0, 0]).is_err());
        set_order(&v, &[0, 1]).unwrap();
        remove(&v, 0).unwrap();
        let fw = read(&v).unwrap();
        assert_eq!(fw.order, [1]);
        assert_eq!(fw.next, None);
        assert_eq!(fw.entries.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
