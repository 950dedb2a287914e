//! Pass state body decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::manifest::pass::PassState;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = PassState::decode(data) {
        let again = s.encode().expect("a decoded pass state re-encodes");
        assert_eq!(PassState::decode(&again).expect("re-encoded pass state decodes"), s);
    }
});
