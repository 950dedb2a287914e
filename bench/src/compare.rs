//! `strata-bench compare`: Strata against the tools a user would pick
//! instead — restic, rustic and rclone — on the same generated dataset and
//! machine, one after the other.
//!
//! Per tool: initial backup, incremental backup after the 1% mutation,
//! full restore (then compared byte for byte with the source), verify
//! with data reads; each timed under GNU `time` (wall, CPU, peak RSS);
//! then the vault's size and its number of files (the PUTs an object
//! store would bill). With `--s3`, the same dataset in a bucket on the
//! local S3 server is backed up into an S3 vault and compared with
//! `rclone copy` bucket to bucket. Then the machine's limits for a
//! backup, measured in the same run: the CPU's (strata's chunker and pack
//! builder over the data in memory; in MB/s, and in CPU time per MB
//! against strata's), the disk's for writing a vault of
//! strata's size, the two together (the CPU limit storing its packs),
//! and strata's backup once more into a vault in memory (a tmpfs), where
//! the disk drops out. Initial backups and the CPU limit are taken as the
//! fastest of `--tries` runs (three by default), the tools in turn.
//! The table goes to stdout and, with
//! `--docs`, into `docs/benchmarks.md` between markers, with an SVG.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::dataset::{files, mutate, Dataset, Preset};
use crate::svg::Svg;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Dataset preset.
    #[arg(long, value_enum, default_value = "small")]
    preset: Preset,
    /// Working directory (dataset, vaults, restores); reused datasets are
    /// regenerated when their preset differs.
    #[arg(long, default_value = "/tmp/strata-compare")]
    work: PathBuf,
    /// Tools to run; a peer that is not installed is skipped with a note.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "strata,restic,rustic,rclone"
    )]
    tools: Vec<Peer>,
    /// The strata binary.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// Also S3 source to S3 vault on the local S3 server against `rclone
    /// copy` bucket to bucket (needs `scripts/s3-server start` and its env).
    #[arg(long)]
    s3: bool,
    /// Initial backups and the CPU limit are measured this many times and
    /// the fastest kept: other work on a shared host only ever slows a run
    /// down. Tools take turns, so a slow spell does not land on every try
    /// of one tool.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    tries: u32,
    /// Write the table into this markdown file (between
    /// `<!-- compare:PRESET -->` markers) and an SVG beside it.
    #[arg(long)]
    docs: Option<PathBuf>,
}

/// One timed command.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    wall_s: f64,
    cpu_s: f64,
    rss_mib: f64,
}

/// Runs `cmd` under GNU time with its output in `log`.
fn timed(cmd: Command, log: &Path) -> Result<Timing> {
    let times = log.with_extension("time");
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&times)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let out = std::fs::File::create(log)?;
    // Dirty pages of the previous step (a vault, a restore) are written
    // out first, so no step pays for another's writeback.
    let _ = Command::new("sync").status();
    let status = wrapped
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "{:?} failed ({status}); log {}:\n{}",
            cmd.get_program(),
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let t = std::fs::read_to_string(&times)?;
    let v: Vec<f64> = t
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if v.len() < 4 {
        bail!("unreadable timing {t:?} in {}", times.display());
    }
    Ok(Timing {
        wall_s: v[0],
        cpu_s: v[1] + v[2],
        rss_mib: v[3] / 1024.0,
    })
}

/// The tools compared: each one's commands are spelled out in [`Tool`]'s
/// methods, one match per step, so a new peer must say how it does every
/// step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    Strata,
    Restic,
    Rustic,
    Rclone,
}

impl Peer {
    /// The argument that makes the program print its version.
    fn version_arg(self) -> &'static str {
        match self {
            Peer::Strata => "--version",
            Peer::Restic | Peer::Rustic | Peer::Rclone => "version",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Peer::Strata => "strata",
            Peer::Restic => "restic",
            Peer::Rustic => "rustic",
            Peer::Rclone => "rclone",
        }
    }
}

/// How to drive one tool.
struct Tool {
    peer: Peer,
    /// Absent peers are skipped.
    program: PathBuf,
    vault: PathBuf,
    cache: PathBuf,
    /// Where its restore goes (kept until every tool is done).
    restore_to: PathBuf,
    logs: PathBuf,
}

impl Tool {
    /// `peer` run as `program`, with its vault, cache, restore and logs
    /// under `work`.
    fn new(peer: Peer, program: PathBuf, work: &Path) -> Tool {
        let name = peer.name();
        Tool {
            peer,
            program,
            vault: work.join(format!("vault-{name}")),
            cache: work.join(match peer {
                Peer::Rclone => "rclone.conf".to_string(),
                Peer::Strata | Peer::Restic | Peer::Rustic => format!("cache-{name}"),
            }),
            restore_to: work.join(format!("restore-{name}")),
            logs: work.join("logs"),
        }
    }

    fn log(&self, phase: &str) -> PathBuf {
        self.logs.join(format!("{}-{phase}.log", self.peer.name()))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        let vault = self.vault.to_string_lossy().to_string();
        let cache = self.cache.to_string_lossy().to_string();
        match self.peer {
            Peer::Strata => {
                c.env("STRATA_PASSWORD", PASSWORD).args([
                    "--quiet",
                    "--vault",
                    &vault,
                    "--cache-dir",
                    &cache,
                ]);
            }
            Peer::Restic => {
                c.env("RESTIC_PASSWORD", PASSWORD)
                    .args(["-r", &vault, "--cache-dir", &cache]);
            }
            Peer::Rustic => {
                c.env("RUSTIC_PASSWORD", PASSWORD).args([
                    "-r",
                    &vault,
                    "--cache-dir",
                    &cache,
                    "--no-progress",
                ]);
            }
            Peer::Rclone => {
                // An empty config: local paths need none.
                c.env("RCLONE_CONFIG", cache.as_str()).arg("-q");
            }
        }
        c.args(args);
        c
    }

    fn init(&self) -> Command {
        match self.peer {
            Peer::Strata | Peer::Restic | Peer::Rustic => self.cmd(&["init"]),
            Peer::Rclone => {
                let mut c = Command::new("mkdir");
                c.arg("-p").arg(&self.vault);
                c
            }
        }
    }

    fn backup(&self, data: &Path) -> Command {
        let d = data.to_string_lossy().to_string();
        let v = self.vault.to_string_lossy().to_string();
        match self.peer {
            Peer::Strata => self.cmd(&["ingest", &d]),
            Peer::Restic => self.cmd(&["backup", "--quiet", &d]),
            Peer::Rustic => self.cmd(&["backup", &d]),
            // A mirror: deletions follow, as a backup's point would.
            Peer::Rclone => self.cmd(&["sync", &d, &v]),
        }
    }

    fn restore(&self, to: &Path) -> Command {
        let t = to.to_string_lossy().to_string();
        let v = self.vault.to_string_lossy().to_string();
        match self.peer {
            Peer::Strata => self.cmd(&["restore", "--to", &t]),
            Peer::Restic => self.cmd(&["restore", "latest", "--target", &t]),
            Peer::Rustic => self.cmd(&["restore", "latest", &t]),
            Peer::Rclone => self.cmd(&["copy", &v, &t]),
        }
    }

    fn verify(&self, data: &Path) -> Command {
        let d = data.to_string_lossy().to_string();
        let v = self.vault.to_string_lossy().to_string();
        match self.peer {
            Peer::Strata => self.cmd(&["verify", "--read-data"]),
            Peer::Restic | Peer::Rustic => self.cmd(&["check", "--read-data"]),
            Peer::Rclone => self.cmd(&["check", "--download", &d, &v]),
        }
    }
}

const PASSWORD: &str = "bench password";

fn find_program(peer: Peer, strata: &Path) -> Option<PathBuf> {
    if peer == Peer::Strata {
        return strata.exists().then(|| strata.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(peer.name()))
        .find(|p| p.exists())
}

/// One tool's results.
#[derive(Clone, Debug)]
struct Row {
    tool: Peer,
    initial: Timing,
    incremental: Timing,
    restore: Timing,
    verify: Timing,
    vault_bytes: u64,
    vault_files: usize,
    /// The vault's size right after the initial backup.
    initial_vault_bytes: u64,
}

fn tree_size(dir: &Path) -> Result<(u64, usize)> {
    let all = files(dir)?;
    let mut bytes = 0;
    for f in &all {
        bytes += std::fs::metadata(dir.join(f))?.len();
    }
    Ok((bytes, all.len()))
}

/// Waits until a minute has passed since `deleted_at`, with the deletions
/// written out. ext4 skips inodes freed within the last minute (five when
/// their table is not yet written) when it allocates new ones, so a
/// restore creating thousands of files soon after thousands were deleted
/// ran up to 3x slower (small preset: 2.7 s against 0.6–0.9 s), and only
/// for the tools that came first.
fn settle_deletions(deleted_at: std::time::Instant) {
    let _ = Command::new("sync").status();
    let wait = std::time::Duration::from_secs(65).saturating_sub(deleted_at.elapsed());
    if !wait.is_zero() {
        eprintln!(
            "waiting {} s for the deleted files to settle …",
            wait.as_secs()
        );
        std::thread::sleep(wait);
    }
}

/// Reads every file of `dir`, so that the step after finds the source in
/// the page cache as the first tool did: rclone drops the pages of the
/// files it has read, and the tool after it (strata, on the next try) read
/// ~45% of the large dataset from the disk (2.5 s → up to 4.5 s).
fn warm(dir: &Path) -> Result<()> {
    for f in files(dir)? {
        std::io::copy(
            &mut std::fs::File::open(dir.join(&f))?,
            &mut std::io::sink(),
        )?;
    }
    Ok(())
}

/// `tool`'s backup of `data`, timed from a source in the page cache.
fn timed_backup(tool: &Tool, data: &Path, phase: &str) -> Result<Timing> {
    warm(data)?;
    timed(tool.backup(data), &tool.log(phase))
}

/// Writes out `dir`'s files and drops their pages from the page cache.
fn evict_from_page_cache(dir: &Path) -> Result<()> {
    let _ = Command::new("sync").status();
    for f in files(dir)? {
        let file = std::fs::File::open(dir.join(&f))?;
        strata_store::direct_io::drop_cached(&file)
            .with_context(|| format!("evicting {}", f.display()))?;
    }
    Ok(())
}

/// Checks that `restored` holds exactly the files of `data`, byte for byte.
fn same_tree(data: &Path, restored: &Path) -> Result<()> {
    let (a, b) = (files(data)?, files(restored)?);
    if a != b {
        let missing = a.iter().filter(|p| !b.contains(p)).count();
        let extra = b.iter().filter(|p| !a.contains(p)).count();
        bail!(
            "restore of {} differs: {missing} files missing, {extra} extra",
            restored.display()
        );
    }
    for f in &a {
        if std::fs::read(data.join(f))? != std::fs::read(restored.join(f))? {
            bail!("restored {} differs from the source", f.display());
        }
    }
    Ok(())
}

/// Where a tool put the restored tree: under the data directory's absolute
/// path (restic, rustic) or at the target itself.
fn restored_root(target: &Path, data: &Path) -> PathBuf {
    let nested = target.join(data.strip_prefix("/").unwrap_or(data));
    if nested.is_dir() {
        nested
    } else {
        target.to_path_buf()
    }
}

fn run_tool(tool: &Tool, data: &Path) -> Result<Row> {
    std::fs::create_dir_all(&tool.logs)?;
    for d in [&tool.vault, &tool.cache] {
        if d.is_dir() {
            std::fs::remove_dir_all(d)?;
        }
    }
    if tool.peer == Peer::Rclone {
        std::fs::write(&tool.cache, "")?;
    }
    timed(tool.init(), &tool.log("init"))?;
    let initial = timed_backup(tool, data, "initial")?;
    let initial_vault_bytes = if tool.vault.is_dir() {
        tree_size(&tool.vault)?.0
    } else {
        0
    };
    Ok(Row {
        tool: tool.peer,
        initial,
        incremental: Timing::default(),
        restore: Timing::default(),
        verify: Timing::default(),
        vault_bytes: 0,
        vault_files: 0,
        initial_vault_bytes,
    })
}

fn finish_tool(tool: &Tool, row: &mut Row, data: &Path) -> Result<()> {
    row.incremental = timed_backup(tool, data, "incremental")?;
    let target = &tool.restore_to;
    if target.exists() {
        std::fs::remove_dir_all(target)?;
    }
    // Restore and verify read the vault from storage, as they would on
    // the day, not from the page cache its writes left behind.
    evict_from_page_cache(&tool.vault)?;
    row.restore = timed(tool.restore(target), &tool.log("restore"))?;
    same_tree(data, &restored_root(target, data))?;
    // Kept until all tools are done: deleting thousands of files leaves
    // ext4 scanning past recently freed inodes on the next tool's restore,
    // which measured 1.5x slower for whichever tool came next.
    evict_from_page_cache(&tool.vault)?;
    row.verify = timed(tool.verify(data), &tool.log("verify"))?;
    (row.vault_bytes, row.vault_files) = tree_size(&tool.vault)?;
    // The disk is the limit on big presets: the vault goes once measured.
    std::fs::remove_dir_all(&tool.vault)?;
    Ok(())
}

/// The dataset, generated afresh under `work/data` (a run mutates it).
fn dataset(preset: Preset, work: &Path) -> Result<PathBuf> {
    let data = work.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let plan = Dataset::plan(preset);
    eprintln!(
        "generating the {} dataset ({} objects) …",
        preset.name(),
        plan.len()
    );
    plan.write(&data)?;
    Ok(data)
}

#[allow(clippy::cast_precision_loss)]
fn table(rows: &[Row], objects: usize, bytes: u64, changed: usize) -> String {
    let mb = bytes as f64 / 1e6;
    let mut s = String::new();
    s.push_str("| tool | initial s | objects/s | MB/s | CPU s | peak RSS MiB | incremental s | incr. RSS MiB | restore s | restore MB/s | verify s | vault MB | vault files |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.2} | {:.0} | {} |",
            r.tool.name(),
            r.initial.wall_s,
            objects as f64 / r.initial.wall_s.max(0.01),
            mb / r.initial.wall_s.max(0.01),
            r.initial.cpu_s,
            r.initial.rss_mib,
            r.incremental.wall_s,
            r.incremental.rss_mib,
            r.restore.wall_s,
            mb / r.restore.wall_s.max(0.01),
            r.verify.wall_s,
            r.vault_bytes as f64 / 1e6,
            r.vault_files,
        );
    }
    let _ = writeln!(
        s,
        "\nDataset: {objects} objects, {mb:.0} MB; the incremental pass follows a mutation of {changed} objects (1%)."
    );
    if let (Some(st), Some(re)) = (
        rows.iter().find(|r| r.tool == Peer::Strata),
        rows.iter().find(|r| r.tool == Peer::Restic),
    ) {
        let _ = writeln!(
            s,
            "\nStrata / restic: initial objects/s **{:.2}×**, peak RSS **{:.2}×**, incremental **{:.2}× faster**, restore MB/s **{:.2}×**, vault size {:.2}×, vault files {:.2}×.",
            re.initial.wall_s / st.initial.wall_s.max(0.01),
            st.initial.rss_mib / re.initial.rss_mib.max(0.01),
            re.incremental.wall_s / st.incremental.wall_s.max(0.01),
            re.restore.wall_s / st.restore.wall_s.max(0.01),
            st.vault_bytes as f64 / re.vault_bytes.max(1) as f64,
            st.vault_files as f64 / re.vault_files.max(1) as f64,
        );
    }
    s
}

/// Bars per tool for a few measures, one panel each.
#[allow(clippy::cast_precision_loss)]
fn plot(rows: &[Row], objects: usize, bytes: u64, title: &str) -> String {
    let mb = bytes as f64 / 1e6;
    let panels: Vec<(&str, Vec<f64>)> = vec![
        (
            "initial objects/s",
            rows.iter()
                .map(|r| objects as f64 / r.initial.wall_s.max(0.01))
                .collect(),
        ),
        (
            "incremental s (lower is better)",
            rows.iter().map(|r| r.incremental.wall_s).collect(),
        ),
        (
            "restore MB/s",
            rows.iter()
                .map(|r| mb / r.restore.wall_s.max(0.01))
                .collect(),
        ),
        (
            "peak RSS MiB, initial",
            rows.iter().map(|r| r.initial.rss_mib).collect(),
        ),
        (
            "vault files",
            rows.iter().map(|r| r.vault_files as f64).collect(),
        ),
    ];
    let (pw, ph, top) = (220.0, 180.0, 30.0);
    let mut svg = Svg::new(pw * panels.len() as f64, ph + top + 30.0);
    svg.text(8.0, 16.0, title);
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    for (p, (name, values)) in panels.iter().enumerate() {
        let x0 = p as f64 * pw + 10.0;
        let max = values.iter().copied().fold(0.0f64, f64::max).max(1e-9);
        svg.text(x0, top + 8.0, name);
        let bw = (pw - 30.0) / values.len().max(1) as f64;
        for (i, v) in values.iter().enumerate() {
            let h = (ph - 40.0) * v / max;
            let x = x0 + i as f64 * bw;
            let y = top + ph - h;
            svg.element(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>",
                bw - 6.0,
                colours[i % colours.len()],
            ));
            svg.text(x, y - 3.0, &format!("{v:.0}"));
            svg.text(x, top + ph + 14.0, rows[i].tool.name());
        }
    }
    svg.finish()
}

/// Replaces the text between `<!-- compare:ID -->` and
/// `<!-- /compare:ID -->` in `doc` (appending the section when missing).
pub fn splice(doc: &str, id: &str, body: &str) -> String {
    let (open, close) = (
        format!("<!-- compare:{id} -->"),
        format!("<!-- /compare:{id} -->"),
    );
    match (doc.find(&open), doc.find(&close)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{open}\n{body}{}", &doc[..a], &doc[b..])
        }
        _ => format!("{doc}\n{open}\n{body}{close}\n"),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores, {mem:.0} GiB")
}

fn version(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

pub async fn compare(a: CompareArgs) -> Result<()> {
    std::fs::create_dir_all(&a.work)?;
    let work = a.work.canonicalize()?;
    let data = dataset(a.preset, &work)?;
    // The last bulk deletion of files: the dataset's (and the previous
    // run's restores, removed when it ended) are behind us now.
    let deleted_at = std::time::Instant::now();
    let (bytes, objects) = tree_size(&data)?;
    let mut tools = Vec::new();
    let mut notes = Vec::new();
    for &peer in &a.tools {
        let name = peer.name();
        let Some(program) = find_program(peer, &a.strata) else {
            notes.push(format!("{name}: not installed, skipped"));
            continue;
        };
        let v = version(&program, peer.version_arg());
        notes.push(format!("{name}: {}", v.trim()));
        tools.push(Tool::new(peer, program, &work));
    }
    let mut rows: Vec<Row> = Vec::new();
    for attempt in 1..=a.tries {
        for (i, t) in tools.iter().enumerate() {
            eprintln!(
                "{}: initial backup ({attempt} of {}) …",
                t.peer.name(),
                a.tries
            );
            let row = run_tool(t, &data)?;
            match rows.get_mut(i) {
                Some(best) if best.initial.wall_s <= row.initial.wall_s => {}
                Some(best) => *best = row,
                None => rows.push(row),
            }
        }
    }
    // Each try after the first deleted the tool's vault from the try before.
    let deleted_at = if a.tries > 1 {
        std::time::Instant::now()
    } else {
        deleted_at
    };
    let m = mutate(&data, 1)?;
    let changed = m.overwritten + m.added + m.deleted;
    settle_deletions(deleted_at);
    for (t, row) in tools.iter().zip(rows.iter_mut()) {
        eprintln!("{}: incremental, restore, verify …", t.peer.name());
        finish_tool(t, row, &data)?;
    }
    for t in &tools {
        if t.restore_to.exists() {
            std::fs::remove_dir_all(&t.restore_to)?;
        }
    }
    let ceiling = tokio::task::block_in_place(|| {
        let mut best = pipeline_ceiling(&data, None)?;
        for _ in 1..a.tries {
            let c = pipeline_ceiling(&data, None)?;
            if c.mbs > best.mbs {
                best = c;
            }
        }
        anyhow::Ok(best)
    })?;
    let mut out = table(&rows, objects, bytes, changed);
    if a.tries > 1 {
        let _ = writeln!(
            out,
            "\nInitial backups: the fastest of {} tries per tool, each into a fresh vault, the tools in turn; the CPU limit below: the fastest of {0}. The other steps and limits: one try.",
            a.tries
        );
    }
    let strata = tools
        .iter()
        .zip(&rows)
        .find(|(t, _)| t.peer == Peer::Strata);
    if let Some((tool, row)) = strata {
        out.push_str(&limits(tool, row, bytes, &ceiling, &data, &work).await?);
    }
    let _ = writeln!(out, "\nMachine: {}; {}.", machine(), notes.join("; "));
    if a.s3 {
        let rclone = tools.iter().any(|t| t.peer == Peer::Rclone);
        out.push_str(&s3_to_s3(&data, &a.strata, &work, rclone).await?);
    }
    println!("{out}");
    if let Some(doc) = &a.docs {
        let dir = doc.parent().unwrap_or(Path::new("."));
        let svg = format!("bench-compare-{}.svg", a.preset.name());
        std::fs::write(
            dir.join(&svg),
            plot(
                &rows,
                objects,
                bytes,
                &format!(
                    "{} preset: {objects} objects, {:.0} MB",
                    a.preset.name(),
                    bytes as f64 / 1e6
                ),
            ),
        )?;
        let text = std::fs::read_to_string(doc).unwrap_or_default();
        let body = format!("{out}\nPlot: [{svg}]({svg})\n");
        std::fs::write(doc, splice(&text, a.preset.name(), &body))?;
        eprintln!("wrote {} and {}", doc.display(), dir.join(svg).display());
    }
    Ok(())
}

/// The machine's limit for what a backup must do to the data, in MB/s
/// of input and CPU time per MB: keyed blake3 of every byte, and zstd at level 3 (after the
/// sample probe) and AES-256-GCM of every distinct blob, through strata's
/// own chunker (the vault default's cut points) and pack builder, on all
/// cores, over the dataset held in memory (read before the clock starts).
/// With `vault`, the packs are also stored there as a backup stores them
/// (strata's local backend, [`UPLOADS`] at a time behind a one-pack
/// queue); without, they are dropped. Listing, reading the source, dedup
/// lookups in an index and the index itself are left out.
#[allow(clippy::cast_precision_loss)]
fn pipeline_ceiling(data: &Path, vault: Option<&Path>) -> Result<Ceiling> {
    use strata_store::crypto::{random_bytes, Keys, MasterKey};
    use strata_store::pack::PackBuilder;
    let bodies = files(data)?
        .iter()
        .map(|f| std::fs::read(data.join(f)))
        .collect::<std::io::Result<Vec<Vec<u8>>>>()?;
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let keys = Keys::derive(&MasterKey::generate());
    // A new vault's chunker and pack target.
    let defaults = strata_store::config::Config::new([0; 16], 0);
    let (chunker, target) = (defaults.chunker, defaults.pack_target_size as usize);
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let store = vault.map(PackStore::new).transpose()?;
    // Built as the packer builds them: closed at the target or at the most
    // blobs, in buffers the largest blob cannot outgrow.
    let max_blobs = strata_store::ingest::MAX_PACK_BLOBS;
    let capacity = strata_store::pack::capacity_for(target, chunker.largest_blob(), max_blobs);
    let cut_and_pack = |store: Option<&PackStore>| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (bodies, keys, seen) = (&bodies, &keys, &seen);
                    scope.spawn(move || -> Result<u64> {
                        let mut n = 0u64;
                        let fresh = || PackBuilder::new(keys, random_bytes(), capacity);
                        let mut pack = fresh();
                        for body in bodies.iter().skip(t).step_by(threads) {
                            for (at, len) in chunker.cut(body) {
                                let piece = &body[at..at + len];
                                let id = keys.blob_id(piece);
                                if !seen.lock().expect("seen lock").insert(id) {
                                    continue;
                                }
                                pack.add(id, piece, 3)?;
                                if pack.len_bytes() >= target || pack.blob_count() >= max_blobs {
                                    let full = std::mem::replace(&mut pack, fresh()).finish();
                                    if let Some(s) = store {
                                        s.send_pack(full)?;
                                    }
                                }
                            }
                            n += body.len() as u64;
                        }
                        if let Some(s) = store.filter(|_| !pack.is_empty()) {
                            s.send_pack(pack.finish())?;
                        }
                        Ok(n)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("ceiling thread panicked"))?
                })
                .sum::<Result<u64>>()
        })
    };
    let (started, cpu_before) = (std::time::Instant::now(), process_cpu_s()?);
    let bytes = match &store {
        None => cut_and_pack(None)?,
        Some(s) => {
            let mut bytes = 0;
            s.run(|s| {
                bytes = cut_and_pack(Some(s))?;
                Ok(())
            })?;
            bytes
        }
    };
    let mb = bytes as f64 / 1e6;
    let ceiling = Ceiling {
        mbs: mb / started.elapsed().as_secs_f64(),
        cpu_s_per_mb: (process_cpu_s()? - cpu_before) / mb.max(1e-6),
    };
    if let Some(v) = vault {
        std::fs::remove_dir_all(v)?;
    }
    Ok(ceiling)
}

/// A limit measured by [`pipeline_ceiling`].
struct Ceiling {
    /// MB of input per second of wall time, on all cores.
    mbs: f64,
    /// CPU seconds (user and system, all threads) per MB of input.
    cpu_s_per_mb: f64,
}

/// CPU seconds this process has used (user and system, all threads), from
/// `/proc/self/stat` in clock ticks (100 a second on Linux).
#[allow(clippy::cast_precision_loss)]
fn process_cpu_s() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {} of /proc/self/stat", i + 3))
    };
    // utime and stime: fields 14 and 15, the 12th and 13th after the name.
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Packs stored at once, as the ingest uploader stores them.
const UPLOADS: usize = 2;

/// Stores packs into a local vault from [`UPLOADS`] threads, behind a
/// queue of one pack (the ingest packer's channel).
struct PackStore {
    backend: strata_store::backend::local::LocalBackend,
    runtime: tokio::runtime::Handle,
    tx: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<(String, bytes::Bytes)>>>,
    rx: std::sync::Mutex<std::sync::mpsc::Receiver<(String, bytes::Bytes)>>,
}

impl PackStore {
    /// A store into a fresh vault at `dir`; must be made inside the runtime.
    fn new(dir: &Path) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        Ok(PackStore {
            backend: strata_store::backend::local::LocalBackend::new(dir)?,
            runtime: tokio::runtime::Handle::current(),
            tx: std::sync::Mutex::new(Some(tx)),
            rx: std::sync::Mutex::new(rx),
        })
    }

    /// Starts the uploading threads; each ends when the queue is closed
    /// and empty, with the first error it met. After an error a thread
    /// keeps taking packs (and drops them), so no sender waits for ever.
    fn start<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
    ) -> Vec<std::thread::ScopedJoinHandle<'s, Result<()>>> {
        use strata_store::backend::Backend;
        (0..UPLOADS)
            .map(|_| {
                scope.spawn(move || -> Result<()> {
                    let mut failed: strata_store::error::Result<()> = Ok(());
                    loop {
                        let next = self.rx.lock().expect("queue lock").recv();
                        let Ok((name, bytes)) = next else {
                            return Ok(failed?);
                        };
                        if failed.is_ok() {
                            failed = self.runtime.block_on(self.backend.put(&name, bytes));
                        }
                    }
                })
            })
            .collect()
    }

    /// Queues `bytes` to be stored as `name`.
    fn send(&self, name: String, bytes: bytes::Bytes) -> Result<()> {
        let tx = self.tx.lock().expect("queue lock").clone();
        tx.context("pack queue closed")?
            .send((name, bytes))
            .map_err(|_| anyhow::anyhow!("pack uploaders stopped"))
    }

    fn send_pack(&self, pack: strata_store::pack::FinishedPack) -> Result<()> {
        self.send(format!("data/{}", pack.id), pack.bytes)
    }

    /// Closes the queue: the threads end once it is empty.
    fn close(&self) {
        self.tx.lock().expect("queue lock").take();
    }

    /// Stores what `produce` sends (from the calling thread) and waits
    /// until all of it is stored.
    fn run(&self, produce: impl FnOnce(&Self) -> Result<()>) -> Result<()> {
        std::thread::scope(|scope| {
            let uploaders = self.start(scope);
            let produced = produce(self);
            self.close();
            for u in uploaders {
                u.join()
                    .map_err(|_| anyhow::anyhow!("uploader thread panicked"))??;
            }
            produced
        })
    }
}

/// What bounds a backup on this machine, and how close strata came: the
/// CPU limit (`cpu`, [`pipeline_ceiling`] without writes) in MB/s and in
/// CPU time per MB against strata's, the disk's
/// limit for writing strata's vault ([`vault_write_ceiling`], as MB/s of
/// this dataset's input at strata's vault size), the two together
/// ([`pipeline_ceiling`] storing its packs in the work directory), and
/// strata's backup again with the disk out of the way
/// ([`memory_vault_backup`]).
#[allow(clippy::cast_precision_loss)]
async fn limits(
    tool: &Tool,
    strata: &Row,
    bytes: u64,
    cpu: &Ceiling,
    data: &Path,
    work: &Path,
) -> Result<String> {
    let mbs = bytes as f64 / 1e6 / strata.initial.wall_s.max(0.01);
    let pct = |part: f64, whole: f64| 100.0 * part / whole.max(f64::MIN_POSITIVE);
    let mut out = format!(
        "\nMachine limit for hashing + compression + encryption on all cores (strata's chunker and pack builder over the data in memory, each distinct blob once): {:.0} MB/s; strata's initial backup reached {mbs:.0} MB/s, **{:.0}%** of it.\n",
        cpu.mbs,
        pct(mbs, cpu.mbs)
    );
    // Per MB, what the limit's work costs against all strata does.
    let strata_cpu_per_mb = strata.initial.cpu_s / (bytes as f64 / 1e6).max(1e-6);
    let _ = writeln!(
        out,
        "\nCPU time per MB of input: the limit's work {:.2} ms, strata's whole backup {:.2} ms (listing, reading the source, dedup, the index and the vault's writes besides): the limit's work is **{:.0}%** of it, the share of the limit strata reaches with every core busy, where the disk keeps up.",
        cpu.cpu_s_per_mb * 1e3,
        strata_cpu_per_mb * 1e3,
        pct(cpu.cpu_s_per_mb, strata_cpu_per_mb)
    );
    if strata.initial_vault_bytes == 0 {
        return Ok(out);
    }
    let (written, both, in_memory) = tokio::task::block_in_place(|| {
        let written = vault_write_ceiling(work, strata.initial_vault_bytes)?;
        let both = pipeline_ceiling(data, Some(&work.join("limit-vault")))?;
        let in_memory = memory_vault_backup(tool, data, strata.initial_vault_bytes)?;
        anyhow::Ok((written, both, in_memory))
    })?;
    let disk = written * bytes as f64 / strata.initial_vault_bytes as f64;
    let _ = writeln!(
        out,
        "\nWith the vault's writes: the disk alone (strata's local backend storing {:.0} MB as 16 MiB packs, {UPLOADS} at a time, direct and fsynced, in the work directory) takes {written:.0} MB/s, {disk:.0} MB/s of this dataset's input; the limit above with its packs stored that way reaches {:.0} MB/s, and strata **{:.0}%** of that.",
        strata.initial_vault_bytes as f64 / 1e6,
        both.mbs,
        pct(mbs, both.mbs)
    );
    match in_memory {
        Some((t, input)) => {
            let m = input as f64 / 1e6 / t.wall_s.max(0.01);
            let _ = writeln!(
                out,
                "\nWith the disk out of the way: strata's initial backup of the same data (after the mutation, {:.0} MB) into a fresh vault in memory (a tmpfs, so storing costs a copy into memory instead of waiting on the disk) took {:.2} s and {:.1} CPU s, {m:.0} MB/s: **{:.0}%** of the CPU limit.",
                input as f64 / 1e6,
                t.wall_s,
                t.cpu_s,
                pct(m, cpu.mbs)
            );
        }
        None => out.push_str(
            "\nWith the disk out of the way: not measured (no tmpfs at /dev/shm, or too little free memory for a second vault).\n",
        ),
    }
    Ok(out)
}

/// Where [`memory_vault_backup`] keeps its vault.
const MEMORY_DIR: &str = "/dev/shm";

/// Strata's initial backup of `data` timed again, into a fresh vault in a
/// tmpfs: the disk drops out, and what is left is strata's own work (the
/// CPU limit's, plus reading the source, listing, the index, and storing
/// into memory). With the bytes of `data` backed up; `None` when
/// [`MEMORY_DIR`] is not a tmpfs or free memory could not hold twice a
/// vault of `vault_bytes` and a GiB besides. The vault is removed after.
fn memory_vault_backup(
    tool: &Tool,
    data: &Path,
    vault_bytes: u64,
) -> Result<Option<(Timing, u64)>> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let is_tmpfs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&MEMORY_DIR) && f.get(2) == Some(&"tmpfs")
    });
    let available = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    if !is_tmpfs || available < 2 * vault_bytes + (1 << 30) {
        return Ok(None);
    }
    let dir = Path::new(MEMORY_DIR).join(format!("strata-bench-{}", std::process::id()));
    let mut in_memory = Tool::new(tool.peer, tool.program.clone(), &dir);
    in_memory.logs.clone_from(&tool.logs);
    std::fs::create_dir_all(&dir)?;
    let timing = timed(in_memory.init(), &in_memory.log("init-memory"))
        .and_then(|_| timed_backup(&in_memory, data, "initial-memory"));
    std::fs::remove_dir_all(&dir)?;
    Ok(Some((timing?, tree_size(data)?.0)))
}

/// The disk's limit for a backup's writes, in MB/s: a [`PackStore`]
/// stores `total` bytes as 16 MiB packs (page-aligned, so direct I/O,
/// then fsynced and linked under their name) into a scratch vault in
/// `work` (removed after).
#[allow(clippy::cast_precision_loss)]
fn vault_write_ceiling(work: &Path, total: u64) -> Result<f64> {
    const PACK: usize = 16 << 20;
    let dir = work.join("limit-disk");
    let store = PackStore::new(&dir)?;
    let (mut buf, start) = strata_store::direct_io::page_aligned(PACK);
    // Incompressible, as packs are (a disk or host may compress zeroes).
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for b in &mut buf[start..start + PACK] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x.to_le_bytes()[0];
    }
    let pack = bytes::Bytes::from(buf).slice(start..start + PACK);
    let packs = total.div_ceil(PACK as u64);
    let started = std::time::Instant::now();
    store.run(|s| {
        (0..packs).try_for_each(|i| s.send(format!("data/{:02x}/{i:016x}", i % 256), pack.clone()))
    })?;
    let mbs = (packs * PACK as u64) as f64 / 1e6 / started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir)?;
    Ok(mbs)
}

/// Objects in `bucket`.
async fn count_objects(client: &aws_sdk_s3::Client, bucket: &str) -> Result<usize> {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.take())
            .send()
            .await
            .with_context(|| format!("listing {bucket}"))?;
        n += page.contents().len();
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok(n),
        }
    }
}

/// Puts every file of `data` into `bucket` (key: its relative path).
async fn upload(client: &aws_sdk_s3::Client, bucket: &str, data: &Path) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for f in files(data)? {
        let key = f.to_string_lossy().to_string();
        let body = aws_sdk_s3::primitives::ByteStream::from(std::fs::read(data.join(&f))?);
        let (c, b) = (client.clone(), bucket.to_string());
        set.spawn(async move { c.put_object().bucket(b).key(key).body(body).send().await });
        while set.len() >= 32 {
            set.join_next().await.context("put task")??.context("put")?;
        }
    }
    while let Some(r) = set.join_next().await {
        r?.context("put")?;
    }
    Ok(())
}

/// The dataset in a bucket on the local S3 server, backed up by strata
/// into an S3 vault (Object Lock) and copied by `rclone copy` to another
/// bucket: time, objects/s and the PUTs each made.
#[allow(clippy::cast_precision_loss)]
async fn s3_to_s3(data: &Path, strata: &Path, work: &Path, with_rclone: bool) -> Result<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .context("AWS_ENDPOINT_URL: run `eval \"$(scripts/s3-server env)\"` first")?;
    let client = strata_tests::s3_client().await;
    let src = strata_tests::new_bucket(&client, false).await;
    eprintln!("s3: uploading the dataset to {src} …");
    upload(&client, &src, data).await?;
    let (bytes, objects) = tree_size(data)?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut rows = Vec::new();

    let vault = strata_tests::new_bucket(&client, true).await;
    let cache = work.join("cache-s3");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)?;
    }
    let strata_cmd = |args: &[&str]| {
        let mut c = Command::new(strata);
        c.env("STRATA_PASSWORD", PASSWORD)
            .arg("--quiet")
            .arg("--vault")
            .arg(format!("s3://{vault}/v"))
            .arg("--cache-dir")
            .arg(&cache)
            .args(args);
        c
    };
    timed(
        strata_cmd(&["init", "--retention-days", "1"]),
        &logs.join("s3-strata-init.log"),
    )?;
    eprintln!("s3: strata ingest …");
    let t = timed(
        strata_cmd(&["ingest", &format!("s3://{src}/")]),
        &logs.join("s3-strata-ingest.log"),
    )?;
    rows.push((
        "strata ingest → S3 vault",
        t,
        count_objects(&client, &vault).await?,
    ));

    if with_rclone {
        let dst = strata_tests::new_bucket(&client, false).await;
        let mut c = Command::new("rclone");
        let conf = work.join("rclone.conf");
        std::fs::write(&conf, "")?;
        // rclone 1.60 fails on a CA bundle for a plain-HTTP endpoint.
        c.env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", &conf)
            .env("RCLONE_CONFIG_LOCALS3_TYPE", "s3")
            .env("RCLONE_CONFIG_LOCALS3_PROVIDER", "Ceph")
            .env("RCLONE_CONFIG_LOCALS3_ENDPOINT", &endpoint)
            .env(
                "RCLONE_CONFIG_LOCALS3_ACCESS_KEY_ID",
                std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            )
            .env(
                "RCLONE_CONFIG_LOCALS3_SECRET_ACCESS_KEY",
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            )
            .args([
                "-q",
                "copy",
                &format!("localS3:{src}"),
                &format!("localS3:{dst}"),
            ]);
        eprintln!("s3: rclone copy …");
        let t = timed(c, &logs.join("s3-rclone-copy.log"))?;
        rows.push((
            "rclone copy bucket → bucket",
            t,
            count_objects(&client, &dst).await?,
        ));
    }

    let mb = bytes as f64 / 1e6;
    let mut s = format!(
        "\nS3 source to S3 on the local S3 server (radosgw, same machine), {objects} objects, {mb:.0} MB:\n\n| run | wall s | objects/s | MB/s | CPU s | peak RSS MiB | objects written (PUTs) | PUTs per 100 source objects |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for (name, t, puts) in &rows {
        let _ = writeln!(
            s,
            "| {name} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} | {puts} | {:.2} |",
            t.wall_s,
            objects as f64 / t.wall_s.max(0.01),
            mb / t.wall_s.max(0.01),
            t.cpu_s,
            t.rss_mib,
            100.0 * *puts as f64 / objects.max(1) as f64,
        );
    }
    if let [(_, st, _), (_, rc, _)] = rows.as_slice() {
        let _ = writeln!(
            s,
            "\nStrata / rclone copy: objects/s **{:.2}×**.",
            rc.wall_s / st.wall_s.max(0.01)
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_its_section_only() {
        let doc = "a\n<!-- compare:small -->\nold\n<!-- /compare:small -->\nb\n";
        let new = splice(doc, "small", "new\n");
        assert_eq!(
            new,
            "a\n<!-- compare:small -->\nnew\n<!-- /compare:small -->\nb\n"
        );
        let appended = splice("a\n", "large", "x\n");
        assert_eq!(
            appended,
            "a\n\n<!-- compare:large -->\nx\n<!-- /compare:large -->\n"
        );
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        compare: CompareArgs,
    }

    #[test]
    fn tools_are_named_peers_and_an_unknown_one_is_refused() {
        use clap::Parser;
        let all = Cli::try_parse_from(["bench"]).unwrap();
        assert_eq!(
            all.compare.tools,
            [Peer::Strata, Peer::Restic, Peer::Rustic, Peer::Rclone]
        );
        for p in all.compare.tools {
            let again = Cli::try_parse_from(["bench", "--tools", p.name()]).unwrap();
            assert_eq!(again.compare.tools, [p]);
        }
        assert!(Cli::try_parse_from(["bench", "--tools", "strata,borg"]).is_err());
    }

    #[test]
    fn a_restore_that_lost_a_byte_is_caught() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("t/1")).unwrap();
            std::fs::write(d.join("t/1/x"), b"hello").unwrap();
        }
        same_tree(a.path(), b.path()).unwrap();
        std::fs::write(b.path().join("t/1/x"), b"hellO").unwrap();
        assert!(same_tree(a.path(), b.path()).is_err());
        std::fs::remove_file(b.path().join("t/1/x")).unwrap();
        assert!(same_tree(a.path(), b.path()).is_err());
    }
}
