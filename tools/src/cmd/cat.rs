//! `strata cat`: one object's bytes at a point in time, to stdout.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use strata_store::restore::{lookup, read_object};

use super::{open_for_read, resolve_point};
use crate::cli::{CatArgs, Global};

pub async fn run(g: &Global, a: CatArgs) -> Result<ExitCode> {
    let repo = open_for_read(g).await?;
    let point = resolve_point(&repo, &a.at).await?;
    let entry = lookup(&repo, &point, &a.key).await?.ok_or_else(|| {
        strata_store::Error::not_found(format!("no object {:?} at point #{}", a.key, point.seq))
    })?;
    let meta = entry.object.as_ref().expect("lookup returns live entries");
    let mut out = std::io::stdout();
    read_object(&repo, meta, &mut out).await?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
