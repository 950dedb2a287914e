//! The key-to-path mapper used by restore: a mapped path never leaves the
//! restore root.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Component;
use strata_store::restore::path::{key_to_path, KeyPath};

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = std::str::from_utf8(data) {
        if let Ok(KeyPath::File(p) | KeyPath::Dir(p)) = key_to_path(key) {
            assert!(p.components().all(|c| matches!(c, Component::Normal(_))), "{key:?} -> {p:?}");
        }
    }
});
