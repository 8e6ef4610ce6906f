//! Boot Loader Specification Type #2 entries (unified kernel images in
//! `$BOOT/EFI/Linux/*.efi`) as systemd-boot 252 reads them: which files are
//! entries, their id, title, version and sort key from the embedded `.osrel`,
//! the command line from `.cmdline`, the boot counter in the file name, and
//! whether one is lifeboat's. The PE sections themselves are read by
//! `lifeboat-pe` (through [`inspect`]); everything here is the loader's rules
//! over those sections, so the merged Type #1 + Type #2 order is one
//! [`bls::compare`] over [`SortInfo`]s.
//!
//! These files are only ever read: a UKI that is not lifeboat's is another
//! owner's, and nothing here has a way to write one.

use lifeboat_esp::volume::join;
use lifeboat_esp::Volume;

use crate::bls::{self, Counter, SortInfo};
use crate::token::{field, parse_os_release};
use crate::Result;

/// Where Type #2 entries live on the ESP and on XBOOTLDR.
pub const DIR: &str = "EFI/Linux";

/// A UKI larger than this is not read (listed as broken): the largest real
/// ones (a distribution kernel with a generic initrd) are around 150 MiB.
pub const MAX_UKI: u64 = 512 << 20;

/// The sections of a UKI systemd-boot and lifeboat read, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sections {
    pub osrel: Option<String>,
    pub cmdline: Option<String>,
    pub uname: Option<String>,
    pub sbat: Option<String>,
    /// Its Authenticode signature, judged against the image itself.
    pub signature: Signature,
}

/// An image's Authenticode signature, judged without a certificate: whether
/// the image hash the signature carries is the image's own. Whose signature
/// it is, and whether the firmware's db trusts it, needs a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Signature {
    /// No certificate table.
    #[default]
    Unsigned,
    /// A signature over this very image (the image hash it carries matches).
    Signed,
    /// A signature over other bytes: the image was changed after signing.
    Tampered,
    /// A certificate table that is not a readable Authenticode signature.
    Malformed,
}

impl Signature {
    /// Judges PE bytes; `None` when they are not a PE image at all.
    pub fn of(bytes: &[u8]) -> Option<Signature> {
        let pe = lifeboat_pe::PeImage::parse(bytes).ok()?;
        if !pe.is_signed() {
            return Some(Signature::Unsigned);
        }
        Some(match (lifeboat_pe::signed_digest(bytes), lifeboat_pe::authenticode_sha256(bytes)) {
            (Ok(Some(carried)), Ok(own)) if carried.as_slice() == own.as_slice() => Signature::Signed,
            (Ok(Some(_)), Ok(_)) => Signature::Tampered,
            _ => Signature::Malformed,
        })
    }

    /// How `boot status` says it.
    pub fn describe(self) -> &'static str {
        match self {
            Signature::Unsigned => "unsigned",
            Signature::Signed => "signed",
            Signature::Tampered => "signature does not match the image (tampered)",
            Signature::Malformed => "signature unreadable (malformed certificate table)",
        }
    }

    /// What it is, as the end of a sentence naming the image ("X is
    /// unsigned", "X has a signature that ...").
    pub fn predicate(self) -> &'static str {
        match self {
            Signature::Unsigned => "is unsigned",
            Signature::Signed => "is signed",
            Signature::Tampered => "has a signature that does not match the image (tampered)",
            Signature::Malformed => "has an unreadable signature (malformed certificate table)",
        }
    }

    /// The JSON word for it.
    pub fn word(self) -> &'static str {
        match self {
            Signature::Unsigned => "unsigned",
            Signature::Signed => "signed",
            Signature::Tampered => "tampered",
            Signature::Malformed => "malformed",
        }
    }
}

/// Reads a UKI's sections through `lifeboat-pe` (bounded; never panics). The
/// error names what is wrong and where in the file.
pub fn inspect(bytes: &[u8]) -> std::result::Result<Sections, String> {
    let info = lifeboat_pe::read_uki(bytes).map_err(|e| e.to_string())?;
    let signature = Signature::of(bytes).unwrap_or(Signature::Malformed);
    Ok(Sections { osrel: info.osrel, cmdline: info.cmdline, uname: info.uname, sbat: info.sbat, signature })
}

/// A Type #2 entry the loader shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type2 {
    /// The file name as on the volume (counter included).
    pub file: String,
    /// id (the file name lowercased, counter included, as systemd-boot 252
    /// keeps it), sort key, version and counter: the loader's sort input.
    pub sort: SortInfo,
    pub title: String,
    pub cmdline: Option<String>,
    pub uname: Option<String>,
    pub sbat: Option<String>,
    pub signature: Signature,
    /// The transaction, when the UKI is lifeboat's ([`owned_by_us`]).
    pub ours: Option<u64>,
}

/// What one `EFI/Linux/*.efi` file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uki {
    Entry(Box<Type2>),
    /// Not an entry the loader shows; the reason names what is wrong.
    Broken {
        file: String,
        reason: String,
    },
}

impl Uki {
    pub fn file(&self) -> &str {
        match self {
            Uki::Entry(t) => &t.file,
            Uki::Broken { file, .. } => file,
        }
    }
}

/// Whether a directory entry of `EFI/Linux` is one systemd-boot considers: a
/// file, not hidden, ending in `.efi` in any case (FAT ignores case).
pub fn is_candidate(name: &str, is_dir: bool) -> bool {
    let n = name.len();
    !is_dir
        && !name.starts_with('.')
        && n > 4
        && name.is_char_boundary(n - 4)
        && name[n - 4..].eq_ignore_ascii_case(".efi")
}

/// Text of a section as the loader takes it: up to the first NUL.
fn text(s: &str) -> &str {
    s.split('\0').next().unwrap_or("")
}

/// The name, version and sort key systemd picks from os-release fields
/// (`bootspec_pick_name_version_sort_key`): name PRETTY_NAME, IMAGE_ID, NAME,
/// ID; version IMAGE_VERSION, VERSION, VERSION_ID, BUILD_ID; sort key IMAGE_ID,
/// ID. Without a name the image is not an entry.
pub fn pick(osrel: &str) -> Option<(String, Option<String>, Option<String>)> {
    let os = parse_os_release(text(osrel));
    // An empty value counts as unset, as the loader's parser leaves it.
    let get = |k: &str| field(&os, k).filter(|v| !v.is_empty()).map(str::to_owned);
    let name = get("PRETTY_NAME").or_else(|| get("IMAGE_ID")).or_else(|| get("NAME")).or_else(|| get("ID"))?;
    let version =
        get("IMAGE_VERSION").or_else(|| get("VERSION")).or_else(|| get("VERSION_ID")).or_else(|| get("BUILD_ID"));
    let sort_key = get("IMAGE_ID").or_else(|| get("ID"));
    Some((name, version, sort_key))
}

/// The file name of lifeboat's UKI for an entry stem ([`crate::plan::entry_stem`]).
pub fn file_name(stem: &str, counter: Option<Counter>) -> String {
    match counter {
        Some(c) => format!("{stem}+{}-{}.efi", c.left, c.done),
        None => format!("{stem}.efi"),
    }
}

/// Parses a UKI name of ours: `<token>-<tx>-<kver>[+L[-D]].efi`.
pub fn parse_name(token: &str, file: &str) -> Option<(u64, String, Option<Counter>)> {
    let (stem, counter) = bls::split_counter(file, ".efi")?;
    let rest = stem.strip_prefix(token)?.strip_prefix('-')?;
    let (tx, kver) = rest.split_once('-')?;
    if tx.is_empty() || !tx.bytes().all(|b| b.is_ascii_digit()) || kver.is_empty() {
        return None;
    }
    Some((tx.parse().ok()?, kver.to_owned(), counter))
}

/// Whether a UKI is lifeboat's: named in the token's namespace as its Type #1
/// entries are (`<token>-<tx>-<kver>[+L-D].efi`) and its command line carries
/// `lifeboat.tx=<tx>` — as for Type #1, a name alone is not enough.
pub fn owned_by_us(token: &str, file: &str, cmdline: Option<&str>) -> Option<u64> {
    let (tx, _, _) = parse_name(token, file)?;
    cmdline_names_tx(cmdline?, tx).then_some(tx)
}

/// Whether a `.cmdline` section carries `lifeboat.tx=<tx>` as a word of the
/// command line the loader passes (up to the first NUL): the one rule that
/// listing, sync and bless share.
pub fn cmdline_names_tx(cmdline: &str, tx: u64) -> bool {
    let want = format!("lifeboat.tx={tx}");
    text(cmdline).split_whitespace().any(|o| o == want)
}

/// The loader's entry for a UKI file from its sections.
pub fn entry(file: &str, s: Sections, token: Option<&str>) -> Uki {
    let broken = |reason: String| Uki::Broken { file: file.to_owned(), reason };
    let Some(osrel) = s.osrel.as_deref() else {
        return broken("no .osrel section: systemd-boot does not show it".into());
    };
    let Some((title, version, sort_key)) = pick(osrel) else {
        return broken("its .osrel has none of PRETTY_NAME, IMAGE_ID, NAME, ID: systemd-boot does not show it".into());
    };
    // systemd-boot drops one trailing newline of the command line.
    let cmdline = s.cmdline.as_deref().map(|c| {
        let c = text(c);
        c.strip_suffix('\n').unwrap_or(c).to_owned()
    });
    let ours = token.and_then(|t| owned_by_us(t, file, cmdline.as_deref()));
    let sort = SortInfo {
        id: file.to_lowercase(),
        sort_key,
        machine_id: None,
        version,
        counter: bls::split_counter(file, ".efi").and_then(|(_, c)| c),
    };
    Uki::Entry(Box::new(Type2 {
        file: file.to_owned(),
        sort,
        title,
        cmdline,
        uname: s.uname.as_deref().map(|u| text(u).trim().to_owned()),
        sbat: s.sbat.as_deref().map(|t| text(t).to_owned()),
        signature: s.signature,
        ours,
    }))
}

/// Every `EFI/Linux/*.efi` on a volume, read and judged; a file that cannot be
/// read as a UKI is listed as broken with the reason, never an error for the
/// whole list. An absent `EFI/Linux` is no entries. With `only_ours`, files not
/// named in the token's namespace are passed over unread (a UKI is tens of MiB).
pub fn entries_on(v: &mut dyn Volume, token: Option<&str>, only_ours: bool) -> Result<Vec<Uki>> {
    let list = match v.list(DIR) {
        Ok(l) => l,
        Err(lifeboat_esp::Error::NotFound { .. }) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for f in list {
        if !is_candidate(&f.name, f.is_dir) {
            continue;
        }
        if only_ours && token.and_then(|t| parse_name(t, &f.name)).is_none() {
            continue;
        }
        if f.size > MAX_UKI {
            out.push(Uki::Broken {
                file: f.name,
                reason: format!("{} bytes: larger than lifeboat reads ({MAX_UKI})", f.size),
            });
            continue;
        }
        let bytes = match v.read(&join(DIR, &f.name)) {
            Ok(b) => b,
            Err(e) => {
                out.push(Uki::Broken { reason: format!("cannot be read: {e}"), file: f.name });
                continue;
            }
        };
        match inspect(&bytes) {
            Ok(s) => out.push(entry(&f.name, s, token)),
            Err(why) => out.push(Uki::Broken { file: f.name, reason: why }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listing, sync and bless take a UKI as ours by one rule: the word
    /// `lifeboat.tx=N` in the command line the loader passes, which ends at
    /// the first NUL.
    #[test]
    fn the_transaction_word_counts_only_before_a_nul() {
        assert!(cmdline_names_tx("root=UUID=x lifeboat.tx=3\n", 3));
        assert!(!cmdline_names_tx("root=UUID=x lifeboat.tx=3", 30));
        assert!(!cmdline_names_tx("quiet\0 lifeboat.tx=3", 3));
        assert!(!crate::plan::uki_names_tx(b"MZ not a PE", 3));
    }

    fn secs(osrel: &str, cmdline: Option<&str>) -> Sections {
        Sections { osrel: Some(osrel.into()), cmdline: cmdline.map(str::to_owned), ..Default::default() }
    }

    #[test]
    fn picks_as_systemd_does() {
        let p = |s: &str| pick(s);
        assert_eq!(
            p("PRETTY_NAME=\"Debian 12\"\nNAME=Debian\nID=debian\nVERSION_ID=12\nVERSION=\"12 (bookworm)\"\n"),
            Some(("Debian 12".into(), Some("12 (bookworm)".into()), Some("debian".into())))
        );
        // IMAGE_ID is preferred to NAME for the title and to ID for the sort key.
        assert_eq!(
            p("IMAGE_ID=img\nNAME=N\nID=i\nIMAGE_VERSION=7\nBUILD_ID=b\n"),
            Some(("img".into(), Some("7".into()), Some("img".into())))
        );
        assert_eq!(p("ID=i\nBUILD_ID=b\n"), Some(("i".into(), Some("b".into()), Some("i".into()))));
        assert_eq!(p("NAME=N\n"), Some(("N".into(), None, None)));
        assert_eq!(p("VERSION=1\nPRETTY_NAME=\n"), None);
        assert_eq!(p("PRETTY_NAME=x\0ID=hidden\n"), Some(("x".into(), None, None)));
    }

    #[test]
    fn names_counters_and_ownership() {
        let t = "00112233445566778899aabbccddeeff";
        let f = format!("{t}-3-6.1.0+2-1.efi");
        assert_eq!(parse_name(t, &f), Some((3, "6.1.0".into(), Some(Counter { left: 2, done: 1 }))));
        assert_eq!(parse_name(t, &format!("{t}-3-6.1.0.EFI")), Some((3, "6.1.0".into(), None)));
        assert_eq!(parse_name(t, "foreign-6.1.efi"), None);
        assert_eq!(file_name(&format!("{t}-3-6.1.0"), Some(Counter { left: 2, done: 1 })), f);
        assert_eq!(owned_by_us(t, &f, Some("quiet lifeboat.tx=3")), Some(3));
        assert_eq!(owned_by_us(t, &f, Some("quiet lifeboat.tx=4")), None, "the name alone is not enough");
        assert_eq!(owned_by_us(t, &f, None), None);
        assert!(is_candidate("A.EFI", false) && !is_candidate(".x.efi", false) && !is_candidate("d.efi", true));
        assert!(!is_candidate("x.efi.bak", false));
    }

    #[test]
    fn entries_from_sections() {
        let Uki::Entry(e) = entry("Foo+2-1.efi", secs("ID=foo\nVERSION_ID=3\n", Some("a=1 b\n\0pad")), None) else {
            panic!("not an entry")
        };
        assert_eq!(e.sort.id, "foo+2-1.efi");
        assert_eq!(e.sort.counter, Some(Counter { left: 2, done: 1 }));
        assert_eq!((e.title.as_str(), e.sort.version.as_deref()), ("foo", Some("3")));
        assert_eq!(e.cmdline.as_deref(), Some("a=1 b"));
        let b = entry("x.efi", Sections::default(), None);
        assert!(matches!(&b, Uki::Broken { reason, .. } if reason.contains(".osrel")), "{b:?}");
        let b = entry("x.efi", secs("VERSION=1\n", None), None);
        assert!(matches!(&b, Uki::Broken { reason, .. } if reason.contains("PRETTY_NAME")), "{b:?}");
    }

    #[test]
    fn exhausted_type2_sorts_after_type1() {
        let Uki::Entry(u) = entry("a+0-3.efi", secs("ID=a\n", None), None) else { panic!() };
        let Uki::Entry(v) = entry("b.efi", secs("ID=b\n", None), None) else { panic!() };
        let t1 = SortInfo { id: "z.conf".into(), sort_key: Some("z".into()), ..Default::default() };
        let mut all = [u.sort.clone(), t1.clone(), v.sort.clone()];
        all.sort_by(bls::compare);
        let ids: Vec<_> = all.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b.efi", "z.conf", "a+0-3.efi"]);
    }
}
