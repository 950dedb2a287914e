//! `strata mount`: a point read through FUSE equals a restore of it; the
//! directory view streams large listings and escapes what cannot be a
//! path as a directory restore does.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strata_store::ingest::{ingest, IngestOptions};
use strata_store::restore::browse::{child, list_children, Child};
use strata_tests::sim::SimBucket;
use strata_tests::*;

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "/dev/fuse is missing on a CI machine"
    );
    eprintln!("skipped: /dev/fuse is missing");
    false
}

/// Every file under `root`: relative path -> (bytes, size, mtime s).
fn tree(root: &Path) -> BTreeMap<String, (Vec<u8>, u64, i64)> {
    list_files(root)
        .into_iter()
        .map(|k| {
            let p = root.join(&k);
            let md = std::fs::metadata(&p).unwrap();
            (k, (std::fs::read(&p).unwrap(), md.len(), md.mtime()))
        })
        .collect()
}

struct Unmount(Option<std::process::Child>);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_mounted_point_reads_like_its_restore() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    generate_tree(&src, 21, 200, 2);
    env.ok(&["ingest", src.to_str().unwrap()]);
    // A later point changes things; the mount shows the older one.
    write_file(&src, "a.txt", b"later", 0o644);
    std::fs::remove_dir_all(src.join("large")).unwrap();
    env.ok(&["ingest", src.to_str().unwrap()]);

    let restored = env.path("restored");
    env.ok(&["restore", "--at", "#0", "--to", restored.to_str().unwrap()]);
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let child = env
        .cmd(&["mount", "--at", "#0", mnt.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Unmount(Some(child));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&mnt).unwrap().next().is_none() {
        assert!(std::time::Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mounted = tree(&mnt);
    let want = tree(&restored);
    assert_eq!(
        mounted.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (data, size, mtime)) in &want {
        let (m_data, m_size, m_mtime) = &mounted[k];
        assert!(m_data == data, "{k}: bytes differ");
        assert_eq!((m_size, m_mtime), (size, mtime), "{k}: size or time");
    }
    // Ranged reads fetch the middle of a large object.
    let big = list_files(&mnt.join("large"))[0].clone();
    let f = std::fs::File::open(mnt.join("large").join(&big)).unwrap();
    let mut buf = vec![0u8; 10_000];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 2_500_000).unwrap();
    let whole = std::fs::read(restored.join("large").join(&big)).unwrap();
    assert_eq!(buf, whole[2_500_000..2_510_000]);
    drop(f);
    // Read-only.
    assert!(std::fs::write(mnt.join("new-file"), b"x").is_err());

    // SIGINT unmounts and exits 0.
    let mut c = guard.0.take().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status()
        .unwrap();
    let status = c.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        std::fs::read_dir(&mnt).unwrap().next().is_none(),
        "still mounted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_view_streams_pages_and_escapes_hostile_keys() {
    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("b");
    for i in 0..1500 {
        bucket.put(&format!("many/{i:05}"), vec![1; 10], 0);
    }
    for key in [
        "x", "x/y", "x.txt", "x-1/z", "../evil", "/abs", "d//e", "dir/", "dir/f", "ok",
    ] {
        bucket.put(key, key.as_bytes().to_vec(), 0);
    }
    ingest(&repo, bucket, &IngestOptions::default(), Default::default())
        .await
        .unwrap();
    let (p, _) = repo.latest_point().await.unwrap().unwrap();

    let names = |children: &[Child]| -> Vec<String> {
        children
            .iter()
            .map(|c| match c {
                Child::Dir(n) => format!("{n}/"),
                Child::File(n, _) => n.clone(),
            })
            .collect()
    };
    let root = list_children(&repo, &p, "", None, 100).await.unwrap();
    // Escaped as a directory restore writes them: ".." shows as %2E%2E,
    // an empty component as %, and "x" (an object and a prefix) as x/%=.
    assert_eq!(
        names(&root),
        ["%2E%2E/", "%/", "d/", "dir/", "many/", "ok", "x-1/", "x.txt", "x/"]
    );
    let d = list_children(&repo, &p, "d/", None, 100).await.unwrap();
    assert_eq!(names(&d), ["%/"]);
    let x = list_children(&repo, &p, "x/", None, 100).await.unwrap();
    assert_eq!(names(&x), ["%=", "y"]);
    let dir = list_children(&repo, &p, "dir/", None, 100).await.unwrap();
    assert_eq!(
        names(&dir),
        ["f"],
        "the marker key dir/ is the directory itself"
    );

    // 1,500 files in pages of 400: each page continues after the last.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list_children(
            &repo,
            &p,
            "many/",
            after.as_deref().map(|a| (a, false)),
            400,
        )
        .await
        .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 401);
        after = Some(page.last().unwrap().name().to_string());
        all.extend(names(&page));
    }
    let want: Vec<String> = (0..1500).map(|i| format!("{i:05}")).collect();
    assert_eq!(all, want);

    assert!(matches!(
        child(&repo, &p, "", "x").await.unwrap(),
        Some(Child::Dir(_))
    ));
    assert!(matches!(
        child(&repo, &p, "", "ok").await.unwrap(),
        Some(Child::File(..))
    ));
    assert!(child(&repo, &p, "", "..").await.unwrap().is_none());
    assert!(child(&repo, &p, "", "nope").await.unwrap().is_none());
}
