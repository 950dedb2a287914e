//! `strata diff`: what changed between two points.

use std::process::ExitCode;

use anyhow::Result;
use strata_store::manifest::Entry;
use strata_store::repo::runs::StateCursor;

use super::{open, print_json, resolve_point};
use crate::cli::{DiffArgs, Global};

pub async fn run(g: &Global, a: DiffArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let from = resolve_point(&repo, &a.from).await?;
    let to = resolve_point(&repo, &a.to).await?;
    // The later point's runs hold every earlier state too.
    let runs = if to.seq >= from.seq {
        &to.runs
    } else {
        &from.runs
    };
    let mut old = StateCursor::new(&repo, runs, from.seq, &a.prefix).await?;
    let mut new = StateCursor::new(&repo, runs, to.seq, &a.prefix).await?;
    let (mut o, mut n) = (old.next().await?, new.next().await?);
    let mut changes = Vec::new();
    let same = |x: &Entry, y: &Entry| {
        x.object
            .as_ref()
            .map(|m| (&m.chunks, m.size, m.mode, m.mtime_ns))
            == y.object
                .as_ref()
                .map(|m| (&m.chunks, m.size, m.mode, m.mtime_ns))
    };
    loop {
        let change = match (&o, &n) {
            (None, None) => break,
            (Some(x), Some(y)) if x.key == y.key => {
                let c = (!same(x, y)).then(|| {
                    (
                        "modified",
                        x.key.clone(),
                        y.object.as_ref().map_or(0, |m| m.size),
                    )
                });
                o = old.next().await?;
                n = new.next().await?;
                c
            }
            (Some(x), Some(y)) if x.key.as_bytes() < y.key.as_bytes() => {
                let c = Some(("deleted", x.key.clone(), 0));
                o = old.next().await?;
                c
            }
            (Some(x), None) => {
                let c = Some(("deleted", x.key.clone(), 0));
                o = old.next().await?;
                c
            }
            (_, Some(y)) => {
                let c = Some((
                    "added",
                    y.key.clone(),
                    y.object.as_ref().map_or(0, |m| m.size),
                ));
                n = new.next().await?;
                c
            }
        };
        if let Some((kind, key, size)) = change {
            if !g.json {
                let sign = match kind {
                    "added" => '+',
                    "deleted" => '-',
                    _ => 'M',
                };
                println!("{sign} {key}");
            }
            changes.push(serde_json::json!({"change": kind, "key": key, "size": size}));
        }
    }
    if g.json {
        print_json(&serde_json::json!({"from": from.seq, "to": to.seq, "changes": changes}))?;
    }
    Ok(ExitCode::SUCCESS)
}
