//! Command-line definitions (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes, also shown in `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (I/O, vault unreachable, unexpected failure)
  2  usage error
  3  damage or partial result: verify found damage, restore or ingest skipped objects
  4  wrong password, or a key that belongs to another vault
  5  not found: no vault, no such point, key or object
  6  already exists: init on an existing vault, restore onto existing files";

/// Strata: immutable, encrypted, deduplicated backups of object storage
/// and directories, restorable at any recorded point in time.
#[derive(Parser, Debug)]
#[command(name = "strata", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The vault: a directory path, file:// URL, or s3://bucket/prefix.
    #[arg(long, global = true, env = "STRATA_VAULT")]
    pub vault: Option<String>,
    /// S3 endpoint for S3-compatible servers (default: the AWS chain's,
    /// which also reads AWS_ENDPOINT_URL).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Path-style S3 addressing (default: on when an endpoint URL is set).
    #[arg(long, global = true, env = "STRATA_S3_PATH_STYLE")]
    pub path_style: Option<bool>,
    /// How the S3 server provides create-only writes: conditional
    /// (If-None-Match) or oldest-version-wins (radosgw); detected if unset.
    #[arg(long, global = true, env = "STRATA_S3_DIALECT")]
    pub s3_dialect: Option<String>,
    /// Read the password from this file (first line). Otherwise
    /// STRATA_PASSWORD, otherwise a prompt on a terminal.
    #[arg(long, global = true, env = "STRATA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Where the local index cache lives (default: the user's cache dir).
    #[arg(long, global = true, env = "STRATA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Logs as JSON lines on stderr.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// No progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new vault.
    Init(InitArgs),
    /// Back up a directory: record a new point in time.
    Ingest(IngestArgs),
    /// List recorded points in time.
    Snapshots,
    /// List objects at a point in time.
    Ls(LsArgs),
    /// Write one object's content at a point in time to stdout.
    Cat(CatArgs),
    /// Show what changed between two points.
    Diff(DiffArgs),
    /// Restore a point in time (or a prefix of it) into a directory.
    Restore(RestoreArgs),
    /// Show a point in time as a read-only filesystem (FUSE) until Ctrl-C.
    Mount(MountArgs),
    /// Check the vault: structure, and with --read-data every blob.
    Verify(VerifyArgs),
    /// Show a vault object in readable form.
    Inspect(InspectArgs),
    /// Rebuild derived structures from what the vault still holds.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Manage the password key files.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Close packs at this size (bytes; suffixes K, M, G).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub pack_size: u64,
    /// zstd level for blobs and metadata (0 turns compression off).
    #[arg(long, default_value_t = 3)]
    pub compression_level: i32,
    /// Object Lock mode for every object written (S3 vaults).
    #[arg(long, value_enum, default_value = "compliance")]
    pub lock_mode: LockModeArg,
    /// Object Lock retention period in days (S3 vaults).
    #[arg(long, default_value_t = 30)]
    pub retention_days: u32,
    /// Allow an S3 bucket without versioning and Object Lock (the vault's
    /// objects can then be deleted or overwritten by anyone with write access).
    #[arg(long)]
    pub no_object_lock: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LockModeArg {
    Compliance,
    Governance,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// What to back up: a directory, or s3://bucket/prefix.
    pub source: String,
    /// Workers reading and encoding objects (default: CPU count plus two
    /// for a directory; at least 32 for an S3 source, whose reads wait on
    /// the network).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Override the vault's pack size for this pass (bytes; K, M, G).
    #[arg(long, value_parser = parse_size)]
    pub pack_size: Option<u64>,
    /// Stamp the point with this time instead of now (RFC 3339).
    #[arg(long, conflicts_with = "continuous")]
    pub time: Option<String>,
    /// Keep running: record a point every --interval until SIGINT or
    /// SIGTERM (the cycle under way finishes and commits first; a second
    /// signal stops at once, leaving the pass resumable).
    #[arg(long, conflicts_with = "once")]
    pub continuous: bool,
    /// Run one cycle of continuous ingest (read the feed from the vault's
    /// checkpoint, commit, record the new position) and exit.
    #[arg(long)]
    pub once: bool,
    /// Time between points in continuous mode (e.g. 15m, 1h, 30s).
    #[arg(long, default_value = "15m", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Change feed naming the keys that changed: a directory or
    /// s3://bucket/prefix of EventBridge event batch files, or the URL of
    /// an SQS queue EventBridge delivers S3 events to. Without it, each
    /// cycle diffs a full listing against the last point.
    #[arg(long, value_name = "FEED")]
    pub changes: Option<String>,
    /// With --changes, every N-th cycle diffs a full listing instead, to
    /// catch events the feed dropped (0: never).
    #[arg(long, default_value_t = 96, value_name = "N")]
    pub reconcile_every: u64,
    /// Never send the source more than this many requests per second in
    /// all (the scheduler also backs off per partition on 503 SlowDown).
    #[arg(long, value_name = "N")]
    pub max_requests_per_second: Option<f64>,
    /// Never read from the source faster than this (bytes/s; K, M, G).
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub max_bandwidth: Option<u64>,
    /// Split a full pass into about this many partitions (key ranges).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub partitions: usize,
    /// Take partition boundaries from an S3 Inventory report: its
    /// manifest.json (a path, or s3://bucket/key).
    #[arg(long, value_name = "MANIFEST")]
    pub inventory: Option<String>,
    /// Record each partition's progress in the vault this often, so a
    /// killed pass resumes there (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub checkpoint_interval: std::time::Duration,
    /// Run every partition at this fixed concurrency, with no rate
    /// adaptation (as a copy tool would; for comparisons).
    #[arg(long, value_name = "N", hide = true)]
    pub fixed_concurrency: Option<usize>,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 15m, 1h, 30s)"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err("the interval must be at least 1s".into());
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only keys starting with this prefix.
    #[arg(default_value = "")]
    pub prefix: String,
    /// The point: RFC 3339 time (newest point at or before it), `latest`, or `#SEQ`.
    #[arg(long, default_value = "latest")]
    pub at: String,
    /// Show size, time and mode.
    #[arg(short, long)]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// The object key.
    pub key: String,
    /// The point (see `ls --at`).
    #[arg(long, default_value = "latest")]
    pub at: String,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The earlier point.
    #[arg(long)]
    pub from: String,
    /// The later point.
    #[arg(long, default_value = "latest")]
    pub to: String,
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The point (see `ls --at`).
    #[arg(long, default_value = "latest")]
    pub at: String,
    /// Target: a directory (created if missing) or s3://bucket/prefix.
    #[arg(long)]
    pub to: String,
    /// Only keys starting with this prefix (a whole key restores one object).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Replace files that already exist.
    #[arg(long)]
    pub overwrite: bool,
    /// Objects restored at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Where to mount (an existing, empty directory).
    pub mountpoint: PathBuf,
    /// The point (see `ls --at`).
    #[arg(long, default_value = "latest")]
    pub at: String,
    /// Let other users read the mount (needs user_allow_other in
    /// /etc/fuse.conf when not root).
    #[arg(long)]
    pub allow_other: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Download every pack and check every blob.
    #[arg(long)]
    pub read_data: bool,
    /// Read only part of the data: N/M (part N of M; runs 1/M … M/M read
    /// everything once) or P% (a random sample). Implies --read-data.
    #[arg(long, value_name = "N/M|P%", value_parser = parse_subset)]
    pub read_data_subset: Option<strata_store::verify::Subset>,
    /// Check that every vault object is under Object Lock as the vault's
    /// policy requires (S3 vaults; one request per object).
    #[arg(long)]
    pub retention: bool,
}

fn parse_subset(s: &str) -> Result<strata_store::verify::Subset, String> {
    strata_store::verify::Subset::parse(s)
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// What to show.
    #[arg(value_enum)]
    pub what: InspectKind,
    /// Its id: a pack, segment or page id (hex), a point `SEQ`/`latest`/time;
    /// not needed for `config`.
    pub id: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum InspectKind {
    Config,
    Pack,
    Index,
    Page,
    Point,
    /// The recorded progress of an unfinished full pass (ID: the point it
    /// will commit; default the next one).
    Pass,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the trailers of every pack: new segments
    /// supersede the old ones (nothing is deleted). Packs whose trailers
    /// do not authenticate are reported (exit 3).
    Index,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a key file for a new password (read from STRATA_NEW_PASSWORD,
    /// --new-password-file, or a prompt).
    Add {
        #[arg(long, env = "STRATA_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// List key files.
    List,
    /// Remove a key file (not the one in use, not the last).
    Remove {
        /// Key file name or id prefix.
        name: String,
    },
}

/// Parses sizes like `16M`, `512K`, `1G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?} (examples: 4096, 512K, 16M, 1G)"))
}
