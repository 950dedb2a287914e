//! `strata snapshots`: the recorded points in time.

use std::process::ExitCode;

use anyhow::Result;

use super::{fmt_bytes, fmt_time, open, print_json};
use crate::cli::Global;

pub async fn run(g: &Global) -> Result<ExitCode> {
    let repo = open(g).await?;
    let mut rows = Vec::new();
    for seq in repo.list_points().await? {
        let (p, _) = repo.load_point(seq).await?;
        rows.push(serde_json::json!({
            "seq": p.seq,
            "time": fmt_time(p.time_ns),
            "time_ns": p.time_ns,
            "objects": p.stats.objects,
            "bytes": p.stats.bytes,
            "changed": p.stats.puts,
            "deleted": p.stats.deletes,
            "new_packs": p.stats.new_packs,
            "new_stored_bytes": p.stats.new_stored_bytes,
            "source": p.source,
        }));
        if !g.json {
            println!(
                "#{:<5} {}  {:>9} objects {:>11}  {} changed, {} deleted  {}",
                p.seq,
                fmt_time(p.time_ns),
                p.stats.objects,
                fmt_bytes(p.stats.bytes),
                p.stats.puts,
                p.stats.deletes,
                p.source
            );
        }
    }
    if g.json {
        print_json(&rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
