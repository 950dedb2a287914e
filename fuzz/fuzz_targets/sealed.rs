//! Sealed-object opening (header, authentication, decompression cap) for
//! every kind, under the fixed test key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::crypto::{Keys, MasterKey};
use strata_store::format::ObjectKind;
use strata_store::sealed;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(&MasterKey::from_bytes(std::array::from_fn(|i| i as u8)));
    for kind in [ObjectKind::Config, ObjectKind::IndexSegment, ObjectKind::RunPage, ObjectKind::Point] {
        let _ = sealed::open(&keys, kind, data);
    }
});
