//! Continuous protection over a simulated day: a point every 15 minutes
//! from EventBridge batch files, with late, duplicated and reordered
//! events, checked at every point byte for byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_store::changes::files::FileFeed;
use strata_store::changes::ChangeFeed;
use strata_store::continuous::{Clock, Continuous, CycleOptions, CycleSummary};
use strata_store::ingest::IngestProgress;
use strata_store::manifest::point::Point;
use strata_store::repo::runs::StateCursor;
use strata_store::repo::Repository;
use strata_store::restore::{lookup, restore_to_dir, RestoreOptions};
use strata_tests::sim::{write_batch, SimBucket, SimClock};
use strata_tests::*;

const MIN: i64 = 60 * 1_000_000_000;
/// 2026-11-27T00:00:00Z.
const DAY_START: i64 = 1_795_737_600 * 1_000_000_000;

async fn listed_at(repo: &Repository, p: &Point) -> Vec<String> {
    let mut c = StateCursor::new(repo, &p.runs, p.seq, "").await.unwrap();
    let mut keys = Vec::new();
    while let Some(e) = c.next().await.unwrap() {
        keys.push(e.key);
    }
    keys
}

fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    list_files(root)
        .into_iter()
        .map(|k| {
            let data = std::fs::read(root.join(&k)).unwrap();
            (k, data)
        })
        .collect()
}

fn body(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max) as usize;
    rng.bytes(len, true)
}

/// One interval's changes at times inside (t, t + 15 min]; returns the
/// keys changed.
fn play_interval(bucket: &SimBucket, rng: &mut Rng, t: i64, n: usize) {
    for i in 0..n {
        let when = t + 1 + (rng.below(15 * MIN as u64 - 10) as i64);
        let keys: Vec<String> = bucket
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("tenant/"))
            .collect();
        let roll = rng.below(10);
        if roll < 3 || keys.is_empty() {
            let key = format!("tenant/{}/doc-{}.json", rng.below(5), rng.below(400));
            bucket.put(&key, body(rng, 3000), when);
        } else if roll < 6 {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            bucket.put(key, body(rng, 3000), when);
            if i % 3 == 0 {
                // Changed twice inside one interval.
                bucket.put(key, body(rng, 3000), when + 1);
            }
        } else if roll < 8 {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            bucket.delete(key, when);
        } else {
            // Deleted and re-created inside one interval.
            let key = &keys[rng.below(keys.len() as u64) as usize];
            bucket.delete(key, when);
            bucket.put(key, body(rng, 300), when + 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_day_restores_exactly_at_every_point() {
    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("prod-attachments");
    let feed_dir = env.path("feed");
    std::fs::create_dir_all(&feed_dir).unwrap();
    let clock = SimClock::at(DAY_START);
    let mut rng = Rng::new(15);

    // Before the day: 120 objects, one deleted at 10:07 below.
    for i in 0..120 {
        bucket.put(
            &format!("tenant/{}/doc-{i}.json", i % 5),
            rng.bytes(200 + i * 10, true),
            DAY_START - MIN,
        );
    }
    bucket.put(
        "reports/daily.csv",
        b"day,total\n".to_vec(),
        DAY_START - MIN,
    );
    write_batch(&feed_dir, "2026/11/26/23/batch-0", &bucket.take_events());

    let feed: Arc<dyn ChangeFeed> = Arc::new(FileFeed::dir(&feed_dir));
    let mut cont = Continuous::new(
        &repo,
        bucket.clone(),
        Some(feed),
        clock.clone(),
        CycleOptions::default(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut expected: Vec<(i64, BTreeMap<String, Vec<u8>>)> = Vec::new();
    let mut held_back = Vec::new();
    let mut summaries: Vec<CycleSummary> = Vec::new();
    let mut batch_no = 0;
    let cycles = cont
        .run(
            stop_rx,
            |s| {
                summaries.push(s.clone());
                let t = clock.now_ns();
                expected.push((t, bucket.contents()));
                if expected.len() == 96 {
                    stop_tx.send(true).unwrap();
                    return;
                }
                // The next interval: changes, then their events as the
                // delivery stream would write them at its end.
                let at_10_00 = DAY_START + 600 * MIN;
                if t == at_10_00 {
                    bucket.delete("reports/daily.csv", at_10_00 + 7 * MIN);
                }
                let n = 4 + rng.below(8) as usize;
                play_interval(&bucket, &mut rng, t, n);
                let mut events = bucket.take_events();
                // Late: superseded events wait for the next batch; a few
                // events come twice; the batch is shuffled.
                let mut batch: Vec<_> = std::mem::take(&mut held_back);
                for (i, e) in events.iter().enumerate() {
                    let superseded = events[i + 1..].iter().any(|l| l.key == e.key);
                    if superseded && rng.below(2) == 0 {
                        held_back.push(e.clone());
                    } else {
                        batch.push(e.clone());
                    }
                    if rng.below(6) == 0 {
                        held_back.push(e.clone()); // a late duplicate
                    }
                }
                events.clear();
                for i in (1..batch.len()).rev() {
                    batch.swap(i, rng.below(i as u64 + 1) as usize);
                }
                batch_no += 1;
                let name = format!("2026/11/27/{:02}/batch-{batch_no:04}", batch_no / 4);
                write_batch(&feed_dir, &name, &batch);
            },
            Arc::new(IngestProgress::default()),
        )
        .await
        .unwrap();
    assert_eq!(cycles, 96);
    assert_eq!(
        summaries[0].mode, "listing",
        "the first cycle is a baseline"
    );
    assert!(summaries.iter().skip(1).all(|s| s.mode == "changes"));
    assert!(summaries.iter().skip(1).all(|s| s.events > 0));
    assert!(
        summaries.iter().any(|s| s.ingest.unchanged > 0),
        "late and duplicate events are recognised as already recorded"
    );

    // Every point: its time, its listing and its restored bytes.
    let seqs = repo.list_points().await.unwrap();
    assert_eq!(seqs.len(), 96);
    for (seq, (t, state)) in seqs.iter().zip(&expected) {
        let (p, _) = repo.load_point(*seq).await.unwrap();
        assert_eq!(
            p.time_ns, *t,
            "point {seq} is stamped with its cycle's time"
        );
        assert_eq!(p.stats.objects, state.len() as u64, "point {seq} count");
        let keys: Vec<String> = state.keys().cloned().collect();
        assert_eq!(listed_at(&repo, &p).await, keys, "point {seq} listing");
        if seq % 8 == 0 || *seq == 95 {
            let out = env.path(&format!("restore-{seq}"));
            let summary = restore_to_dir(
                &repo,
                &p,
                &out,
                &RestoreOptions::default(),
                &Default::default(),
            )
            .await
            .unwrap();
            assert!(summary.errors.is_empty(), "{:?}", summary.errors);
            assert_eq!(&read_tree(&out), state, "point {seq} restored bytes");
        }
    }

    // Deleted at 10:07: present at 10:00 (and 10:14:59), absent at 10:15.
    let at = |h: i64, m: i64, s: i64| DAY_START + (h * 60 + m) * MIN + s * 1_000_000_000;
    for (t, present) in [
        (at(10, 0, 0), true),
        (at(10, 14, 59), true),
        (at(10, 15, 0), false),
    ] {
        let p = repo.point_at(t).await.unwrap();
        let e = lookup(&repo, &p, "reports/daily.csv").await.unwrap();
        assert_eq!(e.is_some(), present, "reports/daily.csv at {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_is_caught_by_listing_reconciliation() {
    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("b");
    let feed_dir = env.path("feed");
    let clock = SimClock::at(DAY_START);
    for i in 0..10 {
        bucket.put(&format!("k{i}"), vec![i; 100], DAY_START - MIN);
    }
    write_batch(&feed_dir, "0001", &bucket.take_events());
    let opts = CycleOptions {
        reconcile_every: 3,
        ..Default::default()
    };
    let feed: Arc<dyn ChangeFeed> = Arc::new(FileFeed::dir(&feed_dir));
    let mut cont = Continuous::new(&repo, bucket.clone(), Some(feed), clock.clone(), opts);
    let progress = Arc::new(IngestProgress::default());
    let s = cont.cycle(progress.clone()).await.unwrap();
    assert_eq!((s.mode, s.ingest.objects), ("listing", 10));

    // k3 changes but its event is lost; k4's event arrives.
    clock.set(DAY_START + 15 * MIN);
    bucket.put("k3", b"silently changed".to_vec(), DAY_START + MIN);
    bucket.put("k4", b"announced".to_vec(), DAY_START + 2 * MIN);
    let mut events = bucket.take_events();
    events.retain(|e| e.key != "k3");
    write_batch(&feed_dir, "0002", &events);
    let s = cont.cycle(progress.clone()).await.unwrap();
    assert_eq!((s.mode, s.ingest.changed), ("changes", 1));
    let (p, _) = repo.latest_point().await.unwrap().unwrap();
    let k3 = lookup(&repo, &p, "k3").await.unwrap().unwrap();
    assert_eq!(k3.object.unwrap().size, 100, "the feed alone misses k3");

    // The third cycle lists the bucket and finds it.
    clock.set(DAY_START + 30 * MIN);
    let s = cont.cycle(progress).await.unwrap();
    assert_eq!((s.mode, s.ingest.changed), ("listing", 1));
    let (p, _) = repo.latest_point().await.unwrap().unwrap();
    let k3 = lookup(&repo, &p, "k3").await.unwrap().unwrap();
    assert_eq!(k3.object.unwrap().size, 16);
    // The feed position survives in the vault's checkpoints.
    let c = repo.checkpoint_at(p.seq).await.unwrap().unwrap();
    assert_eq!(c.position(&feed_dir.display().to_string()), Some("0002"));
}

fn created(key: &str, data: &[u8], seq: u64) -> strata_store::changes::ChangeEvent {
    strata_store::changes::ChangeEvent {
        bucket: "local".into(),
        key: key.into(),
        kind: strata_store::changes::ChangeKind::Created,
        size: Some(data.len() as u64),
        etag: String::new(),
        version_id: String::new(),
        sequencer: format!("{seq:08X}"),
        time_ns: 0,
    }
}

#[test]
fn cli_once_reads_the_feed_from_the_vaults_checkpoint() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let feed = env.path("feed");
    generate_tree(&src, 4, 50, 0);
    write_batch(&feed, "2026/11/27/09/batch-0", &[created("a.txt", b"", 0)]);
    let args = ["ingest", src.to_str().unwrap(), "--once", "--changes"];
    let mut with_feed = args.to_vec();
    with_feed.push(feed.to_str().unwrap());
    // No position for this feed yet: the first cycle is a full baseline.
    let c = env.json(&with_feed);
    assert_eq!(c["mode"], "listing", "{c}");
    assert_eq!(c["feed_position"], "2026/11/27/09/batch-0");

    write_file(&src, "a.txt", b"changed by the app", 0o644);
    write_file(&src, "new/one.txt", b"created by the app", 0o644);
    let victim = list_files(&src)
        .into_iter()
        .find(|k| k.contains("file-"))
        .unwrap();
    std::fs::remove_file(src.join(&victim)).unwrap();
    let mut gone = created(&victim, b"", 3);
    gone.kind = strata_store::changes::ChangeKind::Deleted;
    write_batch(
        &feed,
        "2026/11/27/10/batch-1",
        &[
            created("a.txt", b"changed by the app", 1),
            created("new/one.txt", b"created by the app", 2),
            created("a.txt", b"changed by the app", 1), // duplicate
            gone,
        ],
    );
    let c = env.json(&with_feed);
    assert_eq!(c["mode"], "changes", "{c}");
    assert_eq!(
        (c["events"].as_u64(), c["changed_keys"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(
        (c["changed"].as_u64(), c["deleted"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(c["feed_position"], "2026/11/27/10/batch-1");

    // The next cycle starts after the recorded position: nothing to do.
    let c = env.json(&with_feed);
    assert_eq!(
        (c["events"].as_u64(), c["changed"].as_u64()),
        (Some(0), Some(0))
    );
    let restored = env.path("restored");
    env.ok(&["restore", "--to", restored.to_str().unwrap()]);
    assert_same(&snapshot(&src), &snapshot(&restored));
    let points = env.json(&["snapshots"]);
    assert_eq!(points[1]["changed"], 2);
    assert_eq!(points[1]["deleted"], 1);
    assert_eq!(points[2]["changed"], 0);
}

#[test]
fn cli_continuous_records_points_until_sigint() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    generate_tree(&src, 5, 20, 0);
    let child = env
        .cmd(&[
            "--json",
            "ingest",
            src.to_str().unwrap(),
            "--continuous",
            "--interval",
            "1s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(env.vault().join("points")).map_or(0, |d| d.count()) < 2 {
        assert!(std::time::Instant::now() < deadline, "no second point");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    write_file(&src, "late.txt", b"written between cycles", 0o644);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopping after the cycle"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "one JSON line per cycle");
    assert!(lines.iter().all(|l| l["mode"] == "listing"));
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..lines.len() as u64).collect::<Vec<_>>());
    let points = env.json(&["snapshots"]);
    assert_eq!(points.as_array().unwrap().len(), lines.len());
}

fn dir_bytes(root: &Path) -> u64 {
    list_files(root)
        .iter()
        .map(|k| std::fs::metadata(root.join(k)).unwrap().len())
        .sum()
}

/// Bytes the vault grew by for a cycle after `changes` changes.
async fn bytes_for_changes(n_objects: usize, changes: &[usize]) -> Vec<u64> {
    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("b");
    let feed_dir = env.path("feed");
    let clock = SimClock::at(DAY_START);
    let mut rng = Rng::new(n_objects as u64);
    for i in 0..n_objects {
        bucket.put(&format!("t/{i:07}"), body(&mut rng, 400), DAY_START - MIN);
    }
    write_batch(&feed_dir, "0000", &bucket.take_events());
    let feed: Arc<dyn ChangeFeed> = Arc::new(FileFeed::dir(&feed_dir));
    let opts = CycleOptions {
        reconcile_every: 0,
        ..Default::default()
    };
    let mut cont = Continuous::new(&repo, bucket.clone(), Some(feed), clock.clone(), opts);
    let progress = Arc::new(IngestProgress::default());
    let s = cont.cycle(progress.clone()).await.unwrap();
    assert_eq!(s.ingest.objects, n_objects as u64);
    let mut out = Vec::new();
    for (round, &n) in changes.iter().enumerate() {
        let t = DAY_START + (round as i64 + 1) * 15 * MIN;
        for j in 0..n {
            let key = format!("t/{:07}", rng.below(n_objects as u64));
            match j % 4 {
                3 => bucket.delete(&key, t - MIN),
                _ => bucket.put(&key, body(&mut rng, 400), t - MIN),
            }
        }
        write_batch(
            &feed_dir,
            &format!("{:04}", round + 1),
            &bucket.take_events(),
        );
        clock.set(t);
        let before = dir_bytes(&env.vault());
        let s = cont.cycle(progress.clone()).await.unwrap();
        assert_eq!(s.mode, "changes");
        assert_eq!(s.ingest.objects, bucket.keys().len() as u64);
        out.push(dir_bytes(&env.vault()) - before);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_points_cost_follows_its_changes_not_the_bucket() {
    let small = bytes_for_changes(10_000, &[100]).await;
    let big = bytes_for_changes(100_000, &[100, 1_000]).await;
    eprintln!("bytes written: 10^4 objects, 100 changes: {small:?}; 10^5 objects, 100 and 1,000 changes: {big:?}");
    assert!(
        big[0] < small[0] * 2,
        "100 changes cost {} bytes in a 10^5 bucket, {} in a 10^4 one",
        big[0],
        small[0]
    );
    assert!(
        big[1] > big[0] * 4,
        "1,000 changes ({}) should cost well over 100 ({})",
        big[1],
        big[0]
    );
    // 100 changes of objects under 400 bytes: their data and metadata,
    // not a restatement of 10^5 entries.
    assert!(big[0] < 200 << 10, "{} bytes for 100 changes", big[0]);
}

/// The change feed from an SQS queue on the local emulator (ministack,
/// started by scripts/s3-server): messages are deleted only after the
/// point is committed, and unacknowledged ones come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_feed_is_acknowledged_only_after_the_commit() {
    use strata_store::changes::eventbridge::to_json;
    use strata_store::changes::sqs::SqsFeed;
    let Ok(url) = std::env::var("STRATA_TEST_MINISTACK_URL") else {
        eprintln!("skipped: STRATA_TEST_MINISTACK_URL is not set (scripts/s3-server start)");
        return;
    };
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(&url)
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .build();
    let sqs = aws_sdk_sqs::Client::from_conf(conf);
    let name = format!(
        "strata-changes-{}",
        Rng::new(std::process::id() as u64).next_u64() % 1_000_000
    );
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let send = |bodies: Vec<String>| {
        let (sqs, queue) = (sqs.clone(), queue.clone());
        async move {
            for b in bodies {
                sqs.send_message()
                    .queue_url(&queue)
                    .message_body(b)
                    .send()
                    .await
                    .unwrap();
            }
        }
    };

    let env = Env::new();
    let repo = local_repo(&env).await;
    let bucket = SimBucket::new("app-bucket");
    let clock = SimClock::at(DAY_START);
    for i in 0..20 {
        bucket.put(&format!("k{i:02}"), vec![i; 50], DAY_START - MIN);
    }
    send(
        bucket
            .take_events()
            .iter()
            .map(|e| to_json(e).to_string())
            .collect(),
    )
    .await;
    let feed = || async {
        Arc::new(
            SqsFeed::connect(&queue, Some(&url))
                .await
                .unwrap()
                .with_visibility(std::time::Duration::from_secs(1)),
        ) as Arc<dyn ChangeFeed>
    };
    let mut cont = Continuous::new(
        &repo,
        bucket.clone(),
        Some(feed().await),
        clock.clone(),
        CycleOptions::default(),
    );
    let progress = Arc::new(IngestProgress::default());
    let s = cont.cycle(progress.clone()).await.unwrap();
    assert_eq!((s.mode, s.ingest.objects, s.events), ("listing", 20, 20));

    // Changes: single events, one message holding an array, a duplicate,
    // a malformed message.
    bucket.put("k01", b"new one".to_vec(), DAY_START + MIN);
    bucket.delete("k02", DAY_START + 2 * MIN);
    bucket.put("k99", b"brand new".to_vec(), DAY_START + 3 * MIN);
    let events = bucket.take_events();
    let array = serde_json::Value::Array(events[1..].iter().map(to_json).collect());
    send(vec![
        to_json(&events[0]).to_string(),
        array.to_string(),
        to_json(&events[0]).to_string(),
        "{not an event".into(),
    ])
    .await;

    // A reader that crashes before committing: its messages come back.
    let crashed = feed().await;
    let (seen, _) = crashed.read(None).await.unwrap();
    assert_eq!(seen.len(), 4);
    drop(crashed);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    clock.set(DAY_START + 15 * MIN);
    let s = cont.cycle(progress.clone()).await.unwrap();
    assert_eq!(s.mode, "changes");
    assert_eq!((s.events, s.changed_keys), (4, 3));
    assert_eq!(
        (s.ingest.changed, s.ingest.deleted, s.ingest.objects),
        (2, 1, 20)
    );
    let (p, _) = repo.latest_point().await.unwrap().unwrap();
    assert_eq!(listed_at(&repo, &p).await, bucket.keys());

    // Acknowledged: nothing comes back after the visibility timeout.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let left = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert!(left.messages().is_empty(), "{:?}", left.messages());
}
