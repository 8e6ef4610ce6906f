//! The bounded reader that every binary format lifeboat parses goes through: the
//! state index header, GPT headers and partition entries, EFI load options and
//! device paths, cpio newc headers, ELF headers.
//!
//! A [`Reader`] walks a borrowed byte slice. Every read says how many bytes it
//! needs and fails with a [`Short`] error — naming the field, the offset and what
//! was left — when they are not there; no read can index past the end or overflow
//! an offset, whatever a hostile length field says. Callers turn `Short` into their
//! own typed error with the file's name. [`crc32`] is the checksum GPT and LVM2
//! headers share. The crate has no dependencies, so the
//! library crates share it without depending on each other.

pub mod crc32;

use std::fmt;

/// A read ran past the end of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Short {
    /// The field being read.
    pub what: &'static str,
    /// Offset of the field from the start of the reader's input.
    pub at: usize,
    /// Bytes the field needs.
    pub need: usize,
    /// Bytes that were left.
    pub left: usize,
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: needs {} bytes at offset {}, only {} left", self.what, self.need, self.at, self.left)
    }
}

impl std::error::Error for Short {}

/// A cursor over bytes whose every read is checked.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    /// Offset of `buf[0]` in the outermost input, for error messages of sub-readers.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0, base: 0 }
    }

    /// Offset of the next read from the start of the (outermost) input.
    pub fn position(&self) -> usize {
        self.base + self.at
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    pub fn is_empty(&self) -> bool {
        self.left() == 0
    }

    fn short(&self, what: &'static str, need: usize) -> Short {
        Short { what, at: self.position(), need, left: self.left() }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Short> {
        if n > self.left() {
            return Err(self.short(what, n));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Short> {
        self.take(n, what).map(|_| ())
    }

    /// Moves to absolute offset `to` of this reader's input (forward or back).
    pub fn seek(&mut self, to: usize, what: &'static str) -> Result<(), Short> {
        if to > self.buf.len() {
            return Err(Short { what, at: self.base + to, need: 0, left: 0 });
        }
        self.at = to;
        Ok(())
    }

    /// A reader over the next `n` bytes, which this one skips: a length-prefixed
    /// record read through it cannot spill into what follows.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, Short> {
        let base = self.position();
        let buf = self.take(n, what)?;
        Ok(Reader { buf, at: 0, base })
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Short> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Short> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, Short> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, Short> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, Short> {
        self.array(what).map(u64::from_le_bytes)
    }

    pub fn u16_be(&mut self, what: &'static str) -> Result<u16, Short> {
        self.array(what).map(u16::from_be_bytes)
    }

    pub fn u32_be(&mut self, what: &'static str) -> Result<u32, Short> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, Short> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// `n` ASCII hexadecimal digits (cpio newc's header fields).
    pub fn hex_u32(&mut self, n: usize, what: &'static str) -> Result<Option<u32>, Short> {
        let s = self.take(n, what)?;
        Ok(std::str::from_utf8(s).ok().and_then(|t| u32::from_str_radix(t, 16).ok()))
    }
}

/// Little-endian fields at fixed offsets of a structure already known to be long
/// enough is still a read that must not panic: `le_u32_at(b, off)` is `None` past
/// the end. For formats read field by field at offsets given by a specification.
pub fn le_u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

pub fn le_u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub fn le_u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_names_a_short_one() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let mut r = Reader::new(&b);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16_le("b").unwrap(), 0x0302);
        assert_eq!(r.u32_le("c").unwrap(), 0x07060504);
        assert_eq!(r.position(), 7);
        let e = r.u64_le("d").unwrap_err();
        assert_eq!(e, Short { what: "d", at: 7, need: 8, left: 4 });
        assert_eq!(e.to_string(), "d: needs 8 bytes at offset 7, only 4 left");
        // A failed read consumes nothing.
        assert_eq!(r.left(), 4);
        assert_eq!(r.u32_be("e").unwrap(), 0x08090a0b);
        assert!(r.is_empty());
    }

    #[test]
    fn hostile_lengths_never_overflow() {
        let b = [0u8; 16];
        let mut r = Reader::new(&b);
        r.skip(8, "x").unwrap();
        assert!(r.take(usize::MAX, "huge").is_err());
        assert!(r.sub(usize::MAX - 3, "huge").is_err());
        assert!(r.seek(usize::MAX, "far").is_err());
        assert_eq!(le_u64_at(&b, usize::MAX - 2), None);
        assert_eq!(le_u32_at(&b, 13), None);
        assert_eq!(le_u32_at(&b, 12), Some(0));
    }

    #[test]
    fn sub_readers_are_fenced_and_report_outer_offsets() {
        let b = [0u8, 0, 2, 0, 0xff, 0xff, 9];
        let mut r = Reader::new(&b);
        r.skip(2, "pad").unwrap();
        let mut s = r.sub(4, "record").unwrap();
        assert_eq!(s.u16_le("len").unwrap(), 2);
        assert_eq!(s.position(), 4);
        assert_eq!(s.u16_le("v").unwrap(), 0xffff);
        assert_eq!(s.u8("spill").unwrap_err().at, 6);
        assert_eq!(r.u8("next").unwrap(), 9);
    }

    #[test]
    fn hex_fields() {
        let mut r = Reader::new(b"000041EDzz");
        assert_eq!(r.hex_u32(8, "mode").unwrap(), Some(0o40755));
        assert_eq!(r.hex_u32(2, "bad").unwrap(), None);
        assert!(r.hex_u32(1, "end").is_err());
    }
}
