//! Flipped bytes in a pack, an index segment and a run page: verify names
//! the damaged object (exit 3); objects not affected still restore.

use std::path::{Path, PathBuf};

use strata_tests::*;

fn flip(path: &Path, at_fraction: f64) {
    let mut b = std::fs::read(path).unwrap();
    let i = ((b.len() as f64 * at_fraction) as usize).min(b.len() - 1);
    b[i] ^= 0x40;
    // Vault files are written read-only by nobody in particular; replace in place.
    std::fs::write(path, b).unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = list_files(dir).into_iter().map(|r| dir.join(r)).collect();
    v.sort();
    v
}

#[test]
fn flipped_pack_byte_is_reported_and_the_rest_restores() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(11);
    for i in 0..60 {
        write_file(
            &src,
            &format!("d/{i:03}"),
            &rng.bytes(40 << 10, false),
            0o644,
        );
    }
    let snap = snapshot(&src);
    env.ok(&["ingest", src.to_str().unwrap()]);
    assert_eq!(env.json(&["verify", "--read-data"])["clean"], true);

    let packs = files_under(&env.vault().join("packs"));
    assert!(packs.len() >= 3, "want several packs, got {}", packs.len());
    let victim = &packs[1];
    flip(victim, 0.3);

    let out = env.run(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();
    let problems = report["report"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["object"].as_str().unwrap().contains(name)),
        "{report}"
    );
    let affected: Vec<String> = report["report"]["affected_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().trim_end_matches("@0").to_string())
        .collect();
    assert!(!affected.is_empty() && affected.len() < 60, "{affected:?}");

    let target = env.path("restore");
    let r = env.run(&["restore", "--to", target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(3), "a partial restore must say so");
    let restored = snapshot(&target);
    for (k, v) in &snap {
        if affected.contains(k) {
            assert!(
                !restored.contains_key(k),
                "{k} restored from a damaged pack"
            );
        } else {
            assert_eq!(
                restored.get(k).map(|r| &r.0),
                Some(&v.0),
                "{k} not restored"
            );
        }
    }
}

#[test]
fn flipped_index_segment_is_reported_and_recovered_from_packs() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    generate_tree(&src, 5, 50, 1);
    let snap = snapshot(&src);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let segs = files_under(&env.vault().join("index"));
    assert_eq!(segs.len(), 1);
    flip(&segs[0], 0.5);

    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seg_name = segs[0].file_name().unwrap().to_str().unwrap();
    assert!(report["report"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["object"].as_str().unwrap().contains(seg_name)));

    // With no local cache, the index is rebuilt from pack trailers.
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let target = env.path("restore");
    env.ok(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));

    // `repair index` writes a clean index from the trailers alone; the
    // damaged segment stays (immutable) but is superseded: verify is clean.
    let r = env.json(&["repair", "index"]);
    assert!(r["entries"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["superseded"], 1);
    assert!(r["damaged_packs"].as_array().unwrap().is_empty());
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
    assert!(v.to_string().contains("superseded"), "{v}");
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let again = env.path("restore-after-repair");
    env.ok(&["restore", "--to", again.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&again));
    // Later passes build on the repaired index.
    write_file(&src, "after-repair.txt", b"new", 0o644);
    env.ok(&["ingest", src.to_str().unwrap()]);
    assert_eq!(env.json(&["verify"])["clean"], true);
}

#[test]
fn flipped_run_page_is_reported_and_other_pages_restore() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // Enough entries for several leaf pages under one root.
    for i in 0..7000 {
        write_file(
            &src,
            &format!("k/{i:05}"),
            format!("value {i}").as_bytes(),
            0o644,
        );
    }
    let snap = snapshot(&src);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let point = env.json(&["inspect", "point", "latest"]);
    let root = point["runs"][0]["root"].as_str().unwrap().to_string();
    let page = env.json(&["inspect", "page", &root]);
    let children = page["children"].as_array().expect("root is an inner page");
    assert!(children.len() >= 2, "{page}");
    let victim = children[1]["page"].as_str().unwrap();
    let boundary = children[1]["first_key"].as_str().unwrap().to_string();
    flip(&env.vault().join("runs").join(victim), 0.6);

    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["report"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["object"].as_str().unwrap().contains(victim)));

    // Keys in the first leaf still list and restore.
    assert!(boundary.as_str() > "k/00100");
    let target = env.path("restore");
    env.ok(&[
        "restore",
        "--prefix",
        "k/000",
        "--to",
        target.to_str().unwrap(),
    ]);
    let restored = snapshot(&target);
    assert_eq!(restored.len(), 100);
    for (k, v) in &restored {
        assert_eq!(&snap[k].0, &v.0);
    }
    assert_eq!(env.ok(&["cat", "k/00042"]), "value 42");
    // The whole point cannot be listed past the damage, and says so.
    let all = env.run(&["ls"]);
    assert_eq!(all.status.code(), Some(3));
}

#[test]
fn data_subsets_read_every_pack_once_over_a_cycle_of_runs() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(12);
    for i in 0..60 {
        write_file(
            &src,
            &format!("d/{i:03}"),
            &rng.bytes(40 << 10, false),
            0o644,
        );
    }
    env.ok(&["ingest", src.to_str().unwrap()]);
    let packs = files_under(&env.vault().join("packs"));
    let victim = &packs[packs.len() / 2];
    flip(victim, 0.3);
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();

    let mut read = 0;
    let mut found = 0;
    for k in 1..=4 {
        let subset = format!("{k}/4");
        let out = env.run(&["--json", "verify", "--read-data-subset", &subset]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        read += v["report"]["packs_read"].as_u64().unwrap();
        if v["clean"] == false {
            found += 1;
            assert_eq!(out.status.code(), Some(3));
            assert!(v.to_string().contains(&name), "{v}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{v}");
        }
    }
    assert_eq!(read as usize, packs.len(), "1/4 … 4/4 read each pack once");
    assert_eq!(found, 1, "exactly one slice holds the damaged pack");

    let all = env.run(&["--json", "verify", "--read-data-subset", "100%"]);
    assert_eq!(all.status.code(), Some(3));
    let bad = env.run(&["verify", "--read-data-subset", "5/4"]);
    assert_eq!(bad.status.code(), Some(2));
    // A local vault has no lock policy: said, not damage.
    let r = env.json(&["verify", "--retention"]);
    assert!(r.to_string().contains("no Object Lock policy"), "{r}");
}

#[test]
fn a_damaged_point_is_unrestorable_and_never_replaced_by_a_neighbour() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut times = Vec::new();
    for (i, t) in [
        "2026-11-27T10:00:00Z",
        "2026-11-27T10:15:00Z",
        "2026-11-27T10:30:00Z",
    ]
    .iter()
    .enumerate()
    {
        write_file(
            &src,
            &format!("f{i}"),
            format!("state {i}").as_bytes(),
            0o644,
        );
        env.ok(&["ingest", src.to_str().unwrap(), "--time", t]);
        times.push(*t);
    }
    let points = files_under(&env.vault().join("points"));
    flip(&points[1], 0.6);

    let v = env.run(&["--json", "verify"]);
    assert_eq!(v.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&v.stdout).contains("points/0000000000000001"));
    // 10:05 too: the damaged point's time is unknown, it may be 10:03.
    for at in [
        "#1",
        times[1],
        "2026-11-27T10:20:00Z",
        "2026-11-27T10:05:00Z",
    ] {
        let out = env.run(&[
            "restore",
            "--at",
            at,
            "--to",
            env.path(at).to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(3), "--at {at}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("point") && (err.contains("damaged") || err.contains("authent")),
            "{err}"
        );
    }
    // The points around it are whole and restore.
    for (at, files) in [
        (times[0], 1),
        (times[2], 3),
        ("#0", 1),
        ("2026-11-27T11:00:00Z", 3),
    ] {
        let out = env.path(&format!("ok-{at}"));
        env.ok(&["restore", "--at", at, "--to", out.to_str().unwrap()]);
        assert_eq!(list_files(&out).len(), files, "--at {at}");
    }
}

#[test]
fn a_damaged_pass_marker_is_shown_beside_what_the_pass_recorded() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_file(&src, "a.txt", b"alpha", 0o644);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let shown = env.json(&["inspect", "pass", "0"]);
    assert!(shown["began"].is_string(), "{shown}");

    let marker = env
        .vault()
        .join("passes")
        .join(format!("{:016x}", 0))
        .join("begun");
    flip(&marker, 0.5);
    let out = env.run(&["--json", "inspect", "pass", "0"]);
    assert_eq!(out.status.code(), Some(3));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown["began"].is_null(), "{shown}");
    assert_eq!(shown["seq"], 0, "{shown}");
    let why = shown["marker_damaged"].as_str().unwrap();
    assert!(why.contains("begun"), "{why}");
}

#[test]
fn a_damaged_index_cache_is_rebuilt_and_the_restore_is_exact() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(17);
    for i in 0..300 {
        let body = rng.bytes(2000 + i * 10, true);
        write_file(&src, &format!("t/{i:03}"), &body, 0o644);
    }
    let snap = snapshot(&src);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let is_cache = |p: &PathBuf| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        name.starts_with("index.cache")
    };
    let caches: Vec<PathBuf> = files_under(&env.path("cache"))
        .into_iter()
        .filter(is_cache)
        .collect();
    assert!(!caches.is_empty());
    // A byte in the middle of each file: an entry, read only by lookups.
    for c in &caches {
        flip(c, 0.5);
    }
    let target = env.path("restore");
    env.ok(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));
    // Rebuilt: the next command finds the cache whole.
    assert_eq!(env.json(&["verify"])["clean"], true);
}
