//! Time-index entry body decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::manifest::point::Point;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Point::decode(data) {
        assert_eq!(Point::decode(&p.encode()).expect("re-encoded point decodes"), p);
    }
});
