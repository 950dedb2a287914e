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

/// SIGKILL at many random moments of ingests (`STRATA_CRASH_KILLS`, 50 by
/// default), with the source changing between passes: after every kill
/// the vault opens and its points chain; in the end every point verifies
/// and the last restores exactly, with one entry per object.
#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("STRATA_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(77);
    generate_tree(&src, 78, 150, 2);
    // How long an uninterrupted pass takes, to spread the kills over it.
    let probe = env.path("probe-vault");
    let t = Instant::now();
    let mut c = env.cmd(&["ingest", src.to_str().unwrap()]);
    c.env("STRATA_VAULT", &probe);
    env.ok(&["--vault", probe.to_str().unwrap(), "init"]);
    assert!(c.output().unwrap().status.success());
    let pass = t.elapsed();

    let mut committed_points = 0;
    for k in 0..kills {
        if k % 10 == 5 {
            // The source moves on between some passes.
            write_file(
                &src,
                &format!("changes/{k}.txt"),
                &rng.bytes(5000, true),
                0o644,
            );
            let files = list_files(&src);
            let victim = &files[rng.below(files.len() as u64) as usize];
            std::fs::remove_file(src.join(victim)).unwrap();
        }
        let mut child = env
            .cmd(&["--quiet", "ingest", src.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = pass.mul_f64(rng.below(1000) as f64 / 800.0);
        std::thread::sleep(wait);
        let _ = child.kill(); // SIGKILL; it may have finished already
        let status = child.wait().unwrap();
        // Nothing committed is lost: points only ever grow, and chain.
        let points = env.json(&["snapshots"]);
        let n = points.as_array().unwrap().len();
        assert!(
            n >= committed_points,
            "kill {k}: points went from {committed_points} to {n}"
        );
        if status.success() {
            assert_eq!(
                n,
                committed_points + 1,
                "kill {k}: a finished pass commits one point"
            );
        }
        committed_points = n;
        if k % 10 == 9 {
            let v = env.json(&["verify"]);
            assert_eq!(v["clean"], true, "after kill {k}: {v}");
        }
    }
    // The rerun completes; everything verifies and restores exactly.
    let s = env.json(&["ingest", src.to_str().unwrap()]);
    let snap = snapshot(&src);
    assert_eq!(s["objects"].as_u64().unwrap() as usize, snap.len(), "{s}");
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    let listed = env.ok(&["--json", "ls"]);
    let keys: Vec<String> = listed
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut dedup = keys.clone();
    dedup.dedup();
    assert_eq!(keys, dedup, "an object listed twice");
    assert_eq!(keys.len(), snap.len());
    let target = env.path("restore");
    env.ok(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));
    eprintln!("{kills} kills over passes of {pass:?}; {committed_points} points committed");
}
