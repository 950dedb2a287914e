//! The key-to-path mapper used by restore and mount: a mapped path never
//! leaves the root, every name fits, and the mapping inverts exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Component;
use strata_store::restore::path::{key_to_path, path_to_key, KeyPath};

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    if let Ok(key) = std::str::from_utf8(rest) {
        match key_to_path(key, flag & 1 == 1) {
            Ok(KeyPath::File(p)) => {
                assert!(p.components().all(|c| matches!(c, Component::Normal(n) if n.len() <= 255)), "{key:?} -> {p:?}");
                assert_eq!(path_to_key(&p).as_deref(), Some(key), "{p:?}");
            }
            Ok(KeyPath::Dir(p)) => {
                assert!(p.components().all(|c| matches!(c, Component::Normal(n) if n.len() <= 255)), "{key:?} -> {p:?}");
            }
            Err(_) => assert!(key.is_empty()),
        }
    }
});
