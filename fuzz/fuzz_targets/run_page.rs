//! Run page body decoding (leaf entries and inner children).
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::manifest::run::Page;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = Page::decode(data) {
        assert_eq!(Page::decode(&page.encode()).expect("re-encoded page decodes"), page);
    }
});
