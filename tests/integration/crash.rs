//! An ingest killed mid-way, then rerun: nothing committed is lost, the
//! packs already uploaded are indexed instead of uploaded again, and the
//! final point verifies and restores exactly.

use std::time::{Duration, Instant};

use strata_tests::*;

#[test]
fn killed_ingest_resumes_without_reuploading() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(21);
    for i in 0..120 {
        write_file(
            &src,
            &format!("big/{i:03}.bin"),
            &rng.bytes(1 << 20, false),
            0o644,
        );
    }
    let snap = snapshot(&src);
    let total: u64 = snap.values().map(|v| v.0.len() as u64).sum();

    let mut child = env
        .cmd(&["ingest", "--workers", "1", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    let packs_dir = env.vault().join("packs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    while Instant::now() < deadline {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if packs_dir.exists() && list_files(&packs_dir).len() >= 20 {
            child.kill().unwrap();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.wait();
    assert!(
        killed,
        "the ingest finished before it could be killed; make the data larger"
    );
    let points_dir = env.vault().join("points");
    assert!(
        !points_dir.exists() || list_files(&points_dir).is_empty(),
        "a killed pass committed a point"
    );
    let packs_before = list_files(&packs_dir).len();

    let s = env.json(&["ingest", src.to_str().unwrap()]);
    assert!(
        s["recovered_packs"].as_u64().unwrap() >= packs_before as u64 - 1,
        "{s}"
    );
    let stored_after: u64 = list_files(&packs_dir)
        .iter()
        .map(|p| std::fs::metadata(packs_dir.join(p)).unwrap().len())
        .sum();
    assert!(
        stored_after < total + total / 10,
        "stored {stored_after} bytes for {total}: data uploaded twice"
    );

    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    let target = env.path("restore");
    env.ok(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));
}
