//! Against the real S3 server the project starts (radosgw with Object Lock;
//! `scripts/s3-server`). Skipped, with a message, unless STRATA_TEST_S3=1:
//! `.ci/run` starts the server and sets it.

use std::sync::Arc;

use strata_store::backend::s3::{S3Backend, S3Options};
use strata_store::backend::{conformance, Backend};
use strata_tests::*;

macro_rules! require_s3 {
    () => {
        if !s3_enabled() {
            eprintln!("skipped: STRATA_TEST_S3 is not 1 (run scripts/s3-server start)");
            return;
        }
    };
}

async fn backend(bucket: &str, prefix: &str) -> S3Backend {
    let mut o = S3Options::from_url(&format!("s3://{bucket}/{prefix}")).unwrap();
    o.endpoint_url = std::env::var("AWS_ENDPOINT_URL").ok();
    o.path_style = true;
    S3Backend::connect(o).await.unwrap()
}

#[tokio::test]
async fn conformance_on_a_locked_bucket() {
    require_s3!();
    let client = s3_client().await;
    let bucket = new_bucket(&client, true).await;
    let b = backend(&bucket, "vault").await;
    eprintln!("dialect: {:?}", b.dialect());
    conformance::run_all(&b).await;
}

#[tokio::test]
async fn conformance_on_a_plain_bucket() {
    require_s3!();
    let client = s3_client().await;
    let bucket = new_bucket(&client, false).await;
    let b = backend(&bucket, "").await;
    conformance::run_all(&b).await;
    let _ = Arc::new(b) as Arc<dyn Backend>;
}

fn s3_env(bucket: &str) -> Env {
    let mut env = Env::new();
    std::fs::create_dir_all(env.path("cache")).unwrap();
    env.set_vault(&format!("s3://{bucket}/vault"));
    env
}

#[tokio::test]
async fn init_refuses_a_bucket_without_object_lock() {
    require_s3!();
    let client = s3_client().await;
    let bucket = new_bucket(&client, false).await;
    let env = s3_env(&bucket);
    let out = env.run(&["init"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Object Lock"));
    env.ok(&["init", "--no-object-lock"]);
    let cfg = env.json(&["inspect", "config"]);
    assert_eq!(cfg["lock_mode"], "none");
}

#[tokio::test]
async fn directory_into_locked_vault_restores_and_every_object_is_locked() {
    require_s3!();
    let client = s3_client().await;
    let bucket = new_bucket(&client, true).await;
    let env = s3_env(&bucket);
    env.ok(&[
        "init",
        "--pack-size",
        "256K",
        "--lock-mode",
        "governance",
        "--retention-days",
        "2",
    ]);
    let cfg = env.json(&["inspect", "config"]);
    assert_eq!(
        (cfg["lock_mode"].as_str(), cfg["retention_days"].as_u64()),
        (Some("governance"), Some(2))
    );
    let src = env.path("src");
    generate_tree(&src, 9, 120, 1);
    let snap = snapshot(&src);
    env.ok(&["ingest", src.to_str().unwrap()]);
    let target = env.path("restore");
    env.ok(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));

    // Every object carries the lock mode and a retain-until of ~2 days.
    let listed = client
        .list_object_versions()
        .bucket(&bucket)
        .prefix("vault/")
        .send()
        .await
        .unwrap();
    let versions = listed.versions();
    assert!(versions.len() > 5);
    let min_until = std::time::SystemTime::now() + std::time::Duration::from_secs(2 * 86_400 - 600);
    let min_until = aws_sdk_s3::primitives::DateTime::from(min_until);
    let mut unlocked = Vec::new();
    // Dialect probes (a few bytes each, written when a client connects)
    // are not vault objects.
    for v in versions
        .iter()
        .filter(|v| !v.key().unwrap_or("").contains(".strata-dialect-probe/"))
    {
        let r = client
            .get_object_retention()
            .bucket(&bucket)
            .key(v.key().unwrap())
            .version_id(v.version_id().unwrap())
            .send()
            .await;
        let Ok(r) = r else {
            unlocked.push(v.key().unwrap().to_string());
            continue;
        };
        let r = r.retention().unwrap();
        assert_eq!(
            r.mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{:?}",
            v.key()
        );
        assert!(
            r.retain_until_date().unwrap().secs() >= min_until.secs(),
            "{:?}",
            v.key()
        );
    }
    assert!(
        unlocked.is_empty(),
        "objects without retention: {unlocked:?}"
    );

    // With the writer's credentials, deleting a locked version fails.
    let v = versions
        .iter()
        .find(|v| !v.key().unwrap_or("").contains(".strata-dialect-probe/"))
        .unwrap();
    let del = client
        .delete_object()
        .bucket(&bucket)
        .key(v.key().unwrap())
        .version_id(v.version_id().unwrap())
        .send()
        .await;
    assert!(del.is_err(), "deleted a locked version of {:?}", v.key());
    // Shortening retention fails too (COMPLIANCE semantics need no bypass;
    // GOVERNANCE refuses without the bypass header).
    let shorten = client
        .put_object_retention()
        .bucket(&bucket)
        .key(v.key().unwrap())
        .version_id(v.version_id().unwrap())
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(1))
                .build(),
        )
        .send()
        .await;
    assert!(shorten.is_err(), "shortened retention");
    let v = env.json(&["verify", "--read-data", "--retention"]);
    assert_eq!(v["clean"], true, "{v}");
    assert!(
        v["report"]["retention_checked"].as_u64().unwrap() > 5,
        "{v}"
    );
}

#[tokio::test]
async fn delete_markers_and_forged_versions_hide_nothing() {
    require_s3!();
    let client = s3_client().await;
    let bucket = new_bucket(&client, true).await;
    let env = s3_env(&bucket);
    env.ok(&[
        "init",
        "--pack-size",
        "256K",
        "--lock-mode",
        "governance",
        "--retention-days",
        "1",
    ]);
    let src = env.path("src");
    generate_tree(&src, 10, 60, 0);
    let snap = snapshot(&src);
    env.ok(&["ingest", src.to_str().unwrap()]);

    // The attacker holds the ingest credentials: delete markers on every
    // point and pack, a forged newer version of every other object.
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("vault/")
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    assert!(keys.iter().any(|k| k.contains("/points/")));
    for k in &keys {
        if k.contains("/points/") || k.contains("/packs/") {
            client
                .delete_object()
                .bucket(&bucket)
                .key(k)
                .send()
                .await
                .unwrap();
        } else {
            client
                .put_object()
                .bucket(&bucket)
                .key(k)
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b"forged"))
                .send()
                .await
                .unwrap();
        }
    }
    // Plain listing now shows no points at all…
    let after = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("vault/points/")
        .send()
        .await
        .unwrap();
    assert_eq!(after.contents().len(), 0);
    // …yet strata (fresh cache) still sees, restores and verifies everything.
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let target = env.path("restore");
    env.ok(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
}

/// What the test compares per object: bytes, system metadata, user metadata, tags.
type ObjectState = (
    Vec<u8>,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<(String, String)>,
    Vec<(String, String)>,
);

async fn object_state(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> ObjectState {
    let o = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    let (ct, ce, cc) = (
        o.content_type().map(str::to_string),
        o.content_encoding().map(str::to_string),
        o.cache_control().map(str::to_string),
    );
    let mut user: Vec<(String, String)> = o
        .metadata()
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
    user.sort();
    let body = o.body.collect().await.unwrap().into_bytes().to_vec();
    let t = client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = t
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    tags.sort();
    (body, ct, ce, cc, user, tags)
}

#[tokio::test]
async fn bucket_to_locked_vault_to_new_bucket_keeps_bytes_and_metadata() {
    require_s3!();
    let client = s3_client().await;
    let source = new_bucket(&client, false).await;
    let n = 3000usize;
    let mut keys = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let key = match i % 5 {
            0 => format!("tenant/{}/attachments/{i}/report ü {i}.json", i % 13),
            1 => format!("logs/2026/11/{i:05}.log.gz"),
            2 => format!("img/{i}.bin"),
            3 => format!("empty-{i}"),
            _ => format!("deep/a/b/c/{i}"),
        };
        keys.push(key.clone());
        let c = client.clone();
        let bucket = source.clone();
        set.spawn(async move {
            let mut rng = Rng::new(i as u64 + 1);
            let len = if i % 5 == 3 {
                0
            } else {
                rng.below(20_000) as usize
            };
            let mut req = c
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(aws_sdk_s3::primitives::ByteStream::from(
                    rng.bytes(len, i % 2 == 0),
                ))
                .content_type(["application/json", "text/plain", "image/png"][i % 3])
                .metadata("tenant", format!("{}", i % 13));
            if i % 5 == 1 {
                req = req.content_encoding("gzip").cache_control("max-age=60");
            }
            if i % 7 == 0 {
                req = req
                    .metadata("origin", "upload ✓")
                    .tagging(format!("class=gold&n={i}"));
            }
            req.send().await.unwrap();
        });
        while set.len() >= 16 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }

    let vault = new_bucket(&client, true).await;
    let env = s3_env(&vault);
    env.ok(&["init", "--lock-mode", "governance", "--retention-days", "1"]);
    let s = env.json(&["ingest", &format!("s3://{source}/")]);
    assert_eq!(s["objects"], n as u64, "{s}");
    let per_object = s["vault_requests_per_object"].as_f64().unwrap();
    assert!(
        per_object < 0.1,
        "{per_object} vault requests per source object"
    );
    assert!(s["source_requests"]["get"].as_u64().unwrap() >= n as u64);

    let target = new_bucket(&client, false).await;
    env.ok(&[
        "restore",
        "--to",
        &format!("s3://{target}/"),
        "--concurrency",
        "16",
    ]);
    // Restoring again refuses to overwrite.
    let again = env.run(&[
        "restore",
        "--to",
        &format!("s3://{target}/"),
        "--prefix",
        "img/1",
    ]);
    assert_eq!(again.status.code(), Some(3));

    for key in keys.iter().step_by(7).chain(keys.iter().take(10)) {
        let want = object_state(&client, &source, key).await;
        let got = object_state(&client, &target, key).await;
        assert!(want == got, "{key}: restored object differs");
    }
    // Every key is there.
    let mut listed = 0;
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(&target)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        listed += page.contents().len();
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(listed, n);
}

/// Conditional creates on ministack (radosgw ignores If-None-Match on
/// versioned buckets, so this runs on the emulator that implements it).
#[tokio::test]
async fn two_writers_racing_for_names_leave_exactly_one_winner_on_ministack() {
    let Ok(url) = std::env::var("STRATA_TEST_MINISTACK_URL") else {
        eprintln!("skipped: STRATA_TEST_MINISTACK_URL is not set (scripts/s3-server start)");
        return;
    };
    let client = strata_store::backend::s3::client(Some(&url), true).await;
    let bucket = new_bucket(&client, false).await;
    let connect = |prefix: &str| {
        let mut o = S3Options::from_url(&format!("s3://{bucket}/{prefix}")).unwrap();
        o.endpoint_url = Some(url.clone());
        o.path_style = true;
        S3Backend::connect(o)
    };
    let (a, b) = (
        connect("vault").await.unwrap(),
        connect("vault").await.unwrap(),
    );
    assert_eq!(
        a.dialect(),
        strata_store::backend::s3::S3Dialect::Conditional
    );
    for i in 0..25 {
        let name = format!("points/{i:016x}");
        let (ra, rb) = tokio::join!(
            a.put(&name, bytes::Bytes::from(format!("writer a {i}"))),
            b.put(&name, bytes::Bytes::from(format!("writer b {i}")))
        );
        assert_eq!(
            ra.is_ok() as u8 + rb.is_ok() as u8,
            1,
            "{name}: {ra:?} {rb:?}"
        );
        let loser = if ra.is_ok() { rb } else { ra };
        assert_eq!(
            loser.unwrap_err().kind(),
            strata_store::ErrorKind::AlreadyExists
        );
        let stored = strata_store::backend::get_all(&a, &name).await.unwrap();
        let winner = if stored.starts_with(b"writer a") {
            "a"
        } else {
            "b"
        };
        assert_eq!(stored, format!("writer {winner} {i}").as_bytes());
    }
    conformance::run_all(&connect("conformance").await.unwrap()).await;
}

/// Continuous ingest from a versioned bucket, with the change feed as
/// EventBridge batch files under another bucket's prefix.
#[tokio::test]
async fn change_feed_from_a_bucket_prefix_drives_points_of_a_versioned_source() {
    use aws_sdk_s3::primitives::ByteStream;
    use strata_store::changes::{eventbridge::to_json, ChangeEvent, ChangeKind};
    require_s3!();
    let client = s3_client().await;
    let source = new_bucket(&client, false).await;
    client
        .put_bucket_versioning()
        .bucket(&source)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let feed = new_bucket(&client, false).await;
    let sequencer = std::cell::Cell::new(0u64);
    let next_sequencer = || {
        sequencer.set(sequencer.get() + 1);
        format!("{:012X}", sequencer.get())
    };
    let mut events: Vec<ChangeEvent> = Vec::new();
    let mut expected = std::collections::BTreeMap::new();
    let put = |key: String, body: Vec<u8>| {
        let (c, b) = (client.clone(), source.clone());
        let seq = next_sequencer();
        async move {
            let out = c
                .put_object()
                .bucket(&b)
                .key(&key)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .unwrap();
            ChangeEvent {
                bucket: b,
                key,
                kind: ChangeKind::Created,
                size: Some(body.len() as u64),
                etag: out.e_tag().unwrap_or_default().trim_matches('"').into(),
                version_id: out.version_id().unwrap_or_default().into(),
                sequencer: seq,
                time_ns: 0,
            }
        }
    };
    let mut rng = Rng::new(44);
    for i in 0..40 {
        let len = rng.below(5000) as usize;
        let body = rng.bytes(len, true);
        let key = format!("tenant/{}/doc-{i}.json", i % 4);
        expected.insert(key.clone(), body.clone());
        events.push(put(key, body).await);
    }
    let write_batch = |name: &str, events: &[ChangeEvent]| {
        let body: String = events.iter().map(|e| format!("{}\n", to_json(e))).collect();
        let (c, b, name) = (client.clone(), feed.clone(), format!("events/{name}"));
        async move {
            c.put_object()
                .bucket(&b)
                .key(name)
                .body(ByteStream::from(body.into_bytes()))
                .send()
                .await
                .unwrap();
        }
    };
    write_batch("2026/11/27/10/batch-0", &events).await;

    let vault = new_bucket(&client, true).await;
    let env = s3_env(&vault);
    env.ok(&["init", "--lock-mode", "governance", "--retention-days", "1"]);
    let src_url = format!("s3://{source}/");
    let feed_url = format!("s3://{feed}/events/");
    let once = ["ingest", &src_url, "--once", "--changes", &feed_url];
    let c = env.json(&once);
    assert_eq!(
        (c["mode"].as_str(), c["objects"].as_u64()),
        (Some("listing"), Some(40)),
        "{c}"
    );
    let state_0 = expected.clone();

    // Overwrite 3, delete 2, create 2; plus a duplicate, an event of
    // another bucket and a late event of a superseded version.
    let mut batch = Vec::new();
    for i in [1, 2, 3] {
        let key = format!("tenant/{}/doc-{i}.json", i % 4);
        let body = format!("version two of {i}").into_bytes();
        expected.insert(key.clone(), body.clone());
        batch.push(put(key, body).await);
    }
    batch.push(batch[0].clone());
    batch.insert(0, events[1].clone());
    for i in [10, 11] {
        let key = format!("tenant/{}/doc-{i}.json", i % 4);
        client
            .delete_object()
            .bucket(&source)
            .key(&key)
            .send()
            .await
            .unwrap();
        expected.remove(&key);
        batch.push(ChangeEvent {
            bucket: source.clone(),
            key,
            kind: ChangeKind::Deleted,
            size: None,
            etag: String::new(),
            version_id: String::new(),
            sequencer: next_sequencer(),
            time_ns: 0,
        });
    }
    for i in [100, 101] {
        let key = format!("new/{i}.bin");
        let body = rng.bytes(70_000, false);
        expected.insert(key.clone(), body.clone());
        batch.push(put(key, body).await);
    }
    let mut foreign = batch[2].clone();
    foreign.bucket = "someone-elses-bucket".into();
    batch.push(foreign);
    write_batch("2026/11/27/10/batch-1", &batch).await;

    let c = env.json(&once);
    assert_eq!(c["mode"], "changes", "{c}");
    assert_eq!(c["changed_keys"], 7, "{c}");
    assert_eq!(c["ignored_events"], 1, "{c}");
    assert_eq!(
        (c["changed"].as_u64(), c["deleted"].as_u64()),
        (Some(5), Some(2)),
        "{c}"
    );
    assert_eq!(c["objects"], 40, "{c}");
    assert_eq!(c["feed_position"], "2026/11/27/10/batch-1");
    // Stamped by the server's clock (its Date header has whole seconds).
    assert_eq!(c["time_ns"].as_i64().unwrap() % 1_000_000_000, 0, "{c}");

    // Both points restore to buckets byte for byte.
    for (at, state) in [("#0", &state_0), ("#1", &expected)] {
        let target = new_bucket(&client, false).await;
        env.ok(&["restore", "--at", at, "--to", &format!("s3://{target}/")]);
        let mut got = std::collections::BTreeMap::new();
        for key in state.keys() {
            let o = client
                .get_object()
                .bucket(&target)
                .key(key)
                .send()
                .await
                .unwrap();
            got.insert(key.clone(), o.body.collect().await.unwrap().to_vec());
        }
        assert!(&got == state, "restore of {at} differs");
        let listed = client
            .list_objects_v2()
            .bucket(&target)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.contents().len(), state.len(), "{at}: extra objects");
    }
}

/// With the ingest role's credentials (a second radosgw user under the
/// bucket policy of docs/operations.md), a writer can add history but not
/// remove or rewrite it: deletes, version deletes, retention cuts and
/// policy changes are refused, a forged version changes nothing read.
#[tokio::test]
async fn the_ingest_credentials_cannot_delete_overwrite_or_shorten() {
    require_s3!();
    let (Ok(ak), Ok(sk)) = (
        std::env::var("STRATA_TEST_S3_INGEST_ACCESS_KEY"),
        std::env::var("STRATA_TEST_S3_INGEST_SECRET_KEY"),
    ) else {
        panic!("scripts/s3-server env gives the ingest user's keys");
    };
    let owner = s3_client().await;
    let bucket = new_bucket(&owner, true).await;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadAndCreate", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam:::user/ingest"]},
             "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectRetention",
                        "s3:GetObjectRetention", "s3:ListBucket", "s3:ListBucketVersions",
                        "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"],
             "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]},
            {"Sid": "NeverDeleteOrBypass", "Effect": "Deny",
             "Principal": {"AWS": ["arn:aws:iam:::user/ingest"]},
             "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                        "s3:PutBucketObjectLockConfiguration", "s3:PutBucketPolicy", "s3:PutBucketVersioning"],
             "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]}
        ]
    });
    owner
        .put_bucket_policy()
        .bucket(&bucket)
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    let env = s3_env(&bucket);
    env.ok(&[
        "init",
        "--pack-size",
        "256K",
        "--lock-mode",
        "governance",
        "--retention-days",
        "1",
    ]);
    let src = env.path("src");
    generate_tree(&src, 31, 40, 0);
    let snap = snapshot(&src);
    let as_ingest = |args: &[&str]| {
        let out = env
            .cmd(args)
            .env("AWS_ACCESS_KEY_ID", &ak)
            .env("AWS_SECRET_ACCESS_KEY", &sk)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    as_ingest(&["ingest", src.to_str().unwrap()]);

    let creds = aws_sdk_s3::config::Credentials::new(&ak, &sk, None, None, "ingest");
    let conf = owner
        .config()
        .to_builder()
        .credentials_provider(creds)
        .build();
    let ingest = aws_sdk_s3::Client::from_conf(conf);
    let versions = ingest
        .list_object_versions()
        .bucket(&bucket)
        .prefix("vault/points/")
        .send()
        .await
        .unwrap();
    let point = versions.versions()[0].clone();
    let key = point.key().unwrap().to_string();
    let refused = |what: &str, r: Result<(), String>| {
        let e = r.expect_err(&format!("{what} was allowed"));
        assert!(
            e.contains("AccessDenied") || e.contains("403"),
            "{what}: {e}"
        );
    };
    let show = |e: &dyn std::fmt::Debug| format!("{e:?}");
    refused(
        "delete",
        ingest
            .delete_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| show(&e)),
    );
    refused(
        "delete version",
        ingest
            .delete_object()
            .bucket(&bucket)
            .key(&key)
            .version_id(point.version_id().unwrap())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| show(&e)),
    );
    let shorten = ingest
        .put_object_retention()
        .bucket(&bucket)
        .key(&key)
        .version_id(point.version_id().unwrap())
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(1))
                .build(),
        )
        .send()
        .await;
    assert!(shorten.is_err(), "retention shortened");
    refused(
        "bucket policy",
        ingest
            .put_bucket_policy()
            .bucket(&bucket)
            .policy("{}")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| show(&e)),
    );
    // Overwriting is a new version: the oldest, locked one still wins.
    ingest
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"forged point",
        ))
        .send()
        .await
        .unwrap();

    // Read back with the same credentials: radosgw, unlike S3 with
    // BucketOwnerEnforced, leaves the writer owning its objects.
    let v: serde_json::Value = serde_json::from_str(&as_ingest(&[
        "--json",
        "verify",
        "--read-data",
        "--retention",
    ]))
    .unwrap();
    assert_eq!(v["clean"], true, "{v}");
    let target = env.path("restore");
    as_ingest(&["restore", "--to", target.to_str().unwrap()]);
    assert_same(&snap, &snapshot(&target));
}
