//! `strata ls`: objects at a point in time, streamed in key order.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use strata_store::repo::runs::StateCursor;

use super::{fmt_time, open, resolve_point};
use crate::cli::{Global, LsArgs};

pub async fn run(g: &Global, a: LsArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let point = resolve_point(&repo, &a.at).await?;
    let mut cursor = StateCursor::new(&repo, &point.runs, point.seq, &a.prefix).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // JSON Lines, so a listing of any size streams.
    while let Some(e) = cursor.next().await? {
        let Some(o) = &e.object else { continue };
        if g.json {
            let v = serde_json::json!({
                "key": e.key, "size": o.size, "mtime": fmt_time(o.mtime_ns), "mode": o.mode,
                "etag": o.etag, "version_id": o.version_id, "since_point": e.seq, "blobs": o.chunks.len(),
            });
            writeln!(out, "{v}")?;
        } else if a.long {
            writeln!(
                out,
                "{:o} {:>12} {} {}",
                o.mode,
                o.size,
                fmt_time(o.mtime_ns),
                e.key
            )?;
        } else {
            writeln!(out, "{}", e.key)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
