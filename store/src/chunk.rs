//! Cutting object contents into blobs.
//!
//! Objects up to [`ChunkerParams::threshold`] bytes are one blob; larger
//! ones are cut by FastCDC (the crate's `v2020` algorithm, version pinned
//! in the workspace, because cut points are part of the format: the same
//! bytes must always give the same blobs or dedup breaks). The parameters
//! are recorded in the vault config.
//!
//! Spec: `format-spec/SPEC.md#chunking`.

use std::io::Read;

use crate::error::{Error, ErrorKind, Result};

/// Largest accepted single-blob threshold (16 MiB).
pub const MAX_THRESHOLD: u32 = 16 << 20;

/// Chunking parameters, recorded in the vault config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChunkerParams {
    /// Objects of at most this many bytes are stored as one blob.
    pub threshold: u32,
    /// FastCDC minimum chunk size.
    pub min_size: u32,
    /// FastCDC average chunk size.
    pub avg_size: u32,
    /// FastCDC maximum chunk size.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// One blob up to 2 MiB; above, chunks of 512 KiB / 1 MiB / 8 MiB.
    fn default() -> Self {
        ChunkerParams {
            threshold: 2 << 20,
            min_size: 512 << 10,
            avg_size: 1 << 20,
            max_size: 8 << 20,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters are within what FastCDC accepts.
    pub fn validate(&self) -> Result<()> {
        let ok = (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX)
            .contains(&self.min_size)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&self.avg_size)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.threshold <= MAX_THRESHOLD;
        if ok {
            Ok(())
        } else {
            Err(Error::config(format!(
                "invalid chunker parameters {self:?}"
            )))
        }
    }

    /// Cut points of an in-memory buffer, as (offset, length) pairs.
    pub fn cut(&self, data: &[u8]) -> Vec<(usize, usize)> {
        if data.len() <= self.threshold as usize {
            return vec![(0, data.len())];
        }
        fastcdc::v2020::FastCDC::new(data, self.min_size, self.avg_size, self.max_size)
            .map(|c| (c.offset, c.length))
            .collect()
    }

    /// Streams the chunks of `reader` (of expected length `len_hint`) into
    /// `sink`, holding at most one maximum-size chunk in memory.
    /// Returns the number of bytes read.
    pub fn for_each_chunk(
        &self,
        mut reader: impl Read,
        len_hint: u64,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        if len_hint <= u64::from(self.threshold) {
            let mut buf = Vec::with_capacity(usize::try_from(len_hint).unwrap_or(0));
            // Read one byte past the threshold to notice a grown object.
            let limit = u64::from(self.threshold) + 1;
            (&mut reader).take(limit).read_to_end(&mut buf)?;
            if buf.len() as u64 <= u64::from(self.threshold) {
                sink(&buf)?;
                return Ok(buf.len() as u64);
            }
            // It grew past the threshold while we read: chunk it after all.
            let chained = std::io::Cursor::new(buf).chain(reader);
            return self.stream(chained, sink);
        }
        self.stream(reader, sink)
    }

    fn stream(&self, reader: impl Read, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut total = 0u64;
        let chunker =
            fastcdc::v2020::StreamCDC::new(reader, self.min_size, self.avg_size, self.max_size);
        for chunk in chunker {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => Error::from(io),
                other => Error::new(ErrorKind::Io, format!("chunking failed: {other}")),
            })?;
            total += chunk.data.len() as u64;
            sink(&chunk.data)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn small_objects_are_one_blob() {
        let p = ChunkerParams::default();
        assert_eq!(p.cut(&[]), vec![(0, 0)]);
        assert_eq!(p.cut(&[1; 100]), vec![(0, 100)]);
    }

    #[test]
    fn streaming_matches_in_memory_and_is_stable_under_edits() {
        let p = ChunkerParams::default();
        let data = pattern(20 << 20, 1);
        let cuts = p.cut(&data);
        let mut streamed = Vec::new();
        p.for_each_chunk(&data[..], data.len() as u64, |c| {
            streamed.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(streamed, cuts.iter().map(|c| c.1).collect::<Vec<_>>());
        assert!(cuts.len() > 5);
        // An edit in the middle changes few chunks.
        let mut edited = data.clone();
        edited[10 << 20] ^= 0xff;
        let after = p.cut(&edited);
        let same = after.iter().filter(|c| cuts.contains(c)).count();
        assert!(same + 2 >= cuts.len(), "{same} of {}", cuts.len());
    }
}
