//! `strata ingest`: one backup pass of a directory.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use strata_store::ingest::{ingest, IngestOptions, IngestProgress};
use strata_store::source::local::LocalSource;
use strata_store::source::s3::S3Source;
use strata_store::source::Source;

use super::{fmt_bytes, fmt_time, now_ms_ns, open, parse_time, print_json, show_progress};
use crate::cli::{Global, IngestArgs};

pub async fn run(g: &Global, a: IngestArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let s3_source = if a.source.starts_with("s3://") {
        let path_style = g.path_style.unwrap_or(g.endpoint_url.is_some());
        Some(Arc::new(
            S3Source::connect(&a.source, g.endpoint_url.as_deref(), path_style).await?,
        ))
    } else {
        None
    };
    let source: Arc<dyn Source> = match &s3_source {
        Some(s) => s.clone(),
        None => Arc::new(LocalSource::new(&a.source)?),
    };
    let opts = IngestOptions {
        workers: a.workers,
        time_ns: Some(match &a.time {
            Some(t) => parse_time(t)?,
            None => now_ms_ns(),
        }),
        pack_target_size: a
            .pack_size
            .map(|s| {
                u32::try_from(s)
                    .map_err(|_| strata_store::Error::config("pack size must be under 4 GiB"))
            })
            .transpose()?,
        ..Default::default()
    };
    let progress = Arc::new(IngestProgress::default());
    let bar = show_progress(g).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ({msg}) eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (bar2, p) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                bar2.set_length(p.listed_bytes.load(Ordering::Relaxed));
                bar2.set_position(p.done_bytes.load(Ordering::Relaxed));
                bar2.set_message(format!(
                    "{}/{} objects",
                    p.done_objects.load(Ordering::Relaxed),
                    p.listed_objects.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        bar
    });
    let summary = ingest(&repo, source, &opts, progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let s = summary?;
    let source_requests: Vec<(&str, u64)> = s3_source
        .as_ref()
        .map(|s| s.requests.snapshot())
        .unwrap_or_default();
    let vault_requests = repo.backend().request_counts();
    let vault_total: u64 = vault_requests.iter().map(|(_, n)| n).sum();
    let per_object = (!vault_requests.is_empty() && s.objects > 0)
        .then(|| vault_total as f64 / s.objects as f64);
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        v["source_requests"] = serde_json::json!(source_requests
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>());
        v["vault_requests"] = serde_json::json!(vault_requests
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>());
        v["vault_requests_per_object"] = serde_json::json!(per_object);
        print_json(&v)?;
    } else {
        println!("point #{} at {}", s.seq, fmt_time(s.time_ns));
        println!(
            "  objects {} ({}), changed {}, deleted {}, unchanged {}",
            s.objects,
            fmt_bytes(s.bytes),
            s.changed,
            s.deleted,
            s.unchanged
        );
        println!(
            "  read {}, stored {} new in {} blobs, {} packs{}",
            fmt_bytes(s.bytes_read),
            fmt_bytes(s.new_stored_bytes),
            s.new_blobs,
            s.packs_written,
            if s.recovered_packs > 0 {
                format!(
                    ", {} packs from an interrupted pass indexed",
                    s.recovered_packs
                )
            } else {
                String::new()
            }
        );
        let secs = s.elapsed_s.max(1e-9);
        println!(
            "  {:.2} s, {:.0} objects/s, {}/s",
            s.elapsed_s,
            (s.changed + s.unchanged) as f64 / secs,
            fmt_bytes((s.bytes_read as f64 / secs) as u64)
        );
        let fmt = |r: &[(&str, u64)]| {
            r.iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !source_requests.is_empty() {
            println!("  source requests: {}", fmt(&source_requests));
        }
        if let Some(p) = per_object {
            println!(
                "  vault requests: {} ({p:.3} per source object)",
                fmt(&vault_requests)
            );
        }
        if s.skipped > 0 {
            println!(
                "  skipped {} entries the source cannot represent (see log)",
                s.skipped
            );
        }
        for e in &s.errors {
            eprintln!("strata: not backed up: {e}");
        }
    }
    Ok(if s.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
