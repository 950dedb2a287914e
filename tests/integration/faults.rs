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

async fn repo(env: &Env) -> Repository {
    let backend = Arc::new(LocalBackend::new(env.vault()).unwrap());
    let open = OpenOptions {
        cache_dir: Some(env.path("cache")),
    };
    Repository::init(backend, PASSWORD.as_bytes(), InitOptions::default(), open)
        .await
        .unwrap()
}

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
    let repo = repo(&env).await;
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
