//! `strata ingest`: one backup pass of a directory.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use strata_store::ingest::{ingest, IngestOptions, IngestProgress};
use strata_store::source::local::LocalSource;

use super::{fmt_bytes, fmt_time, now_ms_ns, open, parse_time, print_json, show_progress};
use crate::cli::{Global, IngestArgs};

pub async fn run(g: &Global, a: IngestArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let source = Arc::new(LocalSource::new(&a.source)?);
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
    if g.json {
        print_json(&s)?;
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
