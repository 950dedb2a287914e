//! A generated tree through three points in time, each restored exactly.

use strata_tests::*;

#[test]
fn three_points_restore_exactly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    generate_tree(&src, 1, 300, 3);
    let mut snaps = vec![snapshot(&src)];
    env.ok(&["ingest", src.to_str().unwrap()]);

    // Point 1: modify, delete, add.
    let mut rng = Rng::new(2);
    write_file(&src, "dir1/file-00001.txt", b"changed content", 0o640);
    std::fs::remove_file(src.join("a.txt")).unwrap();
    std::fs::remove_dir_all(src.join("large")).unwrap();
    write_file(&src, "new/big.bin", &rng.bytes(5 << 20, false), 0o644);
    // Restored with direct I/O: whole pages, a partial last page, a
    // file under one write buffer.
    write_file(
        &src,
        "new/odd.bin",
        &rng.bytes((3 << 20) + 12_345, true),
        0o600,
    );
    write_file(&src, "new/mid.bin", &rng.bytes(300_001, false), 0o644);
    snaps.push(snapshot(&src));
    env.ok(&["ingest", src.to_str().unwrap()]);

    // Point 2: re-create a deleted key with other content, change a mode only.
    write_file(&src, "a.txt", b"back again", 0o600);
    std::fs::set_permissions(
        src.join("a/b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    snaps.push(snapshot(&src));
    let s = env.json(&["ingest", src.to_str().unwrap()]);
    assert_eq!(s["changed"], 2, "{s}");

    let points = env.json(&["snapshots"]);
    assert_eq!(points.as_array().unwrap().len(), 3);
    for (seq, snap) in snaps.iter().enumerate() {
        let out = env.path(&format!("restore-{seq}"));
        env.ok(&[
            "restore",
            "--at",
            &format!("#{seq}"),
            "--to",
            out.to_str().unwrap(),
        ]);
        assert_same(snap, &snapshot(&out));
        // --at with the point's time selects the same point.
        let time = points[seq]["time"].as_str().unwrap();
        let listed = env.ok(&["--json", "ls", "--at", time]);
        assert_eq!(listed.lines().count(), snap.len(), "ls --at {time}");
    }

    // cat reads one object at an old point; diff names the changes.
    assert_eq!(
        env.ok(&["cat", "--at", "#0", "a.txt"]).as_bytes(),
        b"sorts before a/"
    );
    assert_eq!(
        env.run(&["cat", "--at", "#1", "a.txt"]).status.code(),
        Some(5)
    );
    let diff = env.json(&["diff", "--from", "#0", "--to", "#1"]);
    let changes = diff["changes"].as_array().unwrap();
    assert!(changes
        .iter()
        .any(|c| c["change"] == "deleted" && c["key"] == "a.txt"));
    assert!(changes
        .iter()
        .any(|c| c["change"] == "added" && c["key"] == "new/big.bin"));
    assert!(changes
        .iter()
        .any(|c| c["change"] == "modified" && c["key"] == "dir1/file-00001.txt"));

    // A prefix restore, and no overwriting without --overwrite.
    let part = env.path("part");
    env.ok(&[
        "restore",
        "--prefix",
        "odd names/",
        "--to",
        part.to_str().unwrap(),
    ]);
    assert_eq!(list_files(&part).len(), 3);
    let again = env.run(&[
        "restore",
        "--prefix",
        "odd names/",
        "--to",
        part.to_str().unwrap(),
    ]);
    assert_eq!(
        again.status.code(),
        Some(3),
        "restoring onto existing files must fail"
    );
    env.ok(&[
        "restore",
        "--prefix",
        "odd names/",
        "--overwrite",
        "--to",
        part.to_str().unwrap(),
    ]);

    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
}

#[test]
fn restore_never_follows_symlinks_out_of_the_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_file(&src, "escape/file", b"data", 0o644);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let target = env.path("target");
    let outside = env.path("outside");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("escape")).unwrap();
    let out = env.run(&["restore", "--to", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through a symlink"
    );
}
