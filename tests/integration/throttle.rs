//! The adaptive scheduler against the throttling proxy in front of the
//! local S3 server: under per-prefix limits shared with the bucket's own
//! application, a pass backs up every object and backs off where it is
//! throttled; a pass killed mid-way resumes from its recorded progress.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_store::ingest::{ingest, IngestOptions, IngestProgress};
use strata_store::repo::{OpenOptions, Repository};
use strata_store::source::s3::S3Source;
use strata_tests::throttle::{LoadGen, Proxy, ProxyConfig};
use strata_tests::*;

fn upstream() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Writes `objects` into `bucket` directly (not through the proxy).
async fn fill(client: &aws_sdk_s3::Client, bucket: &str, objects: &BTreeMap<String, Vec<u8>>) {
    let mut set = tokio::task::JoinSet::new();
    for (k, v) in objects {
        let (c, b, k, v) = (client.clone(), bucket.to_string(), k.clone(), v.clone());
        set.spawn(async move {
            c.put_object()
                .bucket(b)
                .key(k)
                .body(v.into())
                .send()
                .await
                .unwrap();
        });
        while set.len() >= 16 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

fn objects(prefixes: &[(&str, usize)], seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = BTreeMap::new();
    for (p, n) in prefixes {
        for i in 0..*n {
            let len = 200 + rng.below(1800) as usize;
            out.insert(format!("{p}data/{i:05}"), rng.bytes(len, i % 2 == 0));
        }
    }
    out
}

async fn open_repo(env: &Env) -> Repository {
    let backend = Arc::new(strata_store::backend::local::LocalBackend::new(env.vault()).unwrap());
    Repository::open(
        backend,
        PASSWORD.as_bytes(),
        OpenOptions {
            cache_dir: Some(env.path("cache")),
        },
    )
    .await
    .unwrap()
}

/// Every object of `expected` is in the latest point with its bytes.
async fn assert_backed_up(repo: &Repository, expected: &BTreeMap<String, Vec<u8>>) {
    let (point, _) = repo.latest_point().await.unwrap().unwrap();
    for (k, v) in expected {
        let e = strata_store::restore::lookup(repo, &point, k)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{k} is not in the point"));
        let mut out = Vec::new();
        strata_store::restore::read_object(repo, e.object.as_ref().unwrap(), &mut out)
            .await
            .unwrap();
        assert!(out == *v, "{k}: restored bytes differ");
    }
}

/// A client through the proxy that plays the bucket's application.
async fn app_client(proxy: &Proxy) -> aws_sdk_s3::Client {
    let base = s3_client().await;
    aws_sdk_s3::Client::from_conf(
        base.config()
            .to_builder()
            .endpoint_url(proxy.url())
            .app_name(aws_sdk_s3::config::AppName::new("app").unwrap())
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_prefix_limits_every_object_is_backed_up_and_throttling_slows_the_backup() {
    if !s3_enabled() {
        eprintln!("skipped: STRATA_TEST_S3 is not 1");
        return;
    }
    let client = s3_client().await;
    let bucket = new_bucket(&client, false).await;
    let prefixes = ["p0/", "p1/", "p2/", "p3/"];
    let data = objects(&prefixes.map(|p| (p, 120)), 7);
    fill(&client, &bucket, &data).await;
    let app_keys: BTreeMap<String, Vec<u8>> = ["p0/", "p1/"]
        .iter()
        .flat_map(|p| (0..20).map(move |i| (format!("{p}app/{i}"), vec![b'x'; 512])))
        .collect();
    fill(&client, &bucket, &app_keys).await;

    let proxy = Proxy::start(ProxyConfig {
        upstream: upstream(),
        limits: prefixes.iter().map(|p| (p.to_string(), 30.0)).collect(),
        burst_s: 0.25,
        retry_after: None,
    })
    .await
    .unwrap();
    let app = LoadGen::start(
        app_client(&proxy).await,
        &bucket,
        &["p0/".into(), "p1/".into()],
        15.0,
        20,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let env = Env::new();
    env.init();
    let repo = open_repo(&env).await;
    let source = Arc::new(
        S3Source::connect(&format!("s3://{bucket}/"), Some(&proxy.url()), true)
            .await
            .unwrap(),
    );
    let opts = IngestOptions {
        partitions: Some(4),
        workers: Some(8),
        ..Default::default()
    };
    let summary = ingest(&repo, source, &opts, Arc::new(IngestProgress::default()))
        .await
        .unwrap();
    let (app_ok, app_throttled) = app.stop().await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.objects, (data.len() + app_keys.len()) as u64);
    assert_eq!(summary.partitions, 4, "one partition per prefix");
    assert_backed_up(&repo, &data).await;
    let totals: Vec<_> = proxy
        .series()
        .iter()
        .map(|(k, s)| (k.clone(), s.total_ok(), s.total_throttled()))
        .collect();
    assert!(
        summary.throttled > 0,
        "the limits were never reached in {:.1} s: {totals:?}",
        summary.elapsed_s
    );
    eprintln!(
        "backup: {} requests, {} throttled; application: {app_ok} answered, {app_throttled} throttled",
        summary.requests, summary.throttled
    );

    // After the backup's first 503 on a prefix, its request rate there
    // (requests sent, 503s included) drops within one second.
    let series = proxy.series();
    let mut checked = 0;
    for p in prefixes {
        let Some(s) = series.get(&("strata".to_string(), p.to_string())) else {
            continue;
        };
        let Some(t0) = s.throttled.iter().position(|&n| n > 0) else {
            continue;
        };
        let rate = |from: usize, to: usize| {
            let n: u32 = (from..to).map(|i| s.attempts(i)).sum();
            f64::from(n) / ((to - from) as f64 * 0.1)
        };
        let before = rate(t0.saturating_sub(2), t0 + 1);
        let after = rate(t0 + 5, t0 + 10);
        eprintln!(
            "{p}: first 503 at {:.1} s; {before:.0} req/s before, {after:.0} req/s 0.5-1 s after",
            t0 as f64 / 10.0
        );
        assert!(
            after < before,
            "{p}: {after:.0} req/s 0.5-1 s after the first 503, {before:.0} req/s before"
        );
        checked += 1;
    }
    assert!(checked > 0, "no prefix throttled the backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_pass_resumes_from_its_checkpoints_without_rereading_finished_partitions() {
    if !s3_enabled() {
        eprintln!("skipped: STRATA_TEST_S3 is not 1");
        return;
    }
    let client = s3_client().await;
    let bucket = new_bucket(&client, false).await;
    // Two small prefixes finish fast; two large ones are held to 25 req/s.
    let data = objects(&[("a/", 20), ("b/", 20), ("c/", 200), ("d/", 200)], 11);
    fill(&client, &bucket, &data).await;
    let proxy = Proxy::start(ProxyConfig {
        upstream: upstream(),
        limits: vec![("c/".into(), 25.0), ("d/".into(), 25.0)],
        burst_s: 0.25,
        retry_after: Some(1),
    })
    .await
    .unwrap();

    let env = Env::new();
    env.init();
    let source = format!("s3://{bucket}/");
    let args = [
        "--endpoint-url",
        &proxy.url(),
        "--path-style",
        "true",
        "ingest",
        &source,
        "--checkpoint-interval",
        "1s",
    ];
    let mut child = env
        .cmd(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once its recorded progress has two finished partitions and
    // work left in the others.
    let repo = open_repo(&env).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        assert!(std::time::Instant::now() < deadline, "no progress recorded");
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the pass ended ({status}) before it was killed: {err}");
        }
        if let Some((state, _)) = repo.latest_pass_state(0).await.unwrap() {
            let done = state.partitions.iter().filter(|p| p.done).count();
            let keys_done = data
                .keys()
                .filter(|k| {
                    state
                        .partitions
                        .iter()
                        .any(|p| p.done && p.range.contains(k))
                })
                .count();
            if keys_done >= 40 && done < state.partitions.len() {
                break state;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(repo.latest_point().await.unwrap().is_none());
    // Operators see how far it got.
    let shown = env.json(&["inspect", "pass"]);
    assert!(shown["partitions_done"].as_u64().unwrap() >= 2, "{shown}");
    assert_eq!(shown["seq"], 0);
    assert!(shown["began"].is_string(), "{shown}");
    let finished: Vec<_> = recorded
        .partitions
        .iter()
        .filter(|p| p.done)
        .map(|p| p.range.clone())
        .collect();

    let s = env.json(&args);
    assert!(s["resumed_partitions"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["objects"], data.len() as u64, "{s}");
    let repo = open_repo(&env).await;
    assert_backed_up(&repo, &data).await;

    // Exactly one copy of each object in the point.
    let (point, _) = repo.latest_point().await.unwrap().unwrap();
    let mut keys = Vec::new();
    for run in &point.runs {
        let mut c = strata_store::repo::runs::RunCursor::start(&repo, run)
            .await
            .unwrap();
        while let Some(e) = c.next().await.unwrap() {
            keys.push(e.key);
        }
    }
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(total, keys.len(), "an object is recorded twice");
    assert_eq!(keys.len(), data.len());

    // Objects of partitions finished before the kill were read once.
    let gets = proxy.gets_by("strata");
    let mut in_finished = 0;
    for k in data.keys() {
        if finished.iter().any(|r| r.contains(k)) {
            in_finished += 1;
            assert_eq!(gets.get(k), Some(&1), "{k} was read again after the resume");
        }
    }
    assert!(
        in_finished >= 40,
        "{in_finished} objects in finished partitions"
    );
}
