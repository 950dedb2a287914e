//! `strata-bench scale`: one full pass over a stateless synthetic source
//! of N objects (0–4 KiB of compressible JSON each, generated from the
//! index), reporting objects/s and peak RSS, to show how both behave as N
//! grows (10^5, 10^6, 10^7: one process per N, so peaks do not mix).
//!
//! The source keeps no per-object state: keys are
//! `tenant/<i mod 997>/attachments/<i:08>/file.json`, listed in key order
//! by walking tenants, then indices, page by page.

use std::sync::Arc;

use anyhow::Result;

use crate::svg::Svg;
use strata_store::ingest::{ingest, IngestOptions, IngestProgress};
use strata_store::repo::{InitOptions, OpenOptions, Repository};
use strata_store::source::{KeyRange, ListPage, Source, SourceObject};

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Objects in the synthetic source.
    #[arg(long, default_value_t = 100_000)]
    objects: u32,
    /// Where the vault and cache go (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Run these sizes instead, each in a process of its own (so peaks do
    /// not mix), print the table and write an SVG plot here.
    #[arg(long, value_delimiter = ',', requires = "plot")]
    sizes: Vec<u32>,
    /// Where the plot of `--sizes` goes.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

/// One size's result row.
struct Point {
    objects: f64,
    per_s: f64,
    rss: f64,
}

/// Runs each size in a child process and plots objects/s and peak RSS.
fn sizes(a: &ScaleArgs, plot_path: &std::path::Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut points = Vec::new();
    println!("| objects | wall s | objects/s | MiB/s | partitions | peak RSS MiB |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &n in &a.sizes {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["scale", "--objects", &n.to_string()]);
        if let Some(d) = &a.dir {
            let d = d.join(n.to_string());
            cmd.arg("--dir").arg(&d);
        }
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(row) = text.lines().rfind(|l| l.starts_with('|')) else {
            anyhow::bail!(
                "scale {n} printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        println!("{row}");
        let cells: Vec<f64> = row
            .split('|')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        if let [objects, _, per_s, _, _, rss] = cells[..] {
            points.push(Point {
                objects,
                per_s,
                rss,
            });
        }
        if let Some(d) = &a.dir {
            let _ = std::fs::remove_dir_all(d.join(n.to_string()));
        }
    }
    std::fs::write(plot_path, plot(&points))?;
    println!("wrote {}", plot_path.display());
    Ok(())
}

/// Two panels over log10(objects): objects/s and peak RSS MiB.
fn plot(points: &[Point]) -> String {
    let (pw, ph, left, top) = (320.0, 200.0, 50.0, 30.0);
    let mut svg = Svg::new(2.0 * (pw + left) + 20.0, ph + top + 40.0);
    let xs: Vec<f64> = points.iter().map(|p| p.objects.max(1.0).log10()).collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).floor(),
        xs.iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(1.0),
    );
    let series: [(&str, Vec<f64>); 2] = [
        ("objects/s", points.iter().map(|p| p.per_s).collect()),
        ("peak RSS MiB", points.iter().map(|p| p.rss).collect()),
    ];
    for (k, (name, ys)) in series.iter().enumerate() {
        let ox = left + f64::from(u8::try_from(k).unwrap_or(0)) * (pw + left);
        let max = ys.iter().copied().fold(0.0, f64::max).max(1e-9) * 1.15;
        let x = |v: f64| ox + pw * (v - x0) / (x1 - x0).max(1e-9);
        let y = |v: f64| top + ph - ph * v / max;
        svg.text(ox, 16.0, &format!("{name} against objects in the pass"));
        svg.axes(ox, top + ph, ox + pw, top);
        let mut e = x0;
        while e <= x1 + 1e-9 {
            svg.text(x(e) - 10.0, top + ph + 14.0, &format!("10^{e}"));
            e += 1.0;
        }
        svg.text(ox - 45.0, top + 4.0, &format!("{max:.0}"));
        svg.text(ox - 12.0, top + ph, "0");
        svg.polyline(
            xs.iter().zip(ys).map(|(&a, &b)| (x(a), y(b))),
            "#1f77b4",
            2.0,
        );
        for (&a, &b) in xs.iter().zip(ys) {
            svg.element(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f77b4\"/>",
                x(a),
                y(b)
            ));
            svg.text(x(a) + 4.0, y(b) - 6.0, &format!("{b:.0}"));
        }
    }
    svg.finish()
}

const TENANTS: u32 = 997;
const PAGE: usize = 1000;

/// N objects, generated on demand.
pub struct Scale {
    n: u32,
}

fn key(i: u32) -> String {
    format!("tenant/{:03}/attachments/{i:08}/file.json", i % TENANTS)
}

fn parse(key: &str) -> Option<u32> {
    key.split('/').nth(3)?.parse().ok()
}

fn size(i: u32) -> u64 {
    u64::from(i.wrapping_mul(2_654_435_761) % 4097)
}

fn content(i: u32) -> Vec<u8> {
    let len = size(i) as usize;
    let mut out = format!("{{\"id\":{i},\"tenant\":{},\"body\":\"", i % TENANTS).into_bytes();
    while out.len() < len {
        out.extend_from_slice(b"lorem ipsum dolor sit amet ");
    }
    out.truncate(len);
    out
}

impl Scale {
    fn object(&self, i: u32) -> SourceObject {
        SourceObject {
            key: key(i),
            size: size(i),
            mtime_ns: 1_795_737_600_000_000_000,
            etag: format!("\"{i:08x}\""),
            ..Default::default()
        }
    }

    /// Indices in key order from the first key after `after`.
    fn after(&self, after: &str) -> impl Iterator<Item = u32> + '_ {
        // Keys sort by tenant, then by index (zero-padded).
        let (t0, i0) = if after.as_bytes() < b"tenant/".as_slice() {
            (0, None)
        } else if !after.starts_with("tenant/") {
            (TENANTS, None)
        } else {
            let t = after.split('/').nth(1).and_then(|t| t.parse::<u32>().ok());
            (t.unwrap_or(TENANTS), parse(after))
        };
        (t0..TENANTS).flat_map(move |t| {
            let first = match i0 {
                Some(i) if t == t0 => i + TENANTS,
                _ => t,
            };
            (first..self.n).step_by(TENANTS as usize)
        })
    }
}

#[async_trait::async_trait]
impl Source for Scale {
    fn describe(&self) -> String {
        format!("synthetic:{}", self.n)
    }

    async fn list(&self) -> strata_store::Result<(Vec<SourceObject>, u64)> {
        Ok((self.after("").map(|i| self.object(i)).collect(), 0))
    }

    async fn list_page(
        &self,
        range: &KeyRange,
        after: Option<&str>,
    ) -> strata_store::Result<ListPage> {
        let from = after.unwrap_or(&range.after);
        let mut objects = Vec::with_capacity(PAGE);
        for i in self.after(from) {
            let o = self.object(i);
            if range.is_past(&o.key) || objects.len() == PAGE {
                let next = (objects.len() == PAGE && !range.is_past(&o.key))
                    .then(|| objects.last().map(|l: &SourceObject| l.key.clone()))
                    .flatten();
                return Ok(ListPage {
                    objects,
                    skipped: 0,
                    next,
                });
            }
            objects.push(o);
        }
        Ok(ListPage {
            objects,
            skipped: 0,
            next: None,
        })
    }

    async fn common_prefixes(&self, under: &str) -> strata_store::Result<Option<Vec<String>>> {
        Ok(Some(match under {
            "" => vec!["tenant/".into()],
            "tenant/" => (0..TENANTS.min(self.n))
                .map(|t| format!("tenant/{t:03}/"))
                .collect(),
            _ => Vec::new(),
        }))
    }

    fn open(
        &self,
        obj: &SourceObject,
    ) -> strata_store::Result<(Box<dyn std::io::Read + Send>, SourceObject)> {
        let i = parse(&obj.key)
            .filter(|&i| i < self.n)
            .ok_or_else(|| strata_store::Error::not_found(obj.key.clone()))?;
        Ok((Box::new(std::io::Cursor::new(content(i))), self.object(i)))
    }

    fn restat(&self, obj: &SourceObject) -> strata_store::Result<Option<SourceObject>> {
        Ok(parse(&obj.key)
            .filter(|&i| i < self.n)
            .map(|i| self.object(i)))
    }
}

pub async fn scale(a: ScaleArgs) -> Result<()> {
    if let Some(path) = &a.plot {
        return sizes(&a, path);
    }
    let tmp = tempfile::tempdir()?;
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let repo = Repository::init(
        Arc::new(strata_store::backend::local::LocalBackend::new(
            root.join("vault"),
        )?),
        b"bench password",
        InitOptions::default(),
        OpenOptions {
            cache_dir: Some(root.join("cache")),
        },
    )
    .await?;
    let source = Arc::new(Scale { n: a.objects });
    let s = ingest(
        &repo,
        source,
        &IngestOptions::default(),
        Arc::new(IngestProgress::default()),
    )
    .await?;
    println!(
        "| {} | {:.1} | {:.0} | {:.1} | {} | {:.0} |",
        a.objects,
        s.elapsed_s,
        s.objects as f64 / s.elapsed_s.max(1e-9),
        s.bytes as f64 / s.elapsed_s.max(1e-9) / 1_048_576.0,
        s.partitions,
        super::peak_rss_mib()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_walk_every_key_once_in_order() {
        let s = Scale { n: 5_000 };
        let (all, _) = s.list().await.unwrap();
        assert_eq!(all.len(), 5_000);
        assert!(all.windows(2).all(|w| w[0].key < w[1].key));
        let range = KeyRange::all();
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let p = s.list_page(&range, after.as_deref()).await.unwrap();
            paged.extend(p.objects.into_iter().map(|o| o.key));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(paged, all.iter().map(|o| o.key.clone()).collect::<Vec<_>>());
        let r = KeyRange {
            after: "tenant/005".into(),
            until: Some("tenant/009".into()),
        };
        let p = s.list_page(&r, None).await.unwrap();
        assert!(p.objects.iter().all(|o| r.contains(&o.key)));
        assert_eq!(
            p.objects.len(),
            all.iter().filter(|o| r.contains(&o.key)).count()
        );
    }
}
