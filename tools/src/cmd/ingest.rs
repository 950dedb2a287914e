//! `strata ingest`: one backup pass, one cycle of continuous ingest
//! (`--once`), or continuous protection (`--continuous`).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use strata_store::changes::files::FileFeed;
use strata_store::changes::sqs::SqsFeed;
use strata_store::changes::ChangeFeed;
use strata_store::continuous::{Continuous, CycleOptions, CycleSummary, SystemClock};
use strata_store::ingest::scheduler::SchedulerOptions;
use strata_store::ingest::{ingest, IngestOptions, IngestProgress, IngestSummary};
use strata_store::source::local::LocalSource;
use strata_store::source::s3::S3Source;
use strata_store::source::Source;
use tokio::signal::unix::{signal, SignalKind};

use super::{fmt_bytes, fmt_time, open, parse_time, print_json, show_progress};
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
        time_ns: a.time.as_deref().map(parse_time).transpose()?,
        pack_target_size: a
            .pack_size
            .map(|s| {
                u32::try_from(s)
                    .map_err(|_| strata_store::Error::config("pack size must be under 4 GiB"))
            })
            .transpose()?,
        schedule: SchedulerOptions {
            max_requests_per_second: a.max_requests_per_second.filter(|r| *r > 0.0),
            #[allow(clippy::cast_precision_loss)]
            max_bytes_per_second: a.max_bandwidth.filter(|b| *b > 0).map(|b| b as f64),
            adaptive: a.fixed_concurrency.is_none(),
            lane_concurrency: a.fixed_concurrency.unwrap_or(32).max(1),
            ..Default::default()
        },
        partitions: Some(a.partitions.max(1)),
        checkpoint_interval: Some(a.checkpoint_interval),
        boundaries: match &a.inventory {
            Some(m) => Some(inventory_boundaries(g, &a.source, m, a.partitions).await?),
            None => None,
        },
        ..Default::default()
    };
    if a.continuous || a.once || a.changes.is_some() {
        return run_cycles(g, &a, &repo, source, s3_source.as_deref(), opts).await;
    }
    let progress = Arc::new(IngestProgress::default());
    let bar = progress_bar(g, &progress);
    let summary = ingest(&repo, source, &opts, progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let s = summary?;
    report(g, &repo, s3_source.as_deref(), &s, None)?;
    Ok(exit_code(&s))
}

/// Continuous ingest: one cycle (`--once`, or `--changes` alone) or a
/// cycle every interval until a signal.
async fn run_cycles(
    g: &Global,
    a: &IngestArgs,
    repo: &strata_store::repo::Repository,
    source: Arc<dyn Source>,
    s3_source: Option<&S3Source>,
    opts: IngestOptions,
) -> Result<ExitCode> {
    let feed: Option<Arc<dyn ChangeFeed>> = match &a.changes {
        Some(f) if f.starts_with("s3://") => {
            let path_style = g.path_style.unwrap_or(g.endpoint_url.is_some());
            Some(Arc::new(
                FileFeed::bucket(f, g.endpoint_url.as_deref(), path_style).await?,
            ))
        }
        Some(f) if f.starts_with("https://") || f.starts_with("http://") => {
            Some(Arc::new(SqsFeed::connect(f, None).await?))
        }
        Some(f) => Some(Arc::new(FileFeed::dir(
            f.strip_prefix("file://").unwrap_or(f),
        ))),
        None => None,
    };
    let cycle_opts = CycleOptions {
        interval_ns: i64::try_from(a.interval.as_nanos()).unwrap_or(i64::MAX),
        reconcile_every: a.reconcile_every,
        ingest: opts,
    };
    let mut cont = Continuous::new(repo, source, feed, Arc::new(SystemClock), cycle_opts);
    if !a.continuous {
        let progress = Arc::new(IngestProgress::default());
        let bar = progress_bar(g, &progress);
        let summary = cont.cycle(progress).await;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let c = summary?;
        report(g, repo, s3_source, &c.ingest, Some(&c))?;
        return Ok(exit_code(&c.ingest));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL (the pass resumes)");
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                eprintln!(
                    "strata: stopping after the cycle under way commits (signal again to stop now)"
                );
                let _ = stop_tx.send(true);
            } else {
                eprintln!("strata: stopped; the next run resumes from the packs already uploaded");
                std::process::exit(130);
            }
        }
    });
    let mut partial = false;
    let mut failure = None;
    let cycles = cont
        .run(
            stop_rx,
            |c| {
                partial |= !c.ingest.errors.is_empty();
                if let Err(e) = report(g, repo, s3_source, &c.ingest, Some(c)) {
                    failure.get_or_insert(e);
                }
            },
            Arc::new(IngestProgress::default()),
        )
        .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!(cycles, "continuous ingest stopped");
    Ok(if partial {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn exit_code(s: &IngestSummary) -> ExitCode {
    if s.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn progress_bar(g: &Global, progress: &Arc<IngestProgress>) -> Option<indicatif::ProgressBar> {
    show_progress(g).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}\n  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (bar2, p) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            let mut last = (std::time::Instant::now(), 0u64);
            let mut rate = 0.0;
            loop {
                bar2.set_length(p.listed_bytes.load(Ordering::Relaxed));
                bar2.set_position(p.done_bytes.load(Ordering::Relaxed));
                let (requests, throttled) = p.scheduler().map_or((0, 0), |s| {
                    (
                        s.counters.requests.load(Ordering::Relaxed),
                        s.counters.throttled.load(Ordering::Relaxed),
                    )
                });
                let dt = last.0.elapsed().as_secs_f64();
                if dt >= 1.0 {
                    rate = requests.saturating_sub(last.1) as f64 / dt;
                    last = (std::time::Instant::now(), requests);
                }
                bar2.set_message(format!(
                    "{}/{} objects · partitions {} done, {} active of {} · {rate:.0} req/s · {throttled} throttled",
                    p.done_objects.load(Ordering::Relaxed),
                    p.listed_objects.load(Ordering::Relaxed),
                    p.partitions_done.load(Ordering::Relaxed),
                    p.partitions_active.load(Ordering::Relaxed),
                    p.partitions.load(Ordering::Relaxed),
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        bar
    })
}

/// Partition boundaries sampled from an S3 Inventory report.
async fn inventory_boundaries(
    g: &Global,
    source: &str,
    manifest: &str,
    partitions: usize,
) -> Result<Vec<String>> {
    let path_style = g.path_style.unwrap_or(g.endpoint_url.is_some());
    let prefix = if source.starts_with("s3://") {
        strata_store::backend::s3::S3Options::from_url(source)?.prefix
    } else {
        String::new()
    };
    let mut report = strata_store::source::inventory::Inventory::open(
        manifest,
        g.endpoint_url.as_deref(),
        path_style,
    )
    .await?
    .under(&prefix);
    let b = report.boundaries(partitions.max(1)).await?;
    tracing::info!(
        objects = report.objects(),
        boundaries = b.len(),
        "partitions from the inventory report"
    );
    Ok(b)
}

/// Prints what a pass (or a cycle) did: human lines, or one JSON document
/// (one JSON line per cycle in continuous mode).
fn report(
    g: &Global,
    repo: &strata_store::repo::Repository,
    s3_source: Option<&S3Source>,
    s: &IngestSummary,
    cycle: Option<&CycleSummary>,
) -> Result<()> {
    let source_requests: Vec<(&str, u64)> =
        s3_source.map(|s| s.requests.snapshot()).unwrap_or_default();
    let vault_requests = repo.backend().request_counts();
    let vault_total: u64 = vault_requests.iter().map(|(_, n)| n).sum();
    let per_object = (!vault_requests.is_empty() && s.objects > 0)
        .then(|| vault_total as f64 / s.objects as f64);
    if g.json {
        let mut v = match cycle {
            Some(c) => serde_json::to_value(c)?,
            None => serde_json::to_value(s)?,
        };
        v["source_requests"] = serde_json::json!(source_requests
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>());
        v["vault_requests"] = serde_json::json!(vault_requests
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>());
        v["vault_requests_per_object"] = serde_json::json!(per_object);
        if cycle.is_some() {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print_json(&v)?;
        }
    } else {
        println!("point #{} at {}", s.seq, fmt_time(s.time_ns));
        if let Some(c) = cycle {
            match &c.feed_position {
                Some(pos) if c.mode == "changes" => println!(
                    "  from the change feed: {} events naming {} keys{}, read to {pos}",
                    c.events,
                    c.changed_keys,
                    if c.ignored_events > 0 {
                        format!(
                            " ({} events for other buckets or prefixes ignored)",
                            c.ignored_events
                        )
                    } else {
                        String::new()
                    }
                ),
                Some(pos) => println!(
                    "  full listing diff (baseline or reconciliation); feed read to {}",
                    if pos.is_empty() { "(empty feed)" } else { pos }
                ),
                None => println!("  full listing diff"),
            }
        }
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
        println!(
            "  partitions {}{}, source requests {} ({} throttled, {} retried)",
            s.partitions,
            if s.resumed_partitions > 0 {
                format!(
                    " ({} finished by the interrupted run resumed)",
                    s.resumed_partitions
                )
            } else {
                String::new()
            },
            s.requests,
            s.throttled,
            s.retries
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
    Ok(())
}
