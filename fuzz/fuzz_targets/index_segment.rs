//! Index segment body decoding; a decoded segment re-encodes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::index::Segment;

fuzz_target!(|data: &[u8]| {
    if let Ok(seg) = Segment::decode(data) {
        let again = Segment::decode(&seg.encode()).expect("re-encoded segment decodes");
        assert_eq!(again, seg);
    }
});
