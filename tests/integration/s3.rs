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
    for v in versions {
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
    let v = &versions[0];
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
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v["clean"], true, "{v}");
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
