//! `strata key add|list|remove`: password key files.

use std::process::ExitCode;

use anyhow::Result;
use strata_store::crypto::keyfile::KdfParams;

use super::{fmt_time, open, print_json, read_password};
use crate::cli::{Global, KeyCommand};

pub async fn run(g: &Global, k: KeyCommand) -> Result<ExitCode> {
    let repo = open(g).await?;
    match k {
        KeyCommand::Add { new_password_file } => {
            let pw = read_password(
                new_password_file.as_ref(),
                "STRATA_NEW_PASSWORD",
                "New password: ",
                true,
            )?;
            let name = repo.add_key(&pw, KdfParams::default()).await?;
            if g.json {
                print_json(&serde_json::json!({ "added": name }))?;
            } else {
                println!("added {name}");
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if g.json {
                print_json(&keys)?;
            } else {
                for k in keys {
                    println!(
                        "{} {} created {} argon2id m={} KiB t={} p={}",
                        if k.current { "*" } else { " " },
                        k.name,
                        fmt_time(k.created_unix_s.saturating_mul(1_000_000_000)),
                        k.kdf.m_cost_kib,
                        k.kdf.t_cost,
                        k.kdf.p_cost
                    );
                }
            }
        }
        KeyCommand::Remove { name } => {
            repo.remove_key(&name).await?;
            if !g.json {
                println!("removed {name}");
            } else {
                print_json(&serde_json::json!({ "removed": name }))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
