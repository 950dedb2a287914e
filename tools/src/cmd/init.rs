//! `strata init`: create a vault.

use std::process::ExitCode;

use anyhow::Result;
use strata_store::config::Config;
use strata_store::crypto::keyfile::KdfParams;
use strata_store::repo::{InitOptions, Repository};

use super::{backend, open_options, password, print_json};
use crate::cli::{Global, InitArgs};

pub async fn run(g: &Global, a: InitArgs) -> Result<ExitCode> {
    let backend = backend(g)?;
    let pw = password(g, true)?;
    let mut config = Config::new([0; 16], 0);
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
