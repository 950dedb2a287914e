//! `strata-bench`: measurements that need more than a test. Results go in
//! `docs/benchmarks.md` with the machine and the command.
//!
//! `strata-bench continuous`: a synthetic bucket of N objects, a baseline
//! point, then cycles that each change a share of the objects (events
//! written as EventBridge batch files); per cycle the wall time, bytes and
//! PUTs written; then `ls` and single-key `cat` at the oldest point from a
//! cold start, with the vault GETs they cost.
//!
//! `strata-bench throttle`: the adaptive scheduler against a fixed
//! concurrency behind S3-like per-prefix limits (see `throttle.rs`).

mod compare;
mod dataset;
mod scale;
mod svg;
mod synth;
mod throttle;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use strata_store::backend::counting::Counting;
use strata_store::backend::local::LocalBackend;
use strata_store::changes::files::{write_batch_file, FileFeed};
use strata_store::changes::ChangeFeed;
use strata_store::continuous::{Continuous, CycleOptions, ManualClock};
use strata_store::ingest::IngestProgress;
use strata_store::repo::runs::StateCursor;
use strata_store::repo::{InitOptions, OpenOptions, Repository};
use strata_store::restore::{lookup, read_object};
use synth::{key, Rng, Synth};

#[derive(Parser)]
#[command(name = "strata-bench")]
enum Cli {
    /// Continuous ingest: cost of a cycle and of reading an old point.
    Continuous(ContinuousArgs),
    /// Adaptive scheduler vs fixed concurrency behind per-prefix limits
    /// (needs `scripts/s3-server start` and its env).
    Throttle(throttle::ThrottleArgs),
    /// One full pass over a stateless synthetic source of N objects:
    /// objects/s and peak RSS.
    Scale(scale::ScaleArgs),
    /// Strata against restic, rustic and rclone on the same generated
    /// dataset: backup, incremental, restore, verify, vault size.
    Compare(compare::CompareArgs),
    /// Writes the benchmark dataset of a preset into a directory, or
    /// applies the 1% mutation to one.
    Dataset(DatasetArgs),
}

#[derive(clap::Args)]
struct DatasetArgs {
    /// Preset to write.
    #[arg(long, value_enum, default_value = "small")]
    preset: dataset::Preset,
    /// Directory to write into (created).
    dir: std::path::PathBuf,
    /// Instead of writing, mutate the directory's 1% (round N).
    #[arg(long, value_name = "ROUND")]
    mutate: Option<u64>,
}

#[derive(clap::Args)]
struct ContinuousArgs {
    /// Live objects in the bucket.
    #[arg(long, default_value_t = 1_000_000)]
    objects: u32,
    /// Share of the objects changed per cycle, in percent.
    #[arg(long, default_value_t = 1.0)]
    change_pct: f64,
    /// Cycles after the baseline.
    #[arg(long, default_value_t = 4)]
    cycles: u32,
    /// Where the vault, cache and feed go (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Single-key reads to time at the oldest point.
    #[arg(long, default_value_t = 10)]
    reads: usize,
}

const PASSWORD: &[u8] = b"bench password";
const MIN: i64 = 60 * 1_000_000_000;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    strata_store::allocator::tune_for_long_runs();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> Result<()> {
    match cli {
        Cli::Continuous(a) => continuous(a).await,
        Cli::Throttle(a) => throttle::throttle(a).await,
        Cli::Scale(a) => scale::scale(a).await,
        Cli::Compare(a) => compare::compare(a).await,
        Cli::Dataset(a) => {
            if let Some(round) = a.mutate {
                let m = dataset::mutate(&a.dir, round)?;
                println!("{m:?}");
            } else {
                let (n, bytes) = dataset::Dataset::plan(a.preset).write(&a.dir)?;
                println!("{n} objects, {bytes} bytes in {}", a.dir.display());
            }
            Ok(())
        }
    }
}

async fn continuous(a: ContinuousArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let (vault, cache, feed_dir) = (root.join("vault"), root.join("cache"), root.join("feed"));
    std::fs::create_dir_all(&feed_dir)?;
    let counting = Arc::new(Counting::new(Arc::new(LocalBackend::new(&vault)?)));
    let open = OpenOptions {
        cache_dir: Some(cache.clone()),
    };
    let repo = Repository::init(
        counting.clone(),
        PASSWORD,
        InitOptions::default(),
        open.clone(),
    )
    .await?;
    let start = 1_795_737_600 * 1_000_000_000i64;
    let clock = ManualClock::at(start);
    let capacity = a.objects + a.objects / 10;
    let bucket = Arc::new(Synth::new("bench", capacity, a.objects, start - MIN));
    let feed: Arc<dyn ChangeFeed> = Arc::new(FileFeed::dir(&feed_dir));
    let opts = CycleOptions {
        reconcile_every: 0,
        ..Default::default()
    };
    let mut cont = Continuous::new(&repo, bucket.clone(), Some(feed), clock.clone(), opts);
    let progress = Arc::new(IngestProgress::default());

    println!(
        "strata-bench continuous: {} objects, {}% changed per cycle, {} cycles",
        a.objects, a.change_pct, a.cycles
    );
    println!();
    println!(
        "| cycle | mode | changes | wall s | objects/s | bytes written | PUTs | peak RSS MiB |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rng = Rng(0x5eed);
    for cycle in 0..=a.cycles {
        let changes = if cycle == 0 {
            0
        } else {
            let n = (f64::from(a.objects) * a.change_pct / 100.0).round() as usize;
            let t = start + i64::from(cycle) * 15 * MIN;
            bucket.mutate(&mut rng, n, t - MIN);
            write_batch_file(&feed_dir, &format!("{cycle:06}"), &bucket.take_events())?;
            clock.set(t);
            n
        };
        let (puts, bytes) = (counting.puts(), counting.bytes_put());
        let t0 = Instant::now();
        let s = cont.cycle(progress.clone()).await?;
        let secs = t0.elapsed().as_secs_f64();
        let handled = if cycle == 0 {
            s.ingest.objects
        } else {
            changes as u64
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {} | {} | {:.0} |",
            if cycle == 0 {
                "baseline".to_string()
            } else {
                cycle.to_string()
            },
            s.mode,
            changes,
            secs,
            handled as f64 / secs,
            counting.bytes_put() - bytes,
            counting.puts() - puts,
            peak_rss_mib()
        );
        assert_eq!(
            s.ingest.objects,
            bucket.live() as u64,
            "object count drifted"
        );
    }
    drop(cont);
    drop(repo);

    // Reading the oldest point from a cold start (fresh process state:
    // no pages in memory; the local index cache is on disk).
    println!();
    println!("| read at the oldest point (cold) | wall ms | vault GETs |");
    println!("| --- | ---: | ---: |");
    let mut cat_ms = Vec::new();
    let mut cat_gets = Vec::new();
    for r in 0..a.reads {
        let counting = Arc::new(Counting::new(Arc::new(LocalBackend::new(&vault)?)));
        let repo = Repository::open(counting.clone(), PASSWORD, open.clone()).await?;
        let i = (r as u32).wrapping_mul(2_654_435_761) % a.objects;
        let g0 = counting.gets();
        let t0 = Instant::now();
        let p = repo.point_at(start).await?;
        let e = lookup(&repo, &p, &key(i))
            .await?
            .ok_or_else(|| anyhow::anyhow!("{} missing at the oldest point", key(i)))?;
        let mut out = Vec::new();
        read_object(&repo, e.object.as_ref().expect("live"), &mut out).await?;
        anyhow::ensure!(out == synth::content(i, 1), "wrong bytes for {}", key(i));
        cat_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        cat_gets.push(counting.gets() - g0);
    }
    cat_ms.sort_by(f64::total_cmp);
    cat_gets.sort_unstable();
    println!(
        "| single-key `cat --at` (median of {}) | {:.1} | {} |",
        a.reads,
        cat_ms[cat_ms.len() / 2],
        cat_gets[cat_gets.len() / 2]
    );
    let counting = Arc::new(Counting::new(Arc::new(LocalBackend::new(&vault)?)));
    let repo = Repository::open(counting.clone(), PASSWORD, open.clone()).await?;
    let t0 = Instant::now();
    let p = repo.point_at(start).await?;
    let prefix = "tenant/042/";
    let mut c = StateCursor::new(&repo, &p.runs, p.seq, prefix).await?;
    let mut n = 0;
    while c.next().await?.is_some() {
        n += 1;
    }
    println!(
        "| `ls --at` of one tenant ({n} keys) | {:.1} | {} |",
        t0.elapsed().as_secs_f64() * 1000.0,
        counting.gets()
    );
    let (t0, g0) = (Instant::now(), counting.gets());
    let mut c = StateCursor::new(&repo, &p.runs, p.seq, "").await?;
    let mut n = 0;
    while c.next().await?.is_some() {
        n += 1;
    }
    println!(
        "| `ls --at` of the whole bucket ({n} keys) | {:.1} | {} |",
        t0.elapsed().as_secs_f64() * 1000.0,
        counting.gets() - g0
    );
    let runs = repo.latest_point().await?.map_or(0, |(p, _)| p.runs.len());
    println!();
    println!(
        "vault: {} points, {runs} runs in the latest point; peak RSS {:.0} MiB",
        repo.list_points().await?.len(),
        peak_rss_mib()
    );
    Ok(())
}
