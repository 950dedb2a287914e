//! `strata repair index`: rebuild the index from pack trailers.

use std::process::ExitCode;

use anyhow::Result;

use super::{open, print_json};
use crate::cli::{Global, RepairCommand};

pub async fn run(g: &Global, c: RepairCommand) -> Result<ExitCode> {
    match c {
        RepairCommand::Index => {
            let repo = open(g).await?;
            let r = repo.repair_index().await?;
            if g.json {
                print_json(&r)?;
            } else {
                println!(
                    "index rebuilt from {} pack trailers: {} entries in {} new segments, superseding {} old ones",
                    r.packs,
                    r.entries,
                    r.segments_written.len(),
                    r.superseded
                );
                for (pack, why) in &r.damaged_packs {
                    println!("DAMAGE: pack {pack}: {why} (its blobs are lost; `strata verify` names the keys)");
                }
            }
            Ok(if r.damaged_packs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
    }
}
