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

use crate::error::{Error, Result};

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

    /// The longest blob these parameters make: a whole object up to the
    /// threshold, above it a maximum chunk.
    pub fn largest_blob(&self) -> usize {
        self.threshold.max(self.max_size) as usize
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
    /// `sink`, reading through `window`, which is reused from object to
    /// object (no allocation per chunk or per object once it has grown).
    /// Returns the number of bytes read.
    pub fn for_each_chunk(
        &self,
        mut reader: impl Read,
        len_hint: u64,
        window: &mut ChunkWindow,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let threshold = self.threshold as usize;
        if len_hint <= u64::from(self.threshold) {
            // Read one byte past the threshold to notice a grown object.
            let buf = window.at_least(threshold + 1, 0);
            let (n, _) = fill(&mut reader, &mut buf[..threshold + 1])?;
            if n <= threshold {
                sink(&buf[..n])?;
                return Ok(n as u64);
            }
            // It grew past the threshold while we read: chunk it after all.
            return self.stream(reader, window, n, sink);
        }
        self.stream(reader, window, 0, sink)
    }

    /// Cuts what `reader` holds after the `filled` bytes already at the
    /// start of `window` (two maximum chunks), exactly as the in-memory cut
    /// does. A cut that ends before the data in view is final (a boundary
    /// found there stays the first, whatever follows), as is one with a
    /// whole maximum chunk in view or at the end of the object; otherwise
    /// more is read first. So the window is refilled only when it is used
    /// up, and what moves to its front then is the undecided tail — about
    /// half an average chunk — where keeping a maximum chunk in view at
    /// every cut moved most of a window for every window consumed.
    fn stream(
        &self,
        mut reader: impl Read,
        window: &mut ChunkWindow,
        filled: usize,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let max = self.max_size as usize;
        let buf = window.at_least(2 * max, filled);
        let (mut start, mut end, mut eof) = (0, filled, false);
        let mut total = 0u64;
        loop {
            let avail = &buf[start..end];
            if avail.is_empty() && eof {
                return Ok(total);
            }
            let len = if avail.is_empty() {
                0
            } else {
                fastcdc::v2020::FastCDC::new(avail, self.min_size, self.avg_size, self.max_size)
                    .cut(0, avail.len())
                    .1
            };
            if len > 0 && (len < avail.len() || avail.len() >= max || eof) {
                sink(&avail[..len])?;
                total += len as u64;
                start += len;
                continue;
            }
            // Undecided (less than a maximum chunk in view): read more,
            // first moving the tail to the front if the window is used up.
            if end == buf.len() {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            let (n, hit_eof) = fill(&mut reader, &mut buf[end..])?;
            end += n;
            eof = hit_eof;
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read
/// and whether it ended.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> Result<(usize, bool)> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from(e)),
        }
    }
    Ok((n, false))
}

/// The read buffer of [`ChunkerParams::for_each_chunk`], kept by a worker
/// between objects. It grows to what the largest object read needed (two
/// maximum chunks at most); its pages are touched only as data fills them.
#[derive(Debug, Default)]
pub struct ChunkWindow {
    buf: Vec<u8>,
}

impl ChunkWindow {
    /// The buffer, grown to at least `len` bytes; its first `keep` bytes
    /// are kept.
    fn at_least(&mut self, len: usize, keep: usize) -> &mut [u8] {
        if self.buf.len() < len {
            // Zeroed by the allocator (fresh pages), not by a memset.
            let mut grown = vec![0u8; len];
            grown[..keep].copy_from_slice(&self.buf[..keep]);
            self.buf = grown;
        }
        &mut self.buf
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `len` incompressible bytes (xorshift from `seed`, not zero).
    pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
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
        p.for_each_chunk(
            &data[..],
            data.len() as u64,
            &mut ChunkWindow::default(),
            |c| {
                streamed.push(c.len());
                Ok(())
            },
        )
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

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_a_reused_window_cut_as_in_memory() {
        let p = ChunkerParams::default();
        let mut window = ChunkWindow::default();
        // Large, then small (the window keeps its size), then one that
        // crosses the single-blob threshold, read in odd-sized pieces.
        for (len, step) in [(19 << 20, 65_537), (1000, 7), (3 << 20, 4093), (0, 1)] {
            let data = pattern(len, len as u64 + 3);
            let mut got = Vec::new();
            let read = p
                .for_each_chunk(
                    Trickle { data: &data, step },
                    len as u64,
                    &mut window,
                    |c| {
                        got.push(c.to_vec());
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(read, len as u64);
            let want: Vec<Vec<u8>> = p
                .cut(&data)
                .iter()
                .map(|&(o, l)| data[o..o + l].to_vec())
                .collect();
            assert_eq!(got, want, "object of {len} bytes");
        }
    }

    /// Long runs without a boundary (zeroes: maximum chunks) between
    /// random data, read in pieces that end anywhere, cut as in memory.
    #[test]
    fn maximum_chunks_and_undecided_tails_cut_as_in_memory() {
        let p = ChunkerParams::default();
        let max = p.max_size as usize;
        let mut data = pattern(3 << 20, 5);
        data.extend(vec![0u8; 2 * max + 12_345]);
        data.extend(pattern(max + 3, 6));
        data.extend(vec![0u8; max - 1]);
        data.extend(pattern(700_001, 7));
        for step in [1 << 20, 999_999, 4096 * 3 + 1, usize::MAX] {
            let mut got = Vec::new();
            let mut window = ChunkWindow::default();
            let trickle = Trickle { data: &data, step };
            p.for_each_chunk(trickle, data.len() as u64, &mut window, |c| {
                got.push(c.len());
                Ok(())
            })
            .unwrap();
            let want: Vec<usize> = p.cut(&data).iter().map(|c| c.1).collect();
            assert_eq!(got, want, "read {step} bytes at a time");
            assert!(want.iter().filter(|&&l| l == max).count() >= 2);
        }
    }

    #[test]
    fn an_object_that_grew_past_the_threshold_is_chunked() {
        let p = ChunkerParams::default();
        let data = pattern(5 << 20, 9);
        let mut sizes = Vec::new();
        // Listed as small; the body is larger.
        p.for_each_chunk(&data[..], 100, &mut ChunkWindow::default(), |c| {
            sizes.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, p.cut(&data).iter().map(|c| c.1).collect::<Vec<_>>());
        assert!(sizes.len() > 1);
    }
}
