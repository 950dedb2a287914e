//! TIME arguments (`latest`, `#SEQ`, RFC 3339): any string parses or is a
//! clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::time::PointSelector;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = PointSelector::parse(s);
    }
});
