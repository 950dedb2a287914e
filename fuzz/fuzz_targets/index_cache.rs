//! The local index cache file: a damaged file is refused or answers only
//! what was written. The input is either a whole file, or (first byte 0) a
//! count of entries for a valid file and byte flips to apply to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::compress::Compression;
use strata_store::id::{BlobId, ObjectId};
use strata_store::index::cache::IndexCache;
use strata_store::index::IndexEntry;

fn entry(i: u32) -> IndexEntry {
    let mut blob = [0u8; 32];
    let mut n = i.to_le_bytes();
    n.reverse(); // sorted as numbers
    blob[..4].copy_from_slice(&n);
    IndexEntry {
        blob: BlobId(blob),
        pack: ObjectId([(i % 5) as u8; 32]),
        offset: u64::from(i) * 40,
        stored_len: 40,
        raw_len: 24,
        compression: Compression::Raw,
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("strata-fuzz-cache-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("index.cache");
    let written = match data {
        [0, hi, lo, flips @ ..] => {
            let n = u32::from(u16::from_le_bytes([*lo, *hi]) % 1500);
            let entries: Vec<IndexEntry> = (0..n).map(entry).collect();
            if IndexCache::empty()
                .add_layer(&path, &[ObjectId([1; 32])], &[], &entries)
                .is_err()
            {
                return;
            }
            let Ok(mut bytes) = std::fs::read(&path) else {
                return;
            };
            for f in flips.chunks_exact(5) {
                let at = u32::from_le_bytes([f[0], f[1], f[2], f[3]]) as usize % bytes.len();
                bytes[at] ^= f[4];
            }
            if std::fs::write(&path, &bytes).is_err() {
                return;
            }
            n
        }
        _ => {
            if std::fs::write(&path, data).is_err() {
                return;
            }
            0
        }
    };
    let Ok(c) = IndexCache::open(&path) else {
        return;
    };
    for i in 0..written + 50 {
        let found = c.lookup(&entry(i).blob);
        assert!(found.is_none() || (i < written && found == Some(entry(i))));
    }
    for e in c.iter().flatten() {
        let i = u32::from_le_bytes({
            let mut n = [e.blob.0[0], e.blob.0[1], e.blob.0[2], e.blob.0[3]];
            n.reverse();
            n
        });
        assert!(written == 0 || e == entry(i));
    }
});
