//! `strata-bench throttle`: the adaptive scheduler against a fixed
//! concurrency, under S3-like per-prefix limits shared with the bucket's
//! own application.
//!
//! A bucket on the local S3 server holds N objects over 8 prefixes; the
//! throttling proxy limits each prefix to L requests/s; a load generator
//! plays the application on half the prefixes at a share of L. Each run
//! backs the bucket up into a fresh local vault through the proxy — once
//! at a fixed concurrency with retries (as a copy tool runs), once with
//! the adaptive scheduler — and reports the application's share of 503s,
//! the share of the spare capacity the backup used, and a plot of the
//! backup's requests/s per prefix over time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::svg::Svg;
use strata_store::ingest::scheduler::SchedulerOptions;
use strata_store::ingest::{ingest, IngestOptions, IngestProgress};
use strata_store::repo::{InitOptions, OpenOptions, Repository};
use strata_store::source::s3::S3Source;
use strata_tests::throttle::{LoadGen, Proxy, ProxyConfig, Series};

#[derive(clap::Args)]
pub struct ThrottleArgs {
    /// Objects in the source bucket (spread over 8 prefixes).
    #[arg(long, default_value_t = 50_000)]
    objects: usize,
    /// Requests/s each prefix allows.
    #[arg(long, default_value_t = 200.0)]
    limit: f64,
    /// Share of the limit the application uses on prefixes p0-p3.
    #[arg(long, default_value_t = 0.6)]
    app_share: f64,
    /// Concurrency of the fixed run.
    #[arg(long, default_value_t = 16)]
    fixed_concurrency: usize,
    /// Workers reading objects in both runs.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Source bucket (created and filled when missing or short).
    #[arg(long, default_value = "strata-bench-throttle")]
    bucket: String,
    /// Runs to make: fixed, adaptive or both.
    #[arg(long, default_value = "both")]
    runs: String,
    /// Where the plots go.
    #[arg(long, default_value = "docs")]
    out_dir: std::path::PathBuf,
    /// Also write the proxy's counts per (client, prefix) per 100 ms as
    /// JSON here, one file per run (`<path>.<run>.json`).
    #[arg(long)]
    series_json: Option<std::path::PathBuf>,
}

const PREFIXES: usize = 8;
const APP_PREFIXES: usize = 4;

fn prefix(i: usize) -> String {
    format!("p{i}/")
}

async fn direct_client() -> aws_sdk_s3::Client {
    strata_store::backend::s3::client(std::env::var("AWS_ENDPOINT_URL").ok().as_deref(), true).await
}

/// Creates and fills the bucket unless it already holds the objects.
async fn prepare(client: &aws_sdk_s3::Client, a: &ThrottleArgs) -> Result<()> {
    if client.head_bucket().bucket(&a.bucket).send().await.is_err() {
        client
            .create_bucket()
            .bucket(&a.bucket)
            .send()
            .await
            .context("creating the source bucket")?;
    }
    let mut have = 0usize;
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(&a.bucket)
            .set_continuation_token(token.take())
            .send()
            .await?;
        have += page.contents().len();
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    let want = a.objects + APP_PREFIXES * 50;
    if have >= want {
        println!("source bucket {} holds {have} objects", a.bucket);
        return Ok(());
    }
    println!("filling {} with {want} objects …", a.bucket);
    let mut keys: Vec<(String, Vec<u8>)> = (0..a.objects)
        .map(|i| {
            let body = format!("{{\"object\":{i},\"pad\":\"{}\"}}", "x".repeat(900)).into_bytes();
            (format!("{}data/{i:07}", prefix(i % PREFIXES)), body)
        })
        .collect();
    for p in 0..APP_PREFIXES {
        for i in 0..50 {
            keys.push((format!("{}app/{i}", prefix(p)), vec![b'a'; 512]));
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (k, v) in keys {
        let (c, b) = (client.clone(), a.bucket.clone());
        set.spawn(async move { c.put_object().bucket(b).key(k).body(v.into()).send().await });
        while set.len() >= 32 {
            set.join_next().await.context("put task")???;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// One run's measurements.
struct Run {
    name: &'static str,
    wall_s: f64,
    objects: u64,
    backup_ok: u64,
    backup_throttled: u64,
    app_ok: u64,
    app_throttled: u64,
    spare_used: f64,
    series: BTreeMap<(String, String), Series>,
    window: (usize, usize),
}

async fn run_once(
    a: &ThrottleArgs,
    proxy: &Proxy,
    app_client: &aws_sdk_s3::Client,
    adaptive: bool,
) -> Result<Run> {
    proxy.reset();
    let app_prefixes: Vec<String> = (0..APP_PREFIXES).map(prefix).collect();
    let app = LoadGen::start(
        app_client.clone(),
        &a.bucket,
        &app_prefixes,
        a.limit * a.app_share,
        50,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir()?;
    let repo = Repository::init(
        Arc::new(strata_store::backend::local::LocalBackend::new(
            dir.path().join("vault"),
        )?),
        b"bench password",
        InitOptions::default(),
        OpenOptions {
            cache_dir: Some(dir.path().join("cache")),
        },
    )
    .await?;
    let source = Arc::new(
        S3Source::connect(&format!("s3://{}/", a.bucket), Some(&proxy.url()), true).await?,
    );
    let opts = IngestOptions {
        workers: Some(a.workers),
        partitions: Some(PREFIXES),
        schedule: SchedulerOptions {
            adaptive,
            lane_concurrency: if adaptive { 32 } else { a.fixed_concurrency },
            ..Default::default()
        },
        ..Default::default()
    };
    let start = proxy.elapsed();
    let s = ingest(&repo, source, &opts, Arc::new(IngestProgress::default())).await?;
    let end = proxy.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.stop().await;
    let series = proxy.series();
    let bucket = |t: f64| (t * 10.0) as usize;
    let window = (bucket(start), bucket(end));
    let sum = |client: &str, f: &dyn Fn(&Series, usize) -> u32| -> u64 {
        series
            .iter()
            .filter(|((c, _), _)| c == client)
            .map(|(_, s)| {
                (window.0..window.1)
                    .map(|i| u64::from(f(s, i)))
                    .sum::<u64>()
            })
            .sum()
    };
    let ok = |s: &Series, i: usize| s.ok.get(i).copied().unwrap_or(0);
    let thr = |s: &Series, i: usize| s.throttled.get(i).copied().unwrap_or(0);
    let (app_ok, app_throttled) = (sum("app", &ok), sum("app", &thr));
    let (backup_ok, backup_throttled) = (sum("strata", &ok), sum("strata", &thr));
    // Spare capacity, prefix by prefix, while the backup had work there
    // (up to its last request on the prefix): what the prefix allows minus
    // what the application was answered.
    let (mut used, mut spare) = (0.0, 0.0);
    for p in 0..PREFIXES {
        let Some(b) = series.get(&("strata".to_string(), prefix(p))) else {
            continue;
        };
        let last = (window.0..window.1)
            .rev()
            .find(|&i| b.attempts(i) > 0)
            .unwrap_or(window.0);
        let app_ok_p: u64 = series
            .get(&("app".to_string(), prefix(p)))
            .map_or(0, |s| (window.0..=last).map(|i| u64::from(ok(s, i))).sum());
        let secs = (last + 1 - window.0) as f64 / 10.0;
        spare += a.limit * secs - app_ok_p as f64;
        used += (window.0..=last).map(|i| f64::from(ok(b, i))).sum::<f64>();
    }
    Ok(Run {
        name: if adaptive { "adaptive" } else { "fixed" },
        wall_s: s.elapsed_s,
        objects: s.objects,
        backup_ok,
        backup_throttled,
        app_ok,
        app_throttled,
        spare_used: used / spare.max(1.0),
        series,
        window,
    })
}

/// Requests/s (sent, 503s included) per prefix per second, as an SVG plot.
fn plot(run: &Run, limit: f64, title: &str) -> String {
    let (w, h, left, bottom) = (760.0, 360.0, 50.0, 30.0);
    let secs = (run.window.1 - run.window.0).div_ceil(10).max(1);
    let mut lines = Vec::new();
    for p in 0..PREFIXES {
        let Some(s) = run.series.get(&("strata".to_string(), prefix(p))) else {
            continue;
        };
        let points: Vec<f64> = (0..secs)
            .map(|sec| {
                (0..10)
                    .map(|j| f64::from(s.attempts(run.window.0 + sec * 10 + j)))
                    .sum()
            })
            .collect();
        lines.push((prefix(p), points));
    }
    let ymax = lines
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(limit * 1.2, f64::max);
    let x = |i: usize| left + (w - left - 10.0) * i as f64 / secs.max(2) as f64;
    let y = |v: f64| (h - bottom) - (h - bottom - 10.0) * v / ymax;
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let mut svg = Svg::new(w, h);
    svg.text(left, 12.0, title);
    svg.axes(left, h - bottom, w - 10.0, 10.0);
    for frac in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let v = ymax * frac;
        svg.text(4.0, y(v) + 4.0, &format!("{v:.0}"));
    }
    svg.text(w / 2.0, h - 8.0, &format!("seconds (0-{secs})"));
    svg.text(4.0, 24.0, "req/s");
    for (limit_y, label) in [(limit, "limit"), (limit * 0.4, "spare on p0-p3")] {
        svg.element(&format!(
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
            y(limit_y),
            w - 10.0,
        ));
        svg.text_in(w - 110.0, y(limit_y) - 3.0, label, "#666");
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        let colour = colors[i % colors.len()];
        svg.polyline(
            points.iter().enumerate().map(|(j, v)| (x(j), y(*v))),
            colour,
            1.5,
        );
        let app = if i < APP_PREFIXES { " (app)" } else { "" };
        svg.text_in(
            w - 60.0,
            (30 + 14 * i) as f64,
            &format!("{name}{app}"),
            colour,
        );
    }
    svg.finish()
}

pub async fn throttle(a: ThrottleArgs) -> Result<()> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .context("AWS_ENDPOINT_URL: run `eval \"$(scripts/s3-server env)\"` first")?;
    let client = direct_client().await;
    prepare(&client, &a).await?;
    let proxy = Proxy::start(ProxyConfig {
        upstream: endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
        limits: (0..PREFIXES).map(|i| (prefix(i), a.limit)).collect(),
        burst_s: 0.25,
        retry_after: None,
    })
    .await?;
    let app_client = aws_sdk_s3::Client::from_conf(
        client
            .config()
            .to_builder()
            .endpoint_url(proxy.url())
            .app_name(aws_sdk_s3::config::AppName::new("app")?)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build(),
    );
    println!(
        "strata-bench throttle: {} objects over {PREFIXES} prefixes, {} req/s per prefix, application at {:.0}% on {APP_PREFIXES} of them",
        a.objects,
        a.limit,
        a.app_share * 100.0
    );
    let mut runs = Vec::new();
    let modes: Vec<bool> = match a.runs.as_str() {
        "fixed" => vec![false],
        "adaptive" => vec![true],
        _ => vec![false, true],
    };
    for adaptive in modes {
        let r = run_once(&a, &proxy, &app_client, adaptive).await?;
        let title = format!(
            "{} run: backup requests/s per prefix (503s included)",
            r.name
        );
        let path = a
            .out_dir
            .join(format!("bench-throttle-{}-{}.svg", a.limit, r.name));
        std::fs::write(&path, plot(&r, a.limit, &title))?;
        println!("wrote {}", path.display());
        if let Some(base) = &a.series_json {
            let path = base.with_extension(format!("{}.json", r.name));
            let flat: Vec<_> = r
                .series
                .iter()
                .map(|((client, prefix), s)| (client, prefix, s))
                .collect();
            std::fs::write(&path, serde_json::to_vec(&(r.window, flat))?)?;
            println!("wrote {}", path.display());
        }
        runs.push(r);
    }
    println!();
    println!("| run | wall s | objects | backup req answered | backup 503s | app requests | app 503s | app 503 share | spare capacity used |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &runs {
        let app_total = r.app_ok + r.app_throttled;
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {:.2}% | {:.0}% |",
            r.name,
            r.wall_s,
            r.objects,
            r.backup_ok,
            r.backup_throttled,
            app_total,
            r.app_throttled,
            100.0 * r.app_throttled as f64 / app_total.max(1) as f64,
            100.0 * r.spare_used
        );
    }
    Ok(())
}
