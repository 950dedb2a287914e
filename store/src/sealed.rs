//! Sealed objects: one encrypted, optionally compressed body behind an
//! object header. Config, index segments, run pages and points use it.
//!
//! Spec: `format-spec/SPEC.md#sealed-object`. Layout: header (40 bytes,
//! flag `ZSTD` when the body is compressed) ‖ AES-256-GCM(subkey(salt),
//! nonce `Body`, AAD = header) of `raw_len: u64 ‖ payload`, where payload is
//! the body, zstd-compressed when the flag is set.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::compress;
use crate::crypto::{Keys, Nonce};
use crate::error::{DecodeError, Error, ErrorKind};
use crate::format::{Header, ObjectKind, Reader, FLAG_ZSTD, HEADER_LEN};

/// Largest body a sealed object may declare (1 GiB).
pub const MAX_BODY_LEN: u64 = 1 << 30;

/// Seals `body` as an object of `kind`, compressing at `zstd_level`
/// (0 = off) when that saves space.
pub fn seal(
    keys: &Keys,
    kind: ObjectKind,
    salt: [u8; 32],
    body: &[u8],
    zstd_level: i32,
) -> Vec<u8> {
    let compressed = compress::compress(body, zstd_level);
    let header = Header {
        kind,
        flags: if compressed.is_some() { FLAG_ZSTD } else { 0 },
        salt,
    }
    .encode();
    let payload = compressed.as_deref().unwrap_or(body);
    let mut plain = Vec::with_capacity(8 + payload.len());
    plain.extend_from_slice(&(body.len() as u64).to_le_bytes());
    plain.extend_from_slice(payload);
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + 16);
    out.extend_from_slice(&header);
    out.extend_from_slice(&keys.object_cipher(&salt).seal(Nonce::Body, &header, &plain));
    out
}

/// Opens a sealed object of `kind`: checks the header, authenticates,
/// decompresses (never past the authenticated length) and returns the body.
pub fn open(keys: &Keys, kind: ObjectKind, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let header = Header::decode(bytes, kind)?;
    let (head, sealed) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, "object shorter than its header"))?;
    let plain = keys
        .object_cipher(&header.salt)
        .open(Nonce::Body, head, sealed)?;
    let mut r = Reader::new(&plain);
    let raw_len = r.u64("body length")?;
    if raw_len > MAX_BODY_LEN {
        return Err(DecodeError::new(
            HEADER_LEN,
            format!("body length {raw_len} exceeds the maximum"),
        )
        .into());
    }
    let payload = r.take(r.remaining(), "body")?;
    let raw_len = usize::try_from(raw_len).map_err(|_| Error::corrupt("body length overflows"))?;
    if header.flags & FLAG_ZSTD != 0 {
        Ok(compress::decompress(payload, raw_len)?)
    } else if payload.len() == raw_len {
        Ok(payload.to_vec())
    } else {
        Err(Error::corrupt(format!(
            "raw body is {} bytes, header says {raw_len}",
            payload.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let keys = Keys::derive(&MasterKey::from_bytes([3; 32]));
        for body in [b"".to_vec(), b"small".to_vec(), b"abc".repeat(5000)] {
            let sealed = seal(&keys, ObjectKind::Point, [4; 32], &body, 3);
            assert_eq!(open(&keys, ObjectKind::Point, &sealed).unwrap(), body);
            assert!(open(&keys, ObjectKind::Config, &sealed).is_err());
            for i in [0, 5, HEADER_LEN, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 0x10;
                assert!(open(&keys, ObjectKind::Point, &bad).is_err(), "flip at {i}");
            }
        }
    }
}
