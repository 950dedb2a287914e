//! Helpers for the integration tests: run the built `strata` binary,
//! generate trees, snapshot and compare them.
#![allow(clippy::unwrap_used)]

pub mod sim;
pub mod throttle;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The password every test vault uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// Path of the `strata` binary, built once if needed.
pub fn strata_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STRATA_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/integration-xxxx -> target/<profile>/strata
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let bin = profile_dir.join("strata");
        // scripts/test builds every target before testing; build here only
        // when the binary is missing (a nested cargo can rebuild heavy
        // dependencies for environment differences alone).
        if bin.exists() {
            return bin;
        }
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "--workspace", "--all-targets"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the strata binary");
        assert!(status.success(), "building strata failed");
        bin
    })
    .clone()
}

/// A vault directory, a cache directory and a work area for one test.
pub struct Env {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    vault_url: Option<String>,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A fresh environment.
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
            vault_url: None,
        }
    }
    /// Uses a vault URL (s3://…) instead of the local vault directory.
    pub fn set_vault(&mut self, url: &str) {
        self.vault_url = Some(url.to_string());
    }
    /// The vault path.
    pub fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }
    /// A path inside the work area.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// A `strata` command with vault, cache and password set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.args(args)
            .env(
                "STRATA_VAULT",
                self.vault_url
                    .clone()
                    .unwrap_or_else(|| self.vault().display().to_string()),
            )
            .env("STRATA_CACHE_DIR", self.path("cache"))
            .env("STRATA_PASSWORD", PASSWORD)
            .env_remove("STRATA_PASSWORD_FILE")
            .env_remove("RUST_LOG");
        c
    }
    /// Runs `strata`, returns its output (any exit code).
    pub fn run(&self, args: &[&str]) -> Output {
        let t = std::time::Instant::now();
        let out = self.cmd(args).output().unwrap();
        if std::env::var_os("STRATA_TEST_TIMING").is_some() {
            eprintln!("strata {args:?}: {:.2} s", t.elapsed().as_secs_f64());
        }
        out
    }
    /// Runs `strata` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    /// Runs `strata --json ARGS` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    /// `strata init` with small packs (so tests see several packs).
    pub fn init(&self) {
        self.ok(&["init", "--pack-size", "256K"]);
    }
}

/// A vault in `env`'s vault directory, opened through the library.
pub async fn local_repo(env: &Env) -> strata_store::repo::Repository {
    let backend =
        std::sync::Arc::new(strata_store::backend::local::LocalBackend::new(env.vault()).unwrap());
    let open = strata_store::repo::OpenOptions {
        cache_dir: Some(env.path("cache")),
    };
    strata_store::repo::Repository::init(
        backend,
        PASSWORD.as_bytes(),
        strata_store::repo::InitOptions::default(),
        open,
    )
    .await
    .unwrap()
}

/// Deterministic pseudo-random bytes.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next u64.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `len` bytes; compressible when `text`.
    pub fn bytes(&mut self, len: usize, text: bool) -> Vec<u8> {
        if text {
            let words = [
                &b"strata "[..],
                b"vault ",
                b"point ",
                b"in ",
                b"time ",
                b"\n",
            ];
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                v.extend_from_slice(words[self.below(words.len() as u64) as usize]);
            }
            v.truncate(len);
            v
        } else {
            (0..len).map(|_| self.next_u64() as u8).collect()
        }
    }
}

/// What a tree holds: relative path -> (bytes, mode, mtime ns).
pub type Snapshot = BTreeMap<String, (Vec<u8>, u32, i64)>;

/// Reads every regular file under `root`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
                out.insert(
                    rel,
                    (std::fs::read(e.path()).unwrap(), md.mode() & 0o7777, mtime),
                );
            }
        }
    }
    out
}

/// Asserts two snapshots hold the same files, bytes, modes and mtimes.
pub fn assert_same(expected: &Snapshot, actual: &Snapshot) {
    let ek: Vec<&String> = expected.keys().collect();
    let ak: Vec<&String> = actual.keys().collect();
    assert_eq!(ek, ak, "different file sets");
    for (k, (bytes, mode, mtime)) in expected {
        let (b2, m2, t2) = &actual[k];
        assert!(
            bytes == b2,
            "{k}: content differs ({} vs {} bytes)",
            bytes.len(),
            b2.len()
        );
        assert_eq!(mode, m2, "{k}: mode differs");
        assert_eq!(mtime, t2, "{k}: mtime differs");
    }
}

/// Writes a file, creating parents, with a mode.
pub fn write_file(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Generates a mixed tree: many small files, some large ones, empty files,
/// unicode and odd names, nested directories.
pub fn generate_tree(root: &Path, seed: u64, small: usize, large: usize) {
    let mut rng = Rng::new(seed);
    for i in 0..small {
        let depth = rng.below(4);
        let mut rel = String::new();
        for d in 0..depth {
            rel.push_str(&format!("dir{}/", (i as u64 + d) % 7));
        }
        rel.push_str(&format!("file-{i:05}.txt"));
        let len = rng.below(16 << 10) as usize;
        let text = rng.below(2) == 0;
        write_file(root, &rel, &rng.bytes(len, text), 0o644);
    }
    for i in 0..large {
        let len = (3 << 20) + rng.below(4 << 20) as usize;
        write_file(
            root,
            &format!("large/blob-{i}.bin"),
            &rng.bytes(len, i % 2 == 0),
            0o600,
        );
    }
    write_file(root, "empty", b"", 0o644);
    write_file(root, "nested/empty-too", b"", 0o400);
    write_file(
        root,
        "ünïcødé/日本語 ファイル.txt",
        "こんにちは".as_bytes(),
        0o644,
    );
    write_file(
        root,
        "odd names/with space & 'quotes' \"and\" $dollar",
        b"odd",
        0o755,
    );
    write_file(root, "odd names/new\nline", b"newline in name", 0o644);
    write_file(root, "odd names/-dash", b"dash", 0o644);
    write_file(root, "a.txt", b"sorts before a/", 0o644);
    write_file(root, "a/b", b"inside a", 0o644);
}

/// Files under `dir` (recursively), as relative paths.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = snapshot(dir).into_keys().collect();
    v.sort();
    v
}

/// The local S3 server's settings, when the tests run with one
/// (`STRATA_TEST_S3=1` after `eval "$(scripts/s3-server env)"`).
pub fn s3_enabled() -> bool {
    std::env::var("STRATA_TEST_S3").is_ok_and(|v| v == "1")
}

/// A client for the local S3 server.
pub async fn s3_client() -> aws_sdk_s3::Client {
    strata_store::backend::s3::client(std::env::var("AWS_ENDPOINT_URL").ok().as_deref(), true).await
}

/// Creates a fresh bucket (with Object Lock and versioning when `lock`).
pub async fn new_bucket(client: &aws_sdk_s3::Client, lock: bool) -> String {
    let name = format!(
        "strata-test-{}",
        Rng::new(std::process::id() as u64 ^ nanos()).next_u64() % 1_000_000_000_000
    );
    let mut req = client.create_bucket().bucket(&name);
    if lock {
        req = req.object_lock_enabled_for_bucket(true);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
