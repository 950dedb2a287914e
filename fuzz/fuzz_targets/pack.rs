//! Pack decoding: footer, trailer and every blob record of arbitrary bytes
//! under the fixed test key. Must never panic or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::crypto::{Keys, MasterKey};
use strata_store::pack::{trailer_range, PackView};

fuzz_target!(|data: &[u8]| {
    let keys = Keys::derive(&MasterKey::from_bytes(std::array::from_fn(|i| i as u8)));
    let _ = trailer_range(&data[data.len().saturating_sub(8)..], data.len() as u64);
    if let Ok(view) = PackView::open(&keys, data, None) {
        for e in view.entries.clone() {
            let _ = view.blob(&keys, &e);
        }
    }
});
