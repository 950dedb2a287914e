//! Pass state and pass marker body decoding (one target: they share a
//! prefix in the vault and a module).
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::manifest::pass::{PassMarker, PassState};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = PassState::decode(data) {
        let again = s.encode().expect("a decoded pass state re-encodes");
        assert_eq!(PassState::decode(&again).expect("re-encoded pass state decodes"), s);
    }
    if let Ok(m) = PassMarker::decode(data) {
        assert_eq!(PassMarker::decode(&m.encode()).expect("re-encoded marker decodes"), m);
    }
});
