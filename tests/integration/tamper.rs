//! Tampering a writer without the keys could do, or a disk could: bit
//! flips in every kind of object, lying lengths, decompression bombs,
//! blobs moved between packs or ids, replayed/reordered/removed points.
//! Every one is an error naming what is wrong; nothing panics.
//! (`STRATA_TAMPER_FLIPS` raises the flips per kind for a longer run.)

use strata_store::compress::decompress;
use strata_store::crypto::{Keys, MasterKey};
use strata_store::format::ObjectKind;
use strata_store::id::BlobId;
use strata_store::manifest::point::Point;
use strata_store::pack::{trailer_range, PackBuilder, PackKey, PackView, FOOTER_LEN};
use strata_store::sealed;
use strata_tests::*;

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes([7; 32]))
}

fn flips() -> usize {
    std::env::var("STRATA_TAMPER_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// A pack of a few blobs, and the blobs.
fn pack(keys: &Keys, rng: &mut Rng) -> (Vec<u8>, Vec<(BlobId, Vec<u8>)>) {
    // A fresh salt per pack, as the packer draws one.
    let salt: [u8; 32] = std::array::from_fn(|_| rng.below(256) as u8);
    let mut b = PackBuilder::new(keys, salt, 1 << 20);
    let mut blobs = Vec::new();
    for i in 0..5 {
        let data = rng.bytes(2000 + i * 500, i % 2 == 0);
        let id = keys.blob_id(&data);
        b.add(id, &data, 3).unwrap();
        blobs.push((id, data));
    }
    (b.finish().bytes.to_vec(), blobs)
}

/// Every blob of a pack reads back intact, or the pack is refused.
fn pack_reads_intact(keys: &Keys, bytes: &[u8], blobs: &[(BlobId, Vec<u8>)]) -> bool {
    let Ok(view) = PackView::open(keys, bytes, None) else {
        return false;
    };
    if view.entries.len() != blobs.len() {
        return false;
    }
    view.entries.iter().all(|e| {
        view.blob(keys, e)
            .is_ok_and(|d| blobs.iter().any(|(id, b)| *id == e.id && *b == d))
    })
}

#[test]
fn bit_flips_in_every_kind_of_object_are_detected() {
    let k = keys();
    let mut rng = Rng::new(99);
    let (packed, blobs) = pack(&k, &mut rng);
    assert!(pack_reads_intact(&k, &packed, &blobs));
    let point = Point {
        seq: 3,
        time_ns: 1,
        committed_ns: 2,
        prev: Default::default(),
        stats: Default::default(),
        runs: vec![],
        segments: vec![],
        source: "/data".into(),
    };
    let sealed_point = sealed::seal(&k, ObjectKind::Point, [1; 32], &point.encode(), 0);
    let sealed_segment = sealed::seal(
        &k,
        ObjectKind::IndexSegment,
        [2; 32],
        &rng.bytes(3000, true),
        3,
    );
    let sealed_page = sealed::seal(&k, ObjectKind::RunPage, [3; 32], &rng.bytes(5000, true), 3);
    let n = flips();
    for i in 0..n {
        let bit = |len: usize, rng: &mut Rng| rng.below(len as u64 * 8) as usize;
        let mut p = packed.clone();
        let b = bit(p.len(), &mut rng);
        p[b / 8] ^= 1 << (b % 8);
        // Whatever a flip hits (header, record, trailer, footer), no blob
        // comes back wrong; the pack's name (its hash) changes too.
        assert!(
            !pack_reads_intact(&k, &p, &blobs),
            "flip {i} at bit {b} of the pack undetected"
        );
        for (kind, bytes) in [
            (ObjectKind::Point, &sealed_point),
            (ObjectKind::IndexSegment, &sealed_segment),
            (ObjectKind::RunPage, &sealed_page),
        ] {
            let mut t = bytes.clone();
            let b = bit(t.len(), &mut rng);
            t[b / 8] ^= 1 << (b % 8);
            assert!(
                sealed::open(&k, kind, &t).is_err(),
                "{kind:?}: flip at bit {b} undetected"
            );
        }
    }
}

#[test]
fn bit_flips_in_key_files_never_unwrap() {
    use strata_store::crypto::keyfile::{KdfParams, KeyFile};
    let master = MasterKey::from_bytes([3; 32]);
    let cheap = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };
    let kf = KeyFile::wrap_cheap(&master, b"pw", cheap, [4; 32]).unwrap();
    let bytes = kf.encode();
    assert!(KeyFile::decode(&bytes).unwrap().unwrap_key(b"pw").is_ok());
    let mut rng = Rng::new(17);
    for _ in 0..flips() {
        let mut t = bytes.clone();
        let b = rng.below(t.len() as u64 * 8) as usize;
        t[b / 8] ^= 1 << (b % 8);
        // Params may now ask for absurd costs: decoding bounds them.
        let opened = KeyFile::decode(&t).ok().and_then(|k| {
            let p = k.params;
            if p.m_cost_kib > 1 << 16 || p.t_cost > 4 {
                None // a real reader would spend that; the AEAD still fails
            } else {
                k.unwrap_key(b"pw").ok()
            }
        });
        assert!(
            opened.is_none(),
            "flip at bit {b} of a key file still unwraps"
        );
    }
}

#[test]
fn bit_flips_in_key_files_and_config_are_refused() {
    // Through the CLI: a flipped key file or config never opens the vault.
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_file(&src, "a", b"x", 0o644);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let key = list_files(&env.vault().join("keys"))[0].clone();
    let key_path = env.vault().join("keys").join(&key);
    let config_path = env.vault().join("config");
    let mut rng = Rng::new(5);
    for path in [&key_path, &config_path] {
        let original = std::fs::read(path).unwrap();
        for _ in 0..6 {
            let mut t = original.clone();
            let b = rng.below(t.len() as u64 * 8) as usize;
            t[b / 8] ^= 1 << (b % 8);
            std::fs::write(path, &t).unwrap();
            let out = env.run(&["ls"]);
            assert!(
                matches!(out.status.code(), Some(3 | 4)),
                "{} flipped at bit {b}: {:?} {}",
                path.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(path, &original).unwrap();
    }
    env.ok(&["ls"]);
}

#[test]
fn lying_trailer_lengths_are_errors_not_allocations() {
    let k = keys();
    let (packed, _) = pack(&k, &mut Rng::new(3));
    let n = packed.len();
    for lie in [
        0u32,
        1,
        19,
        u32::MAX,
        (n as u32) - 8,
        n as u32,
        n as u32 + 1000,
    ] {
        let mut p = packed.clone();
        p[n - FOOTER_LEN..n - FOOTER_LEN + 4].copy_from_slice(&lie.to_le_bytes());
        let footer = &p[n - FOOTER_LEN..];
        if let Ok(range) = trailer_range(footer, n as u64) {
            assert!(
                range.end <= n as u64,
                "trailer range past the pack for {lie}"
            );
        }
        assert!(
            PackView::open(&k, &p, None).is_err(),
            "trailer length {lie} accepted"
        );
    }
    // Truncated packs: every prefix is refused.
    for cut in [0, 1, 39, 40, n / 2, n - 9, n - 1] {
        assert!(
            PackView::open(&k, &packed[..cut], None).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_decompression_bomb_is_an_error() {
    // 64 MiB of zeros compress to a few KiB; a record claiming 4 KiB must
    // not expand past it.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    assert!(bomb.len() < 64 << 10);
    let e = decompress(&bomb, 4096).unwrap_err();
    assert!(e.to_string().contains("4096"), "{e}");
}

#[test]
fn a_blob_moved_to_another_pack_or_id_is_rejected() {
    let k = keys();
    let mut rng = Rng::new(4);
    let (a, blobs_a) = pack(&k, &mut rng);
    let (b, _) = pack(&k, &mut rng);
    let view_a = PackView::open(&k, &a, None).unwrap();
    let view_b = PackView::open(&k, &b, None).unwrap();
    let ea = view_a.entries[1];
    let record = &a[ea.offset as usize..ea.offset as usize + ea.stored_len as usize];
    // Read through pack B's key (its salt), as if moved there.
    let key_b = PackKey::open(&k, &b[..40]).unwrap();
    assert!(
        key_b.open_blob(&k, &ea, record).is_err(),
        "moved between packs"
    );
    // Same pack, but the index claims another id for it.
    let key_a = PackKey::open(&k, &a[..40]).unwrap();
    let mut other = ea;
    other.id = blobs_a[0].0;
    assert!(
        key_a.open_blob(&k, &other, record).is_err(),
        "under another id"
    );
    // At another offset of the same pack.
    let mut moved = ea;
    moved.offset = view_a.entries[0].offset;
    assert!(
        key_a.open_blob(&k, &moved, record).is_err(),
        "at another offset"
    );
    assert_eq!(key_a.open_blob(&k, &ea, record).unwrap(), blobs_a[1].1);
    drop(view_b);
}

#[test]
fn replayed_reordered_and_removed_points_are_reported() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..4 {
        write_file(&src, &format!("f{i}"), b"x", 0o644);
        env.ok(&["ingest", src.to_str().unwrap()]);
    }
    let points = env.vault().join("points");
    let name = |s: u64| points.join(format!("{s:016x}"));
    let original: Vec<Vec<u8>> = (0..4).map(|s| std::fs::read(name(s)).unwrap()).collect();
    let check = |what: &str, needle: &str| {
        let out = env.run(&["--json", "verify"]);
        assert_eq!(out.status.code(), Some(3), "{what}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(needle), "{what}: {text}");
    };
    // Replayed: point 1's bytes under name 2.
    std::fs::write(name(2), &original[1]).unwrap();
    check("replay", "replayed");
    // Reordered: 1 and 2 swapped.
    std::fs::write(name(2), &original[1]).unwrap();
    std::fs::write(name(1), &original[2]).unwrap();
    check("reorder", "replayed");
    // Removed: point 2 gone.
    std::fs::write(name(1), &original[1]).unwrap();
    std::fs::remove_file(name(2)).unwrap();
    check("removal", "missing");
    std::fs::write(name(2), &original[2]).unwrap();
    assert_eq!(env.json(&["verify"])["clean"], true);
}
