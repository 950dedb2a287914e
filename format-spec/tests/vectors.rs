//! The golden vectors: no drift from the code, the engine decodes them to
//! the stated values, and the reference decoder (from SPEC.md alone)
//! agrees.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use serde_json::Value;
use strata_format_spec::reference::{self, RefKeys};
use strata_format_spec::{generate, test_master, vectors_dir};
use strata_store::crypto::keyfile::KeyFile;
use strata_store::crypto::{Keys, MasterKey};
use strata_store::format::ObjectKind;
use strata_store::manifest::checkpoint::Checkpoint;
use strata_store::manifest::point::Point;
use strata_store::manifest::run::Page;
use strata_store::pack::PackView;
use strata_store::{id::ObjectId, index::Segment, sealed};

fn load(name: &str) -> Value {
    let text =
        std::fs::read_to_string(vectors_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes(test_master()))
}

#[test]
fn checked_in_vectors_match_a_fresh_generation() {
    for (name, fresh) in generate() {
        let on_disk = load(name);
        assert!(
            on_disk == fresh,
            "{name} differs from a fresh generation: if the format changed on purpose, update SPEC.md, bump the version and run `cargo run -p strata-format-spec --bin generate`"
        );
    }
}

#[test]
fn blob_ids() {
    let v = load("blob_ids.json");
    let r = RefKeys::new(&test_master());
    for c in v["cases"].as_array().unwrap() {
        let data = strata_format_spec::pattern(
            c["len"].as_u64().unwrap() as usize,
            c["seed"].as_u64().unwrap() as u8,
        );
        assert_eq!(
            keys().blob_id(&data).to_hex(),
            c["blob_id"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(r.blob_id(&data)),
            c["blob_id"].as_str().unwrap()
        );
    }
}

#[test]
fn key_files() {
    for name in ["key_file.json", "key_file_4_lanes.json"] {
        let v = load(name);
        let bytes = hex(&v["encoded"]);
        let pw = v["password"].as_str().unwrap().as_bytes();
        let kf = KeyFile::decode(&bytes).unwrap();
        assert_eq!(hex::encode(kf.vault_id), v["vault_id"].as_str().unwrap());
        assert_eq!(u64::from(kf.params.p_cost), v["p_cost"].as_u64().unwrap());
        assert_eq!(u64::from(kf.params.t_cost), v["t_cost"].as_u64().unwrap());
        assert!(kf.unwrap_key(b"wrong").is_err());
        kf.unwrap_key(pw).unwrap();
        assert_eq!(
            reference::unwrap_key_file(&bytes, pw).unwrap(),
            test_master(),
            "{name}"
        );
    }
}

#[test]
fn config() {
    let v = load("config.json");
    let sealed_bytes = hex(&v["sealed"]);
    let body = sealed::open(&keys(), ObjectKind::Config, &sealed_bytes).unwrap();
    assert_eq!(body, hex(&v["body"]));
    let c = strata_store::config::Config::decode(&body).unwrap();
    assert_eq!(serde_json::to_value(&c).unwrap(), v["decoded"]);
    let r = reference::open_sealed(&RefKeys::new(&test_master()), &sealed_bytes, 1).unwrap();
    assert_eq!(r, body);
}

#[test]
fn pack() {
    let v = load("pack.json");
    let bytes = hex(&v["encoded"]);
    let id: ObjectId = v["pack_id"].as_str().unwrap().parse().unwrap();
    let k = keys();
    let view = PackView::open(&k, &bytes, Some(id)).unwrap();
    let refblobs = reference::read_pack(&RefKeys::new(&test_master()), &bytes).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(view.entries.len(), entries.len());
    for ((e, want), rb) in view.entries.iter().zip(entries).zip(&refblobs) {
        assert_eq!(e.id.to_hex(), want["blob_id"].as_str().unwrap());
        assert_eq!(e.offset, want["offset"].as_u64().unwrap());
        assert_eq!(view.blob(&k, e).unwrap(), hex(&want["plaintext"]));
        assert_eq!(rb.5, hex(&want["plaintext"]));
        assert_eq!(rb.1, e.offset);
    }
}

#[test]
fn index_segment() {
    let v = load("index_segment.json");
    let sealed_bytes = hex(&v["sealed"]);
    assert_eq!(
        ObjectId::of(&sealed_bytes).to_hex(),
        v["segment_id"].as_str().unwrap()
    );
    let body = sealed::open(&keys(), ObjectKind::IndexSegment, &sealed_bytes).unwrap();
    let seg = Segment::decode(&body).unwrap();
    assert_eq!(serde_json::to_value(&seg.entries).unwrap(), v["entries"]);
    let (_, ref_entries) = reference::segment(
        &reference::open_sealed(&RefKeys::new(&test_master()), &sealed_bytes, 4).unwrap(),
    );
    for (e, r) in seg.entries.iter().zip(&ref_entries) {
        assert_eq!((e.blob.0, e.pack.0, e.offset), *r);
    }
}

#[test]
fn run_pages() {
    let v = load("run_page.json");
    let r = RefKeys::new(&test_master());
    let mut leaf_keys = Vec::new();
    for p in v["pages"].as_array().unwrap() {
        let bytes = hex(&p["sealed"]);
        assert_eq!(
            ObjectId::of(&bytes).to_hex(),
            p["page_id"].as_str().unwrap()
        );
        let page = Page::open(&keys(), &bytes).unwrap();
        assert_eq!(serde_json::to_value(&page).unwrap(), p["decoded"]);
        let body = reference::open_sealed(&r, &bytes, 5).unwrap();
        if body[0] == 0 {
            leaf_keys.extend(reference::leaf_keys(&body));
        }
    }
    let keys_only: Vec<(&str, u64)> = leaf_keys.iter().map(|(k, s)| (k.as_str(), *s)).collect();
    assert_eq!(
        keys_only,
        [
            ("a/deleted", 4),
            ("a/object", 7),
            ("a/object", 3),
            ("zé", 0)
        ]
    );
}

#[test]
fn point() {
    let v = load("point.json");
    let sealed_bytes = hex(&v["sealed"]);
    let body = sealed::open(&keys(), ObjectKind::Point, &sealed_bytes).unwrap();
    let p = Point::decode(&body).unwrap();
    assert_eq!(serde_json::to_value(&p).unwrap(), v["decoded"]);
    assert_eq!(Point::name(p.seq), v["name"].as_str().unwrap());
    let (seq, time, prev, roots, source) = reference::point(
        &reference::open_sealed(&RefKeys::new(&test_master()), &sealed_bytes, 6).unwrap(),
    );
    assert_eq!(
        (seq, time, prev, source.as_str()),
        (p.seq, p.time_ns, p.prev.0, p.source.as_str())
    );
    assert_eq!(roots, vec![p.runs[0].root.0]);
}

#[test]
fn checkpoint() {
    let v = load("checkpoint.json");
    let sealed_bytes = hex(&v["sealed"]);
    let body = sealed::open(&keys(), ObjectKind::Checkpoint, &sealed_bytes).unwrap();
    let c = Checkpoint::decode(&body).unwrap();
    assert_eq!(serde_json::to_value(&c).unwrap(), v["decoded"]);
    assert_eq!(Checkpoint::name(c.seq), v["name"].as_str().unwrap());
    let (seq, feeds) = reference::checkpoint(
        &reference::open_sealed(&RefKeys::new(&test_master()), &sealed_bytes, 7).unwrap(),
    );
    assert_eq!(seq, c.seq);
    assert_eq!(
        feeds,
        c.feeds
            .iter()
            .map(|f| (f.feed.clone(), f.position.clone()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn pass_state() {
    use strata_store::manifest::pass::PassState;
    let v = load("pass_state.json");
    let sealed_bytes = hex(&v["sealed"]);
    let body = sealed::open(&keys(), ObjectKind::PassState, &sealed_bytes).unwrap();
    let s = PassState::decode(&body).unwrap();
    assert_eq!(serde_json::to_value(&s).unwrap(), v["decoded"]);
    assert_eq!(PassState::name(s.seq, 2), v["name"].as_str().unwrap());
    let (seq, prev, source, parts) = reference::pass_state(
        &reference::open_sealed(&RefKeys::new(&test_master()), &sealed_bytes, 8).unwrap(),
    );
    assert_eq!(
        (seq, prev, source.as_str()),
        (s.seq, s.prev.0, s.source.as_str())
    );
    let ours: Vec<_> = s
        .partitions
        .iter()
        .map(|p| {
            (
                p.range.after.clone(),
                p.range.until.clone(),
                p.done,
                p.cursor.clone(),
                p.runs.iter().map(|r| r.root.0).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(parts, ours);
}

#[test]
fn pass_marker() {
    use strata_store::manifest::pass::PassMarker;
    let v = load("pass_marker.json");
    let sealed_bytes = hex(&v["sealed"]);
    let body = sealed::open(&keys(), ObjectKind::PassMarker, &sealed_bytes).unwrap();
    let m = PassMarker::decode(&body).unwrap();
    assert_eq!(serde_json::to_value(m).unwrap(), v["decoded"]);
    assert_eq!(PassMarker::name(m.seq), v["name"].as_str().unwrap());
    assert_eq!(
        reference::pass_marker(
            &reference::open_sealed(&RefKeys::new(&test_master()), &sealed_bytes, 9).unwrap()
        ),
        (m.seq, m.began_ns)
    );
    // Sealed as a marker, it opens as nothing else.
    assert!(sealed::open(&keys(), ObjectKind::PassState, &sealed_bytes).is_err());
}

#[test]
fn every_single_bit_flip_in_every_sealed_vector_is_detected() {
    let k = keys();
    for (file, field, kind) in [
        ("config.json", "sealed", ObjectKind::Config),
        ("point.json", "sealed", ObjectKind::Point),
        ("checkpoint.json", "sealed", ObjectKind::Checkpoint),
        ("pass_state.json", "sealed", ObjectKind::PassState),
        ("pass_marker.json", "sealed", ObjectKind::PassMarker),
        ("index_segment.json", "sealed", ObjectKind::IndexSegment),
    ] {
        let bytes = hex(&load(file)[field]);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                sealed::open(&k, kind, &bad).is_err(),
                "{file}: flip of bit {bit} undetected"
            );
        }
    }
}
