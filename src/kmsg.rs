//! The one reader of the kernel log (`/dev/kmsg`): records as the kernel keeps
//! them ("prio,seq,usec,flags;message"), read without blocking from the oldest
//! still buffered, filtered by level. The rescue shell's `dmesg` shows them all;
//! PID 1's stall report shows the recent warnings.

use std::os::fd::AsRawFd;

use nix::libc;

/// One kernel log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Syslog level, 0 (emergency) to 7 (debug).
    pub level: u8,
    /// Microseconds since boot.
    pub usec: u64,
    /// The first line of the message (continuation lines " KEY=value" dropped).
    pub message: String,
}

impl Record {
    /// Parses one record; `None` for anything malformed.
    pub fn parse(rec: &[u8]) -> Option<Record> {
        let text = String::from_utf8_lossy(rec);
        let (head, msg) = text.split_once(';')?;
        let mut fields = head.split(',');
        let prio: u32 = fields.next()?.parse().ok()?;
        let _seq = fields.next()?;
        let usec: u64 = fields.next()?.parse().ok()?;
        let first = msg.lines().next().unwrap_or("");
        // Facility bits are above the level's three.
        Some(Record { level: (prio & 7) as u8, usec, message: first.to_owned() })
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:5}.{:06}] {}", self.usec / 1_000_000, self.usec % 1_000_000, self.message)
    }
}

/// The last `max` records of level `max_level` or more severe (a lower number).
pub fn read(max_level: u8, max: usize) -> Vec<Record> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg") else {
        return Vec::new();
    };
    let mut out: std::collections::VecDeque<Record> = std::collections::VecDeque::new();
    let mut rec = vec![0u8; 8192];
    loop {
        // SAFETY: one record per read into a buffer of the given length.
        let n = unsafe { libc::read(f.as_raw_fd(), rec.as_mut_ptr().cast(), rec.len()) };
        if n < 0 {
            // EPIPE means records were overwritten while reading: keep going.
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE) {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        if let Some(r) = Record::parse(&rec[..n as usize]).filter(|r| r.level <= max_level) {
            if out.len() == max {
                out.pop_front();
            }
            out.push_back(r);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let r = Record::parse(b"4,812,37920588,-;nvme nvme0: I/O 457 QID 1 timeout, completion polled\n").unwrap();
        assert_eq!(r.to_string(), "[   37.920588] nvme nvme0: I/O 457 QID 1 timeout, completion polled");
        assert_eq!(r.level, 4);
        // Facility bits are ignored; only the level counts.
        let r = Record::parse(b"11,5,100,-;sd 0:0:0:0: error\n SUBSYSTEM=scsi\n").unwrap();
        assert_eq!((r.level, r.message.as_str()), (3, "sd 0:0:0:0: error"));
        assert_eq!(Record::parse(b"6,1,100,-;x").unwrap().level, 6);
        assert_eq!(Record::parse(b"garbage"), None);
        assert_eq!(Record::parse(b"x,1,2,-;m"), None);
        assert_eq!(Record::parse(b"\xff\xfe,1,2,-;m"), None);
    }
}
