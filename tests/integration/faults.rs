//! Faults while reading the source: connection resets, truncated bodies,
//! objects changed or deleted between listing and GET, empty objects.
//! Nothing short is ever stored; what is stored restores byte for byte.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_store::backend::local::LocalBackend;
use strata_store::ingest::{ingest, IngestOptions};
use strata_store::repo::{InitOptions, OpenOptions, Repository};
use strata_store::restore::{lookup, read_object};
use strata_tests::sim::{ReadFault, SimBucket};
use strata_tests::*;

async fn contents_at_latest(repo: &Repository) -> BTreeMap<String, Vec<u8>> {
    let (p, _) = repo.latest_point().await.unwrap().unwrap();
    let mut c = strata_store::repo::runs::StateCursor::new(repo, &p.runs, p.seq, "")
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    while let Some(e) = c.next().await.unwrap() {
        let mut data = Vec::new();
        read_object(repo, e.object.as_ref().unwrap(), &mut data)
            .await
            .unwrap();
        out.insert(e.key, data);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_truncated_bodies_are_read_again_never_stored_short() {
    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("b");
    let mut rng = Rng::new(6);
    bucket.put("big", rng.bytes(5 << 20, false), 1);
    bucket.put("small", rng.bytes(10_000, true), 1);
    bucket.put("empty", Vec::new(), 1);
    bucket.put("victim", b"first version, stored whole".to_vec(), 1);
    bucket.put("changes", b"as listed".to_vec(), 1);
    bucket.put("vanishes", b"gone before the GET".to_vec(), 1);
    bucket.fail_reads("big", ReadFault::Reset(1 << 20), 2);
    bucket.fail_reads("small", ReadFault::Truncate(5_000), 1);
    bucket.change_on_open("changes", Some(b"changed after the listing".to_vec()));
    bucket.change_on_open("vanishes", None);

    let s = ingest(
        &repo,
        bucket.clone(),
        &IngestOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(contents_at_latest(&repo).await, bucket.contents());
    assert!(!bucket.contents().contains_key("vanishes"));

    // Every read of the new version comes back short: the pass reports it
    // and the point keeps the previous, whole version.
    bucket.put("victim", rng.bytes(50_000, true), 2);
    bucket.fail_reads("victim", ReadFault::Truncate(100), 10);
    let s = ingest(
        &repo,
        bucket.clone(),
        &IngestOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(s.errors[0].contains("victim") && s.errors[0].contains("truncated"));
    let (p, _) = repo.latest_point().await.unwrap().unwrap();
    let e = lookup(&repo, &p, "victim").await.unwrap().unwrap();
    let mut data = Vec::new();
    read_object(&repo, e.object.as_ref().unwrap(), &mut data)
        .await
        .unwrap();
    assert_eq!(data, b"first version, stored whole");

    // Once reads work again, the next pass records it.
    bucket.fail_reads("victim", ReadFault::Truncate(100), 0);
    let s = ingest(
        &repo,
        bucket.clone(),
        &IngestOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(s.errors.is_empty());
    assert_eq!(contents_at_latest(&repo).await, bucket.contents());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_vault_failures_are_retried_and_a_failed_pass_loses_nothing() {
    use strata_store::backend::faults::{Fault, Faulty, Op, Rule};
    use strata_store::ErrorKind;
    let env = Env::new();
    let faulty = Arc::new(Faulty::new(Arc::new(
        LocalBackend::new(env.vault()).unwrap(),
    )));
    let open = OpenOptions {
        cache_dir: Some(env.path("cache")),
    };
    let repo = Repository::init(
        faulty.clone(),
        PASSWORD.as_bytes(),
        InitOptions::default(),
        open,
    )
    .await
    .unwrap();
    let bucket = SimBucket::new("b");
    let mut rng = Rng::new(8);
    for i in 0..30 {
        bucket.put(&format!("obj/{i:02}"), rng.bytes(100_000, false), 1);
    }
    let opts = IngestOptions {
        pack_target_size: Some(256 << 10),
        ..Default::default()
    };
    let rule = |op, prefix: &str, times, fault| Rule {
        op,
        prefix: prefix.into(),
        skip: 0,
        times,
        fault,
    };
    let unavailable = Fault::Error(ErrorKind::Transient);
    faulty.add(rule(Op::Put, "packs/", 3, unavailable.clone()));
    faulty.add(rule(Op::Put, "index/", 1, unavailable.clone()));
    faulty.add(rule(Op::Put, "runs/", 1, unavailable.clone()));
    // The point lands but the reply is lost: the retry finds its own bytes.
    faulty.add(rule(Op::Put, "points/", 1, Fault::ResetAfter));
    let s = ingest(&repo, bucket.clone(), &opts, Default::default())
        .await
        .unwrap();
    assert!(s.packs_written > 3);
    assert_eq!(faulty.injected(), 6);
    // Reads fail twice, then succeed.
    faulty.add(rule(Op::Get, "packs/", 2, unavailable.clone()));
    assert_eq!(contents_at_latest(&repo).await, bucket.contents());

    // Pack uploads keep failing: the pass fails, commits nothing.
    for i in 30..40 {
        bucket.put(&format!("obj/{i:02}"), rng.bytes(100_000, false), 2);
    }
    faulty.add(rule(Op::Put, "packs/", u32::MAX, unavailable.clone()));
    let before = faulty.attempted_puts.lock().unwrap().len();
    let e = ingest(&repo, bucket.clone(), &opts, Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("packs/"), "{e}");
    assert_eq!(repo.list_points().await.unwrap(), [0]);
    let failed: std::collections::HashSet<String> = faulty.attempted_puts.lock().unwrap()[before..]
        .iter()
        .filter(|n| n.starts_with("packs/"))
        .cloned()
        .collect();
    assert!(!failed.is_empty());

    // The rerun builds its packs again under fresh salts: new names.
    faulty.clear();
    let before = faulty.attempted_puts.lock().unwrap().len();
    ingest(&repo, bucket.clone(), &opts, Default::default())
        .await
        .unwrap();
    let rerun: Vec<String> = faulty.attempted_puts.lock().unwrap()[before..]
        .iter()
        .filter(|n| n.starts_with("packs/"))
        .cloned()
        .collect();
    assert!(!rerun.is_empty());
    assert!(rerun.iter().all(|n| !failed.contains(n)));
    assert_eq!(contents_at_latest(&repo).await, bucket.contents());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_restore_inside_the_root_under_reversible_names() {
    use strata_store::restore::path::path_to_key;
    use strata_store::restore::{restore_to_dir, RestoreOptions};
    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("b");
    let long = format!("long/{}", "é".repeat(700));
    let keys = [
        "../../escape",
        "/etc/passwd",
        "a//b",
        "./dot",
        "x",
        "x/y",
        "x.txt",
        "ctl\u{1}\u{7f}\ttab",
        "nul\0byte",
        "100%/%2E",
        "%=",
        long.as_str(),
        &"k".repeat(1024),
    ];
    for (i, k) in keys.iter().enumerate() {
        bucket.put(k, format!("object {i}").into_bytes(), 1);
    }
    bucket.put("dir/", Vec::new(), 1);
    ingest(
        &repo,
        bucket.clone(),
        &IngestOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let (p, _) = repo.latest_point().await.unwrap().unwrap();
    let root = env.path("restored");
    let s = restore_to_dir(
        &repo,
        &p,
        &root,
        &RestoreOptions::default(),
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(s.errors.is_empty() && s.unrepresentable.is_empty(), "{s:?}");
    // Everything is under the root, and each file maps back to its key.
    assert!(!env.path("escape").exists() && !env.dir.path().join("../escape").exists());
    let mut restored = BTreeMap::new();
    for rel in list_files(&root) {
        let key = path_to_key(std::path::Path::new(&rel)).unwrap_or_else(|| panic!("{rel}"));
        restored.insert(key, std::fs::read(root.join(&rel)).unwrap());
    }
    let mut want = bucket.contents();
    want.remove("dir/"); // a directory marker restores as the directory
    assert_eq!(restored, want);
    assert!(root.join("dir").is_dir());
}

/// Peak RSS (VmHWM) of a running child, polled until it exits.
fn run_measuring_rss(mut cmd: std::process::Command) -> (std::process::Output, u64) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // Stream stdout into a hash: the test never holds the object either.
        let mut r = std::io::BufReader::new(stdout);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = std::io::Read::read(&mut r, &mut buf).unwrap();
            if k == 0 {
                break;
            }
            std::hash::Hasher::write(&mut h, &buf[..k]);
            n += k as u64;
        }
        (std::hash::Hasher::finish(&h), n)
    });
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (hash, n) = reader.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let mut stdout = format!("{hash:016x} {n}").into_bytes();
    stdout.extend_from_slice(&out.stdout);
    (
        std::process::Output {
            status: out.status,
            stdout,
            stderr: out.stderr,
        },
        peak_kb << 10,
    )
}

#[test]
fn an_object_far_larger_than_the_memory_used_streams_through() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 256 MiB, generated in 1 MiB blocks (partly compressible); the
    // processes must stay under half of it, argon2's 64 MiB included.
    let size: u64 = 256 << 20;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(src.join("huge.bin")).unwrap());
        let mut rng = Rng::new(1);
        for i in 0..(size >> 20) {
            std::io::Write::write_all(&mut f, &rng.bytes(1 << 20, i % 3 == 0)).unwrap();
        }
    }
    let (ingested, ingest_peak) =
        run_measuring_rss(env.cmd(&["--quiet", "ingest", src.to_str().unwrap()]));
    assert!(
        ingested.status.success(),
        "{}",
        String::from_utf8_lossy(&ingested.stderr)
    );
    let (cat, cat_peak) = run_measuring_rss(env.cmd(&["cat", "huge.bin"]));
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    // The same bytes came back.
    let (want, _) = run_measuring_rss({
        let mut c = std::process::Command::new("cat");
        c.arg(src.join("huge.bin"));
        c
    });
    let got = String::from_utf8_lossy(&cat.stdout).to_string();
    let want = String::from_utf8_lossy(&want.stdout).to_string();
    assert_eq!(
        got.split(' ').next(),
        want.split(' ').next(),
        "cat returned other bytes"
    );
    assert!(got.contains(&format!(" {size}")), "{got}");
    // Neither process held the object: both stayed far below its size.
    let limit = size / 2;
    assert!(
        ingest_peak < limit,
        "ingest peak RSS {} MiB for a {} MiB object",
        ingest_peak >> 20,
        size >> 20
    );
    assert!(
        cat_peak < limit,
        "cat peak RSS {} MiB for a {} MiB object",
        cat_peak >> 20,
        size >> 20
    );
    eprintln!(
        "peak RSS: ingest {} MiB, cat {} MiB, object {} MiB",
        ingest_peak >> 20,
        cat_peak >> 20,
        size >> 20
    );
}
