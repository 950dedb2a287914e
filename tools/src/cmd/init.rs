//! `strata init`: create a vault.

use std::process::ExitCode;

use anyhow::Result;
use strata_store::config::Config;
use strata_store::crypto::keyfile::KdfParams;
use strata_store::repo::{InitOptions, Repository};

use std::sync::Arc;

use strata_store::backend::DynBackend;
use strata_store::config::LockMode;

use super::{backend, is_s3, open_options, password, print_json, s3_backend};
use crate::cli::{Global, InitArgs, LockModeArg};

pub async fn run(g: &Global, a: InitArgs) -> Result<ExitCode> {
    let mut config = Config::new([0; 16], 0);
    let backend: DynBackend = if is_s3(g) {
        let s3 = s3_backend(g).await?;
        let (versioned, locked) = s3.lock_status().await?;
        if versioned && locked {
            config.lock_mode = match a.lock_mode {
                LockModeArg::Compliance => LockMode::Compliance,
                LockModeArg::Governance => LockMode::Governance,
            };
            config.retention_days = a.retention_days;
            if a.retention_days == 0 {
                return Err(strata_store::Error::config(
                    "--retention-days must be at least 1 on an Object Lock bucket",
                )
                .into());
            }
        } else if !a.no_object_lock {
            return Err(strata_store::Error::config(format!(
                "bucket {} has {}; a vault needs both so that nobody, not even its writer, can delete or \
                 overwrite a backup early. Create the bucket with Object Lock enabled, or pass \
                 --no-object-lock to accept an unprotected vault",
                s3.options().bucket,
                match (versioned, locked) {
                    (false, _) => "no versioning and no Object Lock",
                    (true, false) => "versioning but no Object Lock",
                    _ => unreachable!("handled above"),
                }
            ))
            .into());
        }
        Arc::new(s3)
    } else {
        backend(g)?
    };
    let pw = password(g, true)?;
    config.pack_target_size = u32::try_from(a.pack_size)
        .map_err(|_| strata_store::Error::config("pack size must be under 4 GiB"))?;
    config.zstd_level = a.compression_level;
    let where_ = backend.describe();
    let repo = Repository::init(
        backend,
        &pw,
        InitOptions {
            config,
            kdf: KdfParams::default(),
        },
        open_options(g),
    )
    .await?;
    if g.json {
        print_json(&serde_json::json!({ "vault": where_, "config": repo.config() }))?;
    } else {
        println!(
            "created vault {} at {where_}",
            repo.config()
                .vault_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        println!("keep the password safe: without it the vault cannot be read");
    }
    Ok(ExitCode::SUCCESS)
}
