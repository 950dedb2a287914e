//! The local index cache file: a damaged file is refused, never trusted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::index::cache::IndexCache;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("strata-fuzz-cache-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("index.cache");
    if std::fs::write(&path, data).is_ok() {
        if let Ok(c) = IndexCache::open(&path) {
            for e in c.iter() {
                let _ = e;
            }
        }
    }
});
