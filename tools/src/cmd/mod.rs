//! Subcommands, one file each, and what they share: opening the vault,
//! reading the password, resolving `--at`, printing.

mod cat;
mod diff;
mod ingest;
mod init;
mod inspect;
mod key;
mod ls;
mod mount;
mod repair;
mod restore;
mod snapshots;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use strata_store::backend::local::LocalBackend;
use strata_store::backend::s3::{S3Backend, S3Options};
use strata_store::backend::DynBackend;
use strata_store::manifest::point::Point;
use strata_store::repo::{OpenOptions, Repository};
use strata_store::time::PointSelector;

use crate::cli::{Cli, Command, Global};

/// Runs the parsed command; returns the exit code of a completed command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Init(a) => init::run(&g, a).await,
        Command::Ingest(a) => ingest::run(&g, a).await,
        Command::Snapshots => snapshots::run(&g).await,
        Command::Ls(a) => ls::run(&g, a).await,
        Command::Cat(a) => cat::run(&g, a).await,
        Command::Diff(a) => diff::run(&g, a).await,
        Command::Restore(a) => restore::run(&g, a).await,
        Command::Mount(a) => mount::run(&g, a).await,
        Command::Verify(a) => verify::run(&g, a).await,
        Command::Inspect(a) => inspect::run(&g, a).await,
        Command::Repair(r) => repair::run(&g, r).await,
        Command::Key(k) => key::run(&g, k).await,
    }
}

/// The backend named by `--vault`.
pub fn backend(g: &Global) -> Result<DynBackend> {
    let v = g.vault.as_deref().ok_or_else(|| {
        strata_store::Error::config("no vault given: use --vault PATH or set STRATA_VAULT")
    })?;
    let path = PathBuf::from(v.strip_prefix("file://").unwrap_or(v));
    Ok(Arc::new(LocalBackend::new(path)?))
}

/// True when `--vault` names an S3 bucket.
pub fn is_s3(g: &Global) -> bool {
    g.vault.as_deref().is_some_and(|v| v.starts_with("s3://"))
}

/// The S3 backend named by `--vault s3://…`.
pub async fn s3_backend(g: &Global) -> Result<S3Backend> {
    let v = g.vault.as_deref().unwrap_or_default();
    let mut o = S3Options::from_url(v)?;
    o.endpoint_url = g.endpoint_url.clone();
    o.path_style = g.path_style.unwrap_or(o.endpoint_url.is_some());
    o.dialect = g.s3_dialect.as_deref().map(str::parse).transpose()?;
    Ok(S3Backend::connect(o).await?)
}

/// The backend named by `--vault`, local or S3.
pub async fn any_backend(g: &Global) -> Result<DynBackend> {
    if is_s3(g) {
        Ok(Arc::new(s3_backend(g).await?))
    } else {
        backend(g)
    }
}

/// Reads a password from a file, an environment variable, or a prompt.
pub fn read_password(
    file: Option<&PathBuf>,
    env: &str,
    prompt: &str,
    confirm: bool,
) -> Result<Vec<u8>> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("reading password file {}", f.display()))?;
        let line = s.lines().next().unwrap_or("");
        return Ok(line.as_bytes().to_vec());
    }
    if let Ok(p) = std::env::var(env) {
        return Ok(p.into_bytes());
    }
    if !std::io::stdin().is_terminal() {
        return Err(strata_store::Error::config(format!(
            "no password: set {env}, use --password-file, or run on a terminal"
        ))
        .into());
    }
    let p = rpassword::prompt_password(prompt)?;
    if confirm && rpassword::prompt_password("Repeat password: ")? != p {
        bail!("the passwords differ");
    }
    if p.is_empty() {
        bail!("empty password");
    }
    Ok(p.into_bytes())
}

/// The vault password.
pub fn password(g: &Global, confirm: bool) -> Result<Vec<u8>> {
    read_password(
        g.password_file.as_ref(),
        "STRATA_PASSWORD",
        "Vault password: ",
        confirm,
    )
}

/// Opening options from the global flags.
pub fn open_options(g: &Global) -> OpenOptions {
    OpenOptions {
        cache_dir: g.cache_dir.clone(),
    }
}

/// Opens the vault with the password.
pub async fn open(g: &Global) -> Result<Repository> {
    let backend = any_backend(g).await?;
    let pw = password(g, false)?;
    let repo = Repository::open(backend, &pw, open_options(g)).await?;
    Ok(repo)
}

/// Opens the vault and brings the index cache up to date (for reading data).
pub async fn open_for_read(g: &Global) -> Result<Repository> {
    let repo = open(g).await?;
    let refresh = repo.refresh_index(false).await?;
    for (seg, e) in &refresh.damaged_segments {
        tracing::error!(segment = %seg, error = %e, "damaged index segment; recovered from pack trailers where possible");
    }
    Ok(repo)
}

pub use strata_store::time::parse_time;

/// Resolves `--at`: `latest`, `#SEQ`, or the newest point at or before a time.
pub async fn resolve_point(repo: &Repository, at: &str) -> Result<Point> {
    match PointSelector::parse(at)? {
        PointSelector::Latest => match repo.latest_point().await? {
            Some((p, _)) => Ok(p),
            None => Err(strata_store::Error::not_found(
                "the vault has no points yet (run `strata ingest`)",
            )
            .into()),
        },
        PointSelector::Seq(seq) => Ok(repo.load_point(seq).await?.0),
        PointSelector::AtOrBefore(t) => repo
            .point_at(t)
            .await
            .map_err(|e| e.context(format!("--at {at}")).into()),
    }
}

/// Formats ns since the epoch as RFC 3339 with milliseconds.
pub fn fmt_time(ns: i64) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// Human-readable byte counts.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// True when progress bars should be drawn.
pub fn show_progress(g: &Global) -> bool {
    !g.quiet && !g.json && std::io::stderr().is_terminal()
}
