//! UTC date formatting without a time-zone database (the initrd has none).

/// `YYYY-MM-DD HH:MM` in UTC for seconds since the epoch.
pub fn utc_minutes(secs: i64) -> String {
    let (y, m, d, hh, mm, _) = civil(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    lifeboat_esp::clock::civil(secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::utc_minutes(951_782_400), "2000-02-29 00:00");
    }
}
