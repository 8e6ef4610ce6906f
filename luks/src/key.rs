//! Secret bytes: the volume key and every intermediate key live in buffers that are
//! zeroed when dropped, and whose `Debug` never shows them. The only way out of a
//! [`VolumeKey`] is asking for it by name (`as_bytes`, `to_hex`), so a stray `{:?}`
//! in a log line cannot leak it.

use std::fmt;

use zeroize::Zeroizing;

/// A LUKS volume key (the data segment's key). Zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeKey(Zeroizing<Vec<u8>>);

impl VolumeKey {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        VolumeKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Lower-case hexadecimal, as a dm-crypt table wants it; zeroed on drop too.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(self.0.len() * 2));
        for b in self.0.iter() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeKey(<redacted, {} bits>)", self.0.len() * 8)
    }
}

/// A zeroed-on-drop buffer of `n` bytes, refusing (not aborting) when memory is short.
pub(crate) fn secret_buffer(n: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(Zeroizing::new(v))
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_hex_is_lower_case() {
        let k = VolumeKey::new(Zeroizing::new(vec![0x01, 0xab, 0xff, 0x00]));
        assert_eq!(format!("{k:?}"), "VolumeKey(<redacted, 32 bits>)");
        assert_eq!(k.to_hex().as_str(), "01abff00");
        assert!(constant_time_eq(&[1, 2], &[1, 2]));
        assert!(!constant_time_eq(&[1, 2], &[1, 3]));
        assert!(!constant_time_eq(&[1, 2], &[1]));
    }
}
