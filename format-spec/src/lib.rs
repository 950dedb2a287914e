//! The Strata format's golden test vectors: their generator (from the
//! engine's encoders, with fixed keys and salts) and a deliberately plain
//! reference decoder ([`reference`]) that shares no code with the engine.
//!
//! The spec is `SPEC.md` beside this crate.

pub mod reference;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use strata_store::chunk::ChunkerParams;
use strata_store::compress::Compression;
use strata_store::config::{Config, LockMode};
use strata_store::crypto::keyfile::{KdfParams, KeyFile};
use strata_store::crypto::{Keys, MasterKey};
use strata_store::format::ObjectKind;
use strata_store::id::{BlobId, ObjectId};
use strata_store::index::{IndexEntry, Segment};
use strata_store::manifest::checkpoint::{Checkpoint, FeedPosition};
use strata_store::manifest::point::{Point, PointStats};
use strata_store::manifest::run::{Page, RunBuilder};
use strata_store::manifest::{Entry, ObjectMeta};
use strata_store::pack::PackBuilder;
use strata_store::sealed;

/// The fixed test master key: bytes 00 01 02 … 1f.
pub fn test_master() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// A fixed salt: 32 copies of `b`.
pub fn salt(b: u8) -> [u8; 32] {
    [b; 32]
}

/// Input pattern used by the vectors: byte i is (i * 7 + seed) mod 251.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + usize::from(seed)) % 251) as u8)
        .collect()
}

/// Where the vector files live.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes(test_master()))
}

/// Every vector file: name -> JSON.
pub fn generate() -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    out.insert("blob_ids.json", blob_ids());
    out.insert("key_file.json", key_file(1, 1));
    out.insert("key_file_4_lanes.json", key_file(3, 4));
    out.insert("config.json", config());
    out.insert("pack.json", pack());
    out.insert("index_segment.json", index_segment());
    out.insert("run_page.json", run_pages());
    out.insert("point.json", point());
    out.insert("checkpoint.json", checkpoint());
    out.insert("pass_state.json", pass_state());
    out.insert("pass_marker.json", pass_marker());
    out.insert("chunking.json", chunking());
    out
}

fn blob_ids() -> Value {
    let k = keys();
    let cases: Vec<Value> = [(0usize, 0u8), (1, 0), (1000, 3), (70000, 9)]
        .iter()
        .map(|&(len, seed)| json!({"len": len, "seed": seed, "blob_id": k.blob_id(&pattern(len, seed)).to_hex()}))
        .collect();
    json!({
        "_comment": "Keyed blake3 blob ids under the test master key (00..1f). Input: pattern(len, seed), byte i = (i*7+seed) mod 251.",
        "master_key": hex::encode(test_master()),
        "cases": cases,
    })
}

/// A key file under the given argon2 costs: one lane and one pass (cheap
/// to check), and the writers' default of 4 lanes (a reader must compute
/// lanes as RFC 9106 does).
fn key_file(t_cost: u32, p_cost: u32) -> Value {
    let params = KdfParams {
        m_cost_kib: 65536,
        t_cost,
        p_cost,
    };
    let kf = KeyFile::wrap(
        &MasterKey::from_bytes(test_master()),
        b"strata test password",
        params,
        salt(0x11),
        [0x22; 16],
        1_790_000_000,
    )
    .expect("valid parameters");
    json!({
        "_comment": format!("Key file wrapping the test master key (00..1f) under password 'strata test password', argon2 salt 32x11, m=65536 KiB t={t_cost} p={p_cost}, vault id 16x22, created 1790000000."),
        "password": "strata test password",
        "master_key": hex::encode(test_master()),
        "vault_id": hex::encode([0x22; 16]),
        "m_cost_kib": 65536, "t_cost": t_cost, "p_cost": p_cost,
        "created_unix_s": 1_790_000_000i64,
        "encoded": hex::encode(kf.encode()),
    })
}

fn config() -> Value {
    let c = Config {
        vault_id: [0x22; 16],
        created_unix_s: 1_790_000_000,
        chunker: ChunkerParams::default(),
        pack_target_size: 16 << 20,
        zstd_level: 3,
        lock_mode: LockMode::Compliance,
        retention_days: 30,
    };
    let sealed = sealed::seal(&keys(), ObjectKind::Config, salt(0x33), &c.encode(), 0);
    json!({
        "_comment": "Config sealed under the test master key with salt 32x33, uncompressed.",
        "body": hex::encode(c.encode()),
        "sealed": hex::encode(sealed),
        "decoded": c,
    })
}

fn pack() -> Value {
    let k = keys();
    let blobs = [
        pattern(0, 0),
        pattern(100, 1),
        b"strata ".repeat(300),
        pattern(5000, 2),
    ];
    let mut b = PackBuilder::new(&k, salt(0x44), 1 << 16);
    for (i, blob) in blobs.iter().enumerate() {
        // The third blob is compressed; the others are stored raw.
        let level = if i == 2 { 3 } else { 0 };
        b.add(k.blob_id(blob), blob, level).expect("small blob");
    }
    let p = b.finish();
    let entries: Vec<Value> = p
        .entries
        .iter()
        .zip(&blobs)
        .map(|(e, blob)| {
            json!({
                "blob_id": e.id.to_hex(), "offset": e.offset, "stored_len": e.stored_len,
                "raw_len": e.raw_len, "compression": e.compression as u8, "plaintext": hex::encode(blob),
            })
        })
        .collect();
    json!({
        "_comment": "Pack with salt 32x44 under the test master key: blobs pattern(0,0), pattern(100,1), 'strata ' x300 (zstd level 3), pattern(5000,2) (raw). The zstd frame is checked by round trip; the rest is byte-exact.",
        "pack_id": p.id.to_hex(),
        "encoded": hex::encode(&p.bytes),
        "entries": entries,
    })
}

fn index_segment() -> Value {
    let k = keys();
    let pack_a = ObjectId([0xaa; 32]);
    let pack_b = ObjectId([0xbb; 32]);
    let mut entries: Vec<IndexEntry> = (0u8..3)
        .map(|i| IndexEntry {
            blob: k.blob_id(&pattern(10, i)),
            pack: if i == 1 { pack_b } else { pack_a },
            offset: 40 + u64::from(i) * 100,
            stored_len: 26,
            raw_len: 10,
            compression: Compression::Raw,
        })
        .collect();
    entries.sort_by_key(|e| e.blob);
    let seg = Segment {
        entries: entries.clone(),
        supersedes: vec![ObjectId([0xcc; 32])],
    };
    let body = seg.encode();
    let sealed = sealed::seal(&k, ObjectKind::IndexSegment, salt(0x55), &body, 0);
    json!({
        "_comment": "Index segment: blobs pattern(10, 0..3) in packs aa.. and bb.., superseding segment cc..; sealed with salt 32x55, uncompressed.",
        "body": hex::encode(&body),
        "sealed": hex::encode(&sealed),
        "segment_id": ObjectId::of(&sealed).to_hex(),
        "entries": entries,
    })
}

fn sample_entries() -> Vec<Entry> {
    vec![
        Entry {
            key: "a/deleted".into(),
            seq: 4,
            object: None,
        },
        Entry {
            key: "a/object".into(),
            seq: 7,
            object: Some(ObjectMeta {
                size: 1234,
                mtime_ns: 1_790_000_000_123_456_789,
                mode: 0o644,
                version_id: "v2".into(),
                etag: "\"9b2cf535f27731c974343645a3985328\"".into(),
                system: vec![("content-type".into(), "application/json".into())],
                user: vec![("owner".into(), "tenant-7".into())],
                tags: vec![("class".into(), "gold".into())],
                chunks: vec![BlobId([1; 32]), BlobId([2; 32])],
            }),
        },
        Entry {
            key: "a/object".into(),
            seq: 3,
            object: Some(ObjectMeta {
                size: 0,
                chunks: vec![BlobId([3; 32])],
                ..Default::default()
            }),
        },
        Entry {
            key: "zé".into(),
            seq: 0,
            object: Some(ObjectMeta::default()),
        },
    ]
}

fn run_pages() -> Value {
    let k = keys();
    let mut n = 0u8;
    let mut b = RunBuilder::new(
        &k,
        0,
        Box::new(move || {
            n += 1;
            salt(0x60 + n)
        }),
    )
    .page_target(100);
    for e in sample_entries() {
        b.push(e).expect("entries in run order");
    }
    let run = b.finish().expect("non-empty run");
    let pages: Vec<Value> = b
        .take_ready()
        .iter()
        .map(|p| {
            let page = Page::open(&k, &p.bytes).expect("fresh page opens");
            json!({"page_id": p.id.to_hex(), "sealed": hex::encode(&p.bytes), "decoded": page})
        })
        .collect();
    json!({
        "_comment": "A run of four entries (a deletion, two versions of one key, a unicode key) with a 100-byte page target, so two leaves and an inner root; page salts 32x61, 32x62, … in the order pages are sealed; uncompressed.",
        "run": run,
        "pages": pages,
    })
}

fn point() -> Value {
    let p = Point {
        seq: 7,
        time_ns: 1_790_000_900_000_000_000,
        committed_ns: 1_790_000_901_500_000_000,
        prev: ObjectId([0x77; 32]),
        stats: PointStats {
            objects: 10,
            bytes: 2000,
            puts: 3,
            deletes: 1,
            new_packs: 1,
            new_stored_bytes: 900,
        },
        runs: vec![strata_store::manifest::run::RunDescriptor {
            root: ObjectId([0x88; 32]),
            height: 1,
            min_seq: 0,
            max_seq: 7,
            entries: 14,
            stored_bytes: 4096,
        }],
        segments: vec![ObjectId([0x99; 32])],
        source: "/data".into(),
    };
    let sealed = sealed::seal(&keys(), ObjectKind::Point, salt(0x70), &p.encode(), 0);
    json!({
        "_comment": "Point 7 sealed with salt 32x70 under the test master key, uncompressed.",
        "name": Point::name(7),
        "body": hex::encode(p.encode()),
        "sealed": hex::encode(sealed),
        "decoded": p,
    })
}

fn checkpoint() -> Value {
    let c = Checkpoint {
        seq: 7,
        feeds: vec![FeedPosition {
            feed: "s3://events/s3-changes/".into(),
            position: "2026/11/27/10/stream-1-2026-11-27-10-14-59-0a1b".into(),
        }],
    };
    let body = c.encode().expect("fits");
    let sealed = sealed::seal(&keys(), ObjectKind::Checkpoint, salt(0x71), &body, 0);
    json!({
        "_comment": "Checkpoint after point 7 sealed with salt 32x71 under the test master key, uncompressed.",
        "name": Checkpoint::name(7),
        "body": hex::encode(body),
        "sealed": hex::encode(sealed),
        "decoded": c,
    })
}

fn pass_state() -> Value {
    use strata_store::manifest::pass::{PartitionState, PassState, Totals};
    use strata_store::manifest::run::RunDescriptor;
    use strata_store::source::KeyRange;
    let s = PassState {
        seq: 4,
        prev: ObjectId([0x44; 32]),
        time_ns: 0,
        source: "s3://source-bucket/".into(),
        partitions: vec![
            PartitionState {
                range: KeyRange {
                    after: String::new(),
                    until: Some("tenant/1".into()),
                },
                done: true,
                cursor: Some("tenant/1".into()),
                totals: Totals {
                    changed: 120,
                    deleted: 2,
                    unchanged: 3000,
                    errors: 0,
                    objects_delta: 118,
                    bytes_delta: -4096,
                },
                runs: vec![RunDescriptor {
                    root: ObjectId([0x55; 32]),
                    height: 0,
                    min_seq: 4,
                    max_seq: 4,
                    entries: 122,
                    stored_bytes: 9000,
                }],
            },
            PartitionState {
                range: KeyRange {
                    after: "tenant/1".into(),
                    until: None,
                },
                done: false,
                cursor: None,
                totals: Totals::default(),
                runs: Vec::new(),
            },
        ],
    };
    let body = s.encode().expect("fits");
    let sealed = sealed::seal(&keys(), ObjectKind::PassState, salt(0x72), &body, 0);
    json!({
        "_comment": "State 2 of the pass committing point 4, sealed with salt 32x72 under the test master key, uncompressed.",
        "name": PassState::name(4, 2),
        "body": hex::encode(body),
        "sealed": hex::encode(sealed),
        "decoded": s,
    })
}

fn pass_marker() -> Value {
    use strata_store::manifest::pass::PassMarker;
    let m = PassMarker {
        seq: 4,
        began_ns: 1_764_233_699_000_000_000,
    };
    let body = m.encode();
    let sealed = sealed::seal(&keys(), ObjectKind::PassMarker, salt(0x73), &body, 0);
    json!({
        "_comment": "Marker of a pass for point 4, sealed with salt 32x73 under the test master key, uncompressed.",
        "name": PassMarker::name(4),
        "body": hex::encode(body),
        "sealed": hex::encode(sealed),
        "decoded": m,
    })
}

fn chunking() -> Value {
    let params = ChunkerParams::default();
    let mut x: u64 = 0x0123_4567_89ab_cdef;
    let data: Vec<u8> = (0..(12 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cuts: Vec<Value> = params
        .cut(&data)
        .iter()
        .map(|&(o, l)| json!([o, l]))
        .collect();
    json!({
        "_comment": "FastCDC v2020 cut points with the default parameters over 12 MiB of xorshift64 output (state 0x0123456789abcdef; x ^= x<<13; x ^= x>>7; x ^= x<<17; byte = low 8 bits).",
        "params": params,
        "len": data.len(),
        "cuts": cuts,
    })
}
