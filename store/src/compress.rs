//! zstd per blob and per sealed object, with a raw fallback for data that
//! does not shrink, and decompression capped at the authenticated length.
//!
//! Spec: `format-spec/SPEC.md#compression`.

use std::sync::Mutex;

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

/// Idle zstd contexts, shared by all threads: there are as many as
/// compressions ever ran at once, not one per thread (a pass's blocking
/// pool can hold a hundred threads, and a context holds about a megabyte).
/// Creating one per blob instead was a fifth of a pass's CPU time.
static COMPRESSORS: Mutex<Vec<(i32, zstd::bulk::Compressor<'static>)>> = Mutex::new(Vec::new());
static DECOMPRESSORS: Mutex<Vec<zstd::bulk::Decompressor<'static>>> = Mutex::new(Vec::new());

/// Idle contexts kept beyond this many are dropped.
const MAX_IDLE_CONTEXTS: usize = 64;

fn idle<T>(pool: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    // A panic while the lock was held cannot leave a context half-made.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

fn give_back<T>(pool: &Mutex<Vec<T>>, context: T) {
    let mut pool = idle(pool);
    if pool.len() < MAX_IDLE_CONTEXTS {
        pool.push(context);
    }
}

/// Runs `f` with an idle compressor at `level` (made when there is none).
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T,
) -> Option<T> {
    let taken = {
        let mut pool = idle(&COMPRESSORS);
        let at = pool.iter().position(|(l, _)| *l == level);
        at.map(|i| pool.swap_remove(i))
    };
    let mut c = match taken {
        Some(c) => c,
        None => (level, zstd::bulk::Compressor::new(level).ok()?),
    };
    let out = f(&mut c.1);
    give_back(&COMPRESSORS, c);
    Some(out)
}

/// Runs `f` with an idle decompressor (made when there is none).
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let taken = idle(&DECOMPRESSORS).pop();
    let mut d = match taken {
        Some(d) => d,
        None => zstd::bulk::Decompressor::new()?,
    };
    let out = f(&mut d);
    give_back(&DECOMPRESSORS, d);
    out
}

/// Compresses `data` at `level`; `None` when compression is off (level 0)
/// or does not pay (see [`compress_into`]).
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    compress_into(data, level, &mut out).then_some(out)
}

/// Appends the zstd frame of `data` to `out` and returns true, or leaves
/// `out` as it was and returns false when compression is off (level 0) or
/// would not save at least 1/64 of the input: such data is stored raw (no
/// expansion, no wasted CPU on reads). Blobs of [`PROBE_MIN_LEN`] bytes or
/// more are first probed on a sample, so incompressible data (media,
/// archives, encrypted files) costs a fraction of a full attempt.
pub fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    if level == 0 || data.len() < 64 || !sample_compresses(data, level) {
        return false;
    }
    let start = out.len();
    let worth = data.len() - data.len() / 64;
    // Room for the worst case keeps zstd on its single-pass path.
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let written = with_compressor(level, |c| {
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        c.compress_to_buffer(data, &mut cursor).ok()
    })
    .flatten();
    if written.is_some_and(|n| n < worth) {
        true
    } else {
        out.truncate(start);
        false
    }
}

/// Blobs at least this long are probed before a full compression attempt.
pub const PROBE_MIN_LEN: usize = 64 << 10;
/// The probe compresses this many pieces of [`PROBE_PIECE`] bytes, spread
/// evenly over the blob.
const PROBE_PIECES: usize = 4;
const PROBE_PIECE: usize = 4 << 10;

/// True when a sample of `data` saves the 1/64 the whole must save (always
/// true for data shorter than [`PROBE_MIN_LEN`]). Data whose redundancy
/// lies only in repeats further apart than a piece is taken for
/// incompressible: a cost accepted for skipping zstd on random data.
fn sample_compresses(data: &[u8], level: i32) -> bool {
    if data.len() < PROBE_MIN_LEN {
        return true;
    }
    let mut sample = [0u8; PROBE_PIECE * PROBE_PIECES];
    let stride = data.len() / PROBE_PIECES;
    for (i, piece) in sample.chunks_mut(PROBE_PIECE).enumerate() {
        piece.copy_from_slice(&data[i * stride..i * stride + PROBE_PIECE]);
    }
    let mut frame = [0u8; PROBE_PIECE * PROBE_PIECES + 1024];
    let written = with_compressor(level, |c| {
        c.compress_to_buffer(&sample[..], &mut frame[..]).ok()
    });
    match written.flatten() {
        Some(n) => n + sample.len() / 64 < sample.len(),
        // No compressor or no room: let the full attempt decide.
        None => true,
    }
}

/// Decompresses a zstd frame that must expand to exactly `raw_len` bytes;
/// a frame that expands further (a decompression bomb) or less is an error,
/// and no more than `raw_len` bytes are ever allocated.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(raw_len);
    let n = with_decompressor(|d| d.decompress_to_buffer(data, &mut out)).map_err(|e| {
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

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn appends_after_what_the_buffer_holds() {
        let text = b"strata appends ".repeat(10_000);
        let mut out = b"head".to_vec();
        assert!(compress_into(&text, 3, &mut out));
        assert_eq!(&out[..4], b"head");
        assert_eq!(decompress(&out[4..], text.len()).unwrap(), text);
        let len = out.len();
        assert!(!compress_into(&noise(1 << 20, 7), 3, &mut out));
        assert_eq!(
            out.len(),
            len,
            "a refused attempt leaves the buffer as it was"
        );
    }

    #[test]
    fn probe_skips_noise_and_keeps_mixed_data() {
        assert!(!sample_compresses(&noise(1 << 20, 1), 3));
        assert!(compress(&noise(1 << 20, 2), 3).is_none());
        // Half text, half noise, interleaved in 64 KiB runs: compressible.
        let mut mixed = Vec::new();
        for i in 0..16u64 {
            if i % 2 == 0 {
                mixed.extend(b"{\"tenant\": 42, \"name\": \"report\"} ".repeat(1800));
            } else {
                mixed.extend(noise(64 << 10, i));
            }
        }
        assert!(sample_compresses(&mixed, 3));
        let c = compress(&mixed, 3).expect("mixed data compresses");
        assert!(c.len() < mixed.len() * 3 / 4);
        assert_eq!(decompress(&c, mixed.len()).unwrap(), mixed);
    }
}
