//! Dedup: identical content is stored once; unchanged passes write no
//! packs; a 1% change writes about 1%.

use strata_tests::*;

#[test]
fn same_content_under_many_keys_is_stored_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let blob = Rng::new(7).bytes(200 << 10, false);
    for i in 0..50 {
        write_file(&src, &format!("copy/{i}"), &blob, 0o644);
    }
    let s = env.json(&["ingest", src.to_str().unwrap()]);
    assert_eq!(s["objects"], 50);
    assert_eq!(s["new_blobs"], 1, "{s}");
    let stored = s["new_stored_bytes"].as_u64().unwrap();
    assert!(
        stored < (200 << 10) + 4096,
        "stored {stored} bytes for one 200 KiB blob"
    );
}

#[test]
fn unchanged_pass_writes_no_packs_and_small_change_writes_little() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(3);
    for i in 0..400 {
        write_file(
            &src,
            &format!("f/{i:04}"),
            &rng.bytes(32 << 10, false),
            0o644,
        );
    }
    let first = env.json(&["ingest", src.to_str().unwrap()]);
    let total = first["new_stored_bytes"].as_u64().unwrap();

    let second = env.json(&["ingest", src.to_str().unwrap()]);
    assert_eq!(second["packs_written"], 0, "{second}");
    assert_eq!(second["changed"], 0);
    assert_eq!(second["unchanged"], 400);

    for i in 0..4 {
        write_file(
            &src,
            &format!("f/{i:04}"),
            &rng.bytes(32 << 10, false),
            0o644,
        );
    }
    let third = env.json(&["ingest", src.to_str().unwrap()]);
    assert_eq!(third["changed"], 4);
    let written = third["new_stored_bytes"].as_u64().unwrap();
    // 1% of the files: about 1% of the bytes (plus pack framing).
    assert!(written * 100 < total * 2, "wrote {written} of {total}");
    assert!(written * 100 > total / 2, "wrote {written} of {total}");
}
