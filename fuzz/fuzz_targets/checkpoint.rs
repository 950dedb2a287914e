//! Change-feed checkpoint body decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::manifest::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Checkpoint::decode(data) {
        let again = c.encode().expect("a decoded checkpoint re-encodes");
        assert_eq!(Checkpoint::decode(&again).expect("re-encoded checkpoint decodes"), c);
    }
});
