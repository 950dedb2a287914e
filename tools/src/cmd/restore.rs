//! `strata restore`: a point (or a prefix of it) into a directory.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use strata_store::backend::s3::S3Options;
use strata_store::restore::{restore_to_bucket, restore_to_dir, RestoreOptions, RestoreProgress};

use super::{fmt_bytes, fmt_time, open_for_read, print_json, resolve_point, show_progress};
use crate::cli::{Global, RestoreArgs};

pub async fn run(g: &Global, a: RestoreArgs) -> Result<ExitCode> {
    let repo = open_for_read(g).await?;
    let point = resolve_point(&repo, &a.at).await?;
    let opts = RestoreOptions {
        prefix: a.prefix.clone(),
        overwrite: a.overwrite,
        concurrency: a.concurrency,
    };
    let progress = Arc::new(RestoreProgress::default());
    let bar = show_progress(g).then(|| {
        let bar = indicatif::ProgressBar::new(point.stats.bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ({msg})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (b, p) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                b.set_position(p.bytes.load(Ordering::Relaxed));
                b.set_message(format!("{} objects", p.objects.load(Ordering::Relaxed)));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        bar
    });
    let s = if a.to.starts_with("s3://") {
        let target = S3Options::from_url(&a.to)?;
        let path_style = g.path_style.unwrap_or(g.endpoint_url.is_some());
        let client = strata_store::backend::s3::client(g.endpoint_url.as_deref(), path_style).await;
        restore_to_bucket(
            &repo,
            &point,
            &client,
            &target.bucket,
            &target.prefix,
            &opts,
            &progress,
        )
        .await
    } else {
        restore_to_dir(&repo, &point, std::path::Path::new(&a.to), &opts, &progress).await
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let s = s?;
    if g.json {
        print_json(&s)?;
    } else {
        println!(
            "restored point #{} ({}) to {}: {} objects, {} in {:.2} s",
            point.seq,
            fmt_time(point.time_ns),
            a.to,
            s.objects,
            fmt_bytes(s.bytes),
            s.elapsed_s
        );
        for u in &s.unrepresentable {
            eprintln!("strata: not restored: {u}");
        }
        for e in &s.errors {
            eprintln!("strata: failed: {e}");
        }
    }
    let clean = s.errors.is_empty() && s.unrepresentable.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
