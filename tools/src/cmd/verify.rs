//! `strata verify`: structure; with `--read-data` every blob (or a
//! `--read-data-subset`); with `--retention` every object's lock.

use std::process::ExitCode;

use anyhow::Result;
use strata_store::verify::{verify, Severity, VerifyOptions};

use super::{open, print_json};
use crate::cli::{Global, VerifyArgs};

pub async fn run(g: &Global, a: VerifyArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let report = verify(
        &repo,
        &VerifyOptions {
            read_data: a.read_data || a.read_data_subset.is_some(),
            subset: a.read_data_subset,
            retention: a.retention,
        },
    )
    .await?;
    if a.retention && !g.json {
        println!("retention checked on {} objects", report.retention_checked);
    }
    if g.json {
        print_json(&serde_json::json!({ "clean": report.is_clean(), "report": report }))?;
    } else {
        println!(
            "checked {} points, {} run pages, {} index segments, {} packs{}",
            report.points,
            report.pages,
            report.segments,
            report.packs,
            if a.read_data || a.read_data_subset.is_some() {
                format!(
                    ", {} packs ({} blobs) read",
                    report.packs_read, report.blobs_read
                )
            } else {
                String::new()
            }
        );
        for p in &report.problems {
            let tag = match p.severity {
                Severity::Notice => "notice",
                Severity::Damage => "DAMAGE",
            };
            println!("{tag}: {}: {}", p.object, p.message);
        }
        if !report.affected_keys.is_empty() {
            println!("objects affected ({}):", report.affected_keys.len());
            for k in &report.affected_keys {
                println!("  {k}");
            }
        }
        println!(
            "{}",
            if report.is_clean() {
                "no damage found"
            } else {
                "DAMAGE FOUND"
            }
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
