//! Recognising systemd-boot binaries: the `#### LoaderInfo: systemd-boot VERSION
//! ####` marker every build embeds, so `boot install` replaces only a loader that is
//! absent or already systemd-boot, and reports versions.

/// The version string in a systemd-boot binary, or `None` if it is not one.
pub fn version(binary: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"#### LoaderInfo: systemd-boot ";
    let at = binary.windows(MARK.len()).position(|w| w == MARK)?;
    let rest = &binary[at + MARK.len()..];
    let end = rest.windows(5).position(|w| w == b" ####")?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty() && v.len() < 128).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_marker() {
        let b = b"\0\0junk#### LoaderInfo: systemd-boot 252.39-1~deb12u2 ####\0more";
        assert_eq!(super::version(b).as_deref(), Some("252.39-1~deb12u2"));
        assert_eq!(super::version(b"bootmgfw"), None);
    }
}
