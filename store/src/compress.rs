//! zstd per blob and per sealed object, with a raw fallback for data that
//! does not shrink, and decompression capped at the authenticated length.
//!
//! Spec: `format-spec/SPEC.md#compression`.

use crate::error::DecodeError;

/// Compression recorded per blob (pack trailer) or per object (header flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Stored as is.
    Raw = 0,
    /// zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Decodes the stored byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Compression::Raw),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

thread_local! {
    /// A zstd context per thread, reused: creating one per blob (and its
    /// megabyte of workspace) was a fifth of a pass's CPU time.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `data` at `level`; `None` when compression is off (level 0)
/// or the result would not save at least 1/64 of the input, in which case
/// the data is stored raw (no expansion, no wasted CPU on reads).
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || data.len() < 64 {
        return None;
    }
    let out = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        c.as_mut()?.1.compress(data).ok()
    })?;
    if out.len() + data.len() / 64 < data.len() {
        Some(out)
    } else {
        None
    }
}

/// Decompresses a zstd frame that must expand to exactly `raw_len` bytes;
/// a frame that expands further (a decompression bomb) or less is an error,
/// and no more than `raw_len` bytes are ever allocated.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(raw_len);
    let n = DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            match d.as_mut() {
                Some(d) => d.decompress_to_buffer(data, &mut out),
                None => Err(std::io::Error::other("no zstd context")),
            }
        })
        .map_err(|e| {
            DecodeError::new(
                0,
                format!("zstd frame does not expand to {raw_len} bytes: {e}"),
            )
        })?;
    if n != raw_len {
        return Err(DecodeError::new(
            0,
            format!("zstd frame expands to {n} bytes, expected {raw_len}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_raw_fallback() {
        let text = b"strata ".repeat(1000);
        let c = compress(&text, 3).unwrap();
        assert_eq!(decompress(&c, text.len()).unwrap(), text);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = compress(&noise, 3); // may or may not compress; must not panic
        assert!(compress(b"tiny", 3).is_none());
        assert!(compress(&text, 0).is_none());
    }

    #[test]
    fn bomb_is_refused() {
        let big = vec![0u8; 10 << 20];
        let c = compress(&big, 3).unwrap();
        assert!(decompress(&c, 1024).is_err());
        assert!(decompress(&c, (10 << 20) + 1).is_err());
    }
}
