//! EventBridge change-event batches: any bytes parse to events or
//! counted malformed records, never a panic; parsed events re-serialise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::changes::eventbridge::{parse_batch, parse_event, to_json};

fuzz_target!(|data: &[u8]| {
    for e in parse_batch(data).events {
        let again = parse_event(to_json(&e)).expect("re-serialised event parses");
        assert!(again.is_some());
    }
});
