//! Config bodies and key files (decoding only: unwrapping runs argon2).
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::config::Config;
use strata_store::crypto::keyfile::KeyFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Config::decode(data) {
        assert_eq!(Config::decode(&c.encode()).expect("re-encoded config decodes"), c);
    }
    if let Ok(k) = KeyFile::decode(data) {
        assert_eq!(k.encode(), data);
    }
});
