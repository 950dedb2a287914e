//! Every decoder over random bytes and over mutated golden vectors: an
//! error or a value, never a panic (the CI-sized cousin of `fuzz/`).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use strata_store::config::Config;
use strata_store::crypto::keyfile::KeyFile;
use strata_store::crypto::{Keys, MasterKey};
use strata_store::format::ObjectKind;
use strata_store::index::Segment;
use strata_store::manifest::checkpoint::Checkpoint;
use strata_store::manifest::point::Point;
use strata_store::manifest::run::Page;
use strata_store::pack::PackView;
use strata_store::restore::path::key_to_path;
use strata_store::sealed;

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes(std::array::from_fn(|i| i as u8)))
}

fn vector_bytes() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
        collect_hex(&v, &mut out);
    }
    out
}

fn collect_hex(v: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if ["encoded", "sealed", "body"].contains(&k.as_str()) {
                    if let Some(b) = v.as_str().and_then(|s| hex::decode(s).ok()) {
                        out.push(b);
                    }
                } else {
                    collect_hex(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_hex(x, out)),
        _ => {}
    }
}

fn decode_everything(data: &[u8]) {
    let k = keys();
    if let Ok(view) = PackView::open(&k, data, None) {
        for e in view.entries.clone() {
            let _ = view.blob(&k, &e);
        }
    }
    for kind in [
        ObjectKind::Config,
        ObjectKind::IndexSegment,
        ObjectKind::RunPage,
        ObjectKind::Point,
        ObjectKind::Checkpoint,
        ObjectKind::PassState,
        ObjectKind::PassMarker,
    ] {
        let _ = sealed::open(&k, kind, data);
    }
    let _ = Segment::decode(data);
    let _ = Page::decode(data);
    let _ = Point::decode(data);
    let _ = Checkpoint::decode(data);
    let _ = strata_store::manifest::pass::PassState::decode(data);
    let _ = strata_store::manifest::pass::PassMarker::decode(data);
    let _ = strata_store::changes::eventbridge::parse_batch(data);
    let _ = Config::decode(data);
    let _ = KeyFile::decode(data);
    let _ = key_to_path(&String::from_utf8_lossy(data), data.first() == Some(&0));
}

#[test]
fn mutated_vectors_never_panic() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for v in vector_bytes() {
        decode_everything(&v);
        for _ in 0..200 {
            let mut m = v.clone();
            match next() % 4 {
                0 if !m.is_empty() => {
                    let i = (next() as usize) % m.len();
                    m[i] ^= 1 << (next() % 8);
                }
                1 => m.truncate((next() as usize) % (v.len() + 1)),
                2 if !m.is_empty() => {
                    // Plant a huge little-endian count somewhere.
                    let i = (next() as usize) % m.len();
                    for (j, b) in [0xff, 0xff, 0xff, 0x7f].iter().enumerate() {
                        if let Some(slot) = m.get_mut(i + j) {
                            *slot = *b;
                        }
                    }
                }
                _ => m.extend((0..(next() % 64)).map(|_| next() as u8)),
            }
            decode_everything(&m);
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&data);
    }
}
