//! `strata`: parse, set up logging, dispatch, map errors to exit codes.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;
use strata_store::ErrorKind;

use cli::Cli;

fn main() -> ExitCode {
    strata_store::allocator::tune_for_long_runs();
    let cli = Cli::parse();
    init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        // The reader went away (`strata ls | head`): done, quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for an error, from the engine's error kind.
fn exit_code(e: &anyhow::Error) -> u8 {
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<strata_store::Error>())
        .map(|e| e.kind());
    match kind {
        Some(k) if k.is_damage() => 3,
        Some(ErrorKind::WrongPassword) => 4,
        Some(ErrorKind::NotFound) => 5,
        Some(ErrorKind::AlreadyExists) => 6,
        Some(ErrorKind::Config) => 2,
        _ => 1,
    }
}

fn init_logging(g: &cli::Global) {
    use tracing_subscriber::EnvFilter;
    let default = match g.verbose {
        0 => "warn,fuser=error",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if g.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}
