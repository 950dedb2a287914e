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
