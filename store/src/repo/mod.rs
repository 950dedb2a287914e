//! The repository: a vault opened with its key.
//!
//! Owns the write ordering of the format (packs, then index segment, then
//! run pages, then the time-index entry: see `commit`), the local index
//! cache (`index`), reading blobs (`blobs`), points and runs (`runs`).
//!
//! Spec: `format-spec/SPEC.md#write-ordering`.

mod blobs;
pub use blobs::OpenedRun;
mod checkpoints;
mod commit;
pub(crate) use commit::now_ns;
mod index;
mod repair;
pub use repair::RepairReport;
pub mod runs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

pub use commit::{CommitRequest, MERGE_FANOUT};
pub use index::IndexRefresh;

use crate::backend::{get_all, ByteRange, DynBackend};
use crate::config::Config;
use crate::crypto::keyfile::{KdfParams, KeyFile};
use crate::crypto::{random_bytes, Keys, MasterKey};
use crate::error::{Error, ErrorKind, Result};
use crate::format::ObjectKind;
use crate::id::{BlobId, ObjectId};
use crate::index::cache::IndexCache;
use crate::manifest::point::Point;
use crate::manifest::run::Page;
use crate::pack::PackKey;
use crate::sealed;

/// Name of the config object.
pub const CONFIG_NAME: &str = "config";

/// The object name of a pack.
pub fn pack_name(id: &ObjectId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

/// Parses a pack id from its object name.
pub fn pack_id_from_name(name: &str) -> Option<ObjectId> {
    name.rsplit('/').next()?.parse().ok()
}

/// The object name of an index segment.
pub fn segment_name(id: &ObjectId) -> String {
    format!("index/{id}")
}

/// The object name of a run page.
pub fn page_name(id: &ObjectId) -> String {
    format!("runs/{id}")
}

/// How to open a vault.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Where the local index cache lives; default: the user's cache dir.
    pub cache_dir: Option<PathBuf>,
}

/// How to create a vault.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The vault's parameters (its `vault_id` is replaced by a random one).
    pub config: Config,
    /// argon2id costs for the first key file.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            config: Config::new([0; 16], 0),
            kdf: KdfParams::default(),
        }
    }
}

/// A listed key file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    /// Object name under `keys/`.
    pub name: String,
    /// Creation time, unix seconds.
    pub created_unix_s: i64,
    /// argon2 parameters.
    pub kdf: KdfParams,
    /// True for the key this session was opened with.
    pub current: bool,
}

/// An open vault.
pub struct Repository {
    backend: DynBackend,
    master: MasterKey,
    keys: Keys,
    config: Config,
    key_name: String,
    cache_path: PathBuf,
    index: RwLock<Arc<IndexCache>>,
    /// Held by a refresh of the index cache: readers that miss a blob at
    /// once each refresh, and two rebuilding a damaged cache together
    /// would write the same files.
    refreshing: tokio::sync::Mutex<()>,
    /// Entries read from the trailers of packs no segment describes (left
    /// by an interrupted pass). Kept in memory only: the persistent cache
    /// holds what vault segments say, so the next process finds these
    /// packs unindexed again until a commit writes a segment for them.
    recovered: RwLock<Arc<HashMap<BlobId, crate::index::IndexEntry>>>,
    pack_keys: Mutex<HashMap<ObjectId, Arc<PackKey>>>,
    pages: Mutex<HashMap<ObjectId, Arc<Page>>>,
}

const PAGE_CACHE_ENTRIES: usize = 512;

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Default argon2 memory a reader spends on one key file (1 GiB); key
/// files asking more are skipped unless `STRATA_MAX_KDF_MEMORY_MIB` allows
/// them. Writers use 64 MiB; this bounds what a planted key file can cost.
const DEFAULT_KDF_BUDGET_KIB: u32 = 1 << 20;
/// Most argon2 passes a reader spends on one key file.
const MAX_KDF_PASSES: u32 = 16;

fn kdf_memory_budget_kib() -> u32 {
    std::env::var("STRATA_MAX_KDF_MEMORY_MIB")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(DEFAULT_KDF_BUDGET_KIB, |mib| mib.saturating_mul(1024))
}

/// Every request to the vault is retried on transient failures.
fn with_retries(backend: DynBackend) -> DynBackend {
    Arc::new(crate::backend::retry::Retrying::new(
        backend,
        crate::backend::retry::RetryPolicy::default(),
    ))
}

fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("strata");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("strata");
    }
    std::env::temp_dir().join("strata-cache")
}

impl Repository {
    /// Creates a vault in an empty location and opens it.
    /// Order: key file first, config last (the config's presence is what
    /// makes a vault), both create-only.
    pub async fn init(
        backend: DynBackend,
        password: &[u8],
        opts: InitOptions,
        open: OpenOptions,
    ) -> Result<Self> {
        let backend = with_retries(backend);
        if backend.head(CONFIG_NAME).await.is_ok() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a vault already exists at {}", backend.describe()),
            ));
        }
        let mut config = opts.config;
        config.vault_id = random_bytes();
        config.created_unix_s = now_unix_s();
        config.validate()?;
        let master = MasterKey::generate();
        let keys = Keys::derive(&master);
        backend.set_retention(config.lock_mode, config.retention_days);
        let key_name =
            write_key_file(&*backend, &master, password, opts.kdf, config.vault_id).await?;
        let sealed = sealed::seal(
            &keys,
            ObjectKind::Config,
            random_bytes(),
            &config.encode(),
            0,
        );
        backend.put(CONFIG_NAME, Bytes::from(sealed)).await?;
        Ok(Self::assemble(
            backend, master, keys, config, key_name, open,
        ))
    }

    fn assemble(
        backend: DynBackend,
        master: MasterKey,
        keys: Keys,
        config: Config,
        key_name: String,
        open: OpenOptions,
    ) -> Self {
        let cache_path = open
            .cache_dir
            .unwrap_or_else(default_cache_dir)
            .join(hex::encode(config.vault_id))
            .join("index.cache");
        Repository {
            backend,
            master,
            keys,
            config,
            key_name,
            cache_path,
            index: RwLock::new(Arc::new(IndexCache::empty())),
            refreshing: tokio::sync::Mutex::default(),
            recovered: RwLock::default(),
            pack_keys: Mutex::new(HashMap::new()),
            pages: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a vault with a password: tries every key file; `WrongPassword`
    /// if none opens; a key file that opens but does not decrypt this
    /// vault's config (a key from another vault) is an error too.
    /// Writes nothing to the vault.
    pub async fn open(backend: DynBackend, password: &[u8], open: OpenOptions) -> Result<Self> {
        let backend = with_retries(backend);
        let config_bytes = match get_all(&*backend, CONFIG_NAME).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "no vault at {} (run `strata init` first)",
                    backend.describe()
                )))
            }
            Err(e) => return Err(e.context("reading config")),
        };
        let listed = backend.list("keys/").await?;
        if listed.is_empty() {
            return Err(Error::corrupt(format!(
                "vault at {} has no key files",
                backend.describe()
            )));
        }
        // Cheapest key derivation first: a planted key file demanding
        // gigabytes of argon2 memory is reached only if every honest one
        // fails, and one that cannot be unwrapped is skipped, never fatal.
        let mut candidates = Vec::with_capacity(listed.len());
        for l in &listed {
            let bytes = get_all(&*backend, &l.name).await?;
            match KeyFile::decode(&bytes) {
                Ok(kf) => candidates.push((l, kf)),
                Err(e) => {
                    tracing::warn!(key = %l.name, error = %e, "skipping undecodable key file");
                }
            }
        }
        candidates.sort_by_key(|(l, kf)| {
            let p = kf.params;
            (
                u64::from(p.m_cost_kib) * u64::from(p.t_cost.max(1)),
                l.name.clone(),
            )
        });
        let budget = kdf_memory_budget_kib();
        let mut foreign = None;
        for (l, kf) in candidates {
            if kf.params.m_cost_kib > budget || kf.params.t_cost > MAX_KDF_PASSES {
                tracing::warn!(
                    key = %l.name,
                    m_cost_kib = kf.params.m_cost_kib,
                    t_cost = kf.params.t_cost,
                    "skipping a key file whose key derivation exceeds this reader's budget \
                     (STRATA_MAX_KDF_MEMORY_MIB raises it)"
                );
                continue;
            }
            let master = match kf.unwrap_key(password) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::WrongPassword => continue,
                Err(e) => {
                    tracing::warn!(key = %l.name, error = %e, "skipping a key file that cannot be unwrapped");
                    continue;
                }
            };
            let keys = Keys::derive(&master);
            let body = match sealed::open(&keys, ObjectKind::Config, &config_bytes) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Crypto => {
                    foreign = Some(l.name.clone());
                    continue;
                }
                Err(e) => return Err(e.context("config")),
            };
            let config = Config::decode(&body).map_err(|e| Error::from(e).context("config"))?;
            if config.vault_id != kf.vault_id {
                foreign = Some(l.name.clone());
                continue;
            }
            backend.set_retention(config.lock_mode, config.retention_days);
            return Ok(Self::assemble(
                backend,
                master,
                keys,
                config,
                l.name.clone(),
                open,
            ));
        }
        if let Some(name) = foreign {
            return Err(Error::new(
                ErrorKind::WrongPassword,
                format!("key file {name} opens with this password but belongs to another vault"),
            ));
        }
        Err(Error::new(
            ErrorKind::WrongPassword,
            format!(
                "wrong password: none of the {} key files of {} opens with it",
                listed.len(),
                backend.describe()
            ),
        ))
    }

    /// The store the vault lives in.
    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// The working keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The vault config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the local index cache lives.
    pub fn cache_path(&self) -> &std::path::Path {
        &self.cache_path
    }

    /// The current index cache (what the vault's segments say).
    pub fn index(&self) -> Arc<IndexCache> {
        self.index.read().expect("index lock").clone()
    }

    /// Where a blob is: the index cache, else the entries recovered from
    /// unindexed packs in this process. A miss in the cache is checked
    /// (a damaged cache found so is rebuilt by the next refresh).
    pub fn blob_entry(&self, id: &BlobId) -> Option<crate::index::IndexEntry> {
        let index = self.index();
        index
            .lookup(id)
            .or_else(|| index.lookup_checked(id))
            .or_else(|| {
                self.recovered
                    .read()
                    .expect("recovered lock")
                    .get(id)
                    .copied()
            })
    }

    /// The blobs recovered from unindexed packs in this process.
    pub fn recovered_blobs(&self) -> Arc<HashMap<BlobId, crate::index::IndexEntry>> {
        self.recovered.read().expect("recovered lock").clone()
    }

    /// Adds a key file for `password`; returns its name.
    pub async fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        write_key_file(
            &*self.backend,
            &self.master,
            password,
            kdf,
            self.config.vault_id,
        )
        .await
    }

    /// Lists key files.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for l in self.backend.list("keys/").await? {
            let bytes = get_all(&*self.backend, &l.name).await?;
            let kf = KeyFile::decode(&bytes).map_err(|e| Error::from(e).context(l.name.clone()))?;
            out.push(KeyInfo {
                current: l.name == self.key_name,
                name: l.name,
                created_unix_s: kf.created_unix_s,
                kdf: kf.params,
            });
        }
        Ok(out)
    }

    /// Removes a key file; refuses the key in use and the last key.
    pub async fn remove_key(&self, name: &str) -> Result<()> {
        let name = if name.starts_with("keys/") {
            name.to_string()
        } else {
            format!("keys/{name}")
        };
        let keys = self.list_keys().await?;
        let found = keys
            .iter()
            .find(|k| k.name == name || k.name.starts_with(&name));
        let Some(found) = found else {
            return Err(Error::not_found(format!("no key file {name}")));
        };
        if found.current {
            return Err(Error::config(
                "refusing to remove the key this session was opened with",
            ));
        }
        if keys.len() <= 1 {
            return Err(Error::config("refusing to remove the last key"));
        }
        self.backend.delete(&found.name).await
    }

    /// The opened header of a pack, fetched once and cached.
    pub async fn pack_key(&self, pack: &ObjectId) -> Result<Arc<PackKey>> {
        if let Some(k) = self.pack_keys.lock().expect("pack key lock").get(pack) {
            return Ok(k.clone());
        }
        let name = pack_name(pack);
        let head = self
            .backend
            .get(
                &name,
                ByteRange::Bounded(0..crate::format::HEADER_LEN as u64),
            )
            .await
            .map_err(|e| e.context(name.clone()))?;
        let key = Arc::new(PackKey::open(&self.keys, &head.bytes).map_err(|e| e.context(name))?);
        let mut map = self.pack_keys.lock().expect("pack key lock");
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(*pack, key.clone());
        Ok(key)
    }

    /// Seals `body` as an object of `kind` (a fresh salt, the vault's zstd
    /// level).
    pub(crate) fn seal(&self, kind: ObjectKind, body: &[u8]) -> Vec<u8> {
        sealed::seal(
            &self.keys,
            kind,
            random_bytes(),
            body,
            self.config.zstd_level,
        )
    }

    /// Reads the sealed object `name` of `kind` that belongs to point
    /// `seq` (see [`Repository::get_authentic`]), decodes it, and refuses
    /// it as replayed or moved when it says it belongs to another point
    /// (`seq_of`; `what` names its content in that error). Errors name the
    /// object.
    pub(crate) async fn get_sealed_of_point<T>(
        &self,
        name: &str,
        kind: ObjectKind,
        seq: u64,
        what: &str,
        decode: impl Fn(&[u8]) -> Result<T>,
        seq_of: impl Fn(&T) -> u64,
    ) -> Result<(T, Bytes)> {
        let keys = &self.keys;
        self.get_authentic(name, |bytes| {
            let value = decode(&sealed::open(keys, kind, bytes)?)?;
            match seq_of(&value) {
                s if s == seq => Ok(value),
                s => Err(Error::corrupt(format!(
                    "holds {what} {s} (replayed or moved)"
                ))),
            }
        })
        .await
        .map_err(|e| e.context(name.to_string()))
    }

    /// Reads `name` and decodes it with `open`; when the version the store
    /// returns does not authenticate or decode, tries every other version,
    /// oldest first (a writer can add versions under a name, never remove
    /// the original one from a locked vault). Returns the value and the
    /// bytes it came from.
    pub async fn get_authentic<T>(
        &self,
        name: &str,
        open: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<(T, Bytes)> {
        let bytes = get_all(&*self.backend, name)
            .await
            .map_err(|e| e.context(name.to_string()))?;
        let first_err = match open(&bytes) {
            Ok(v) => return Ok((v, bytes)),
            Err(e) if matches!(e.kind(), ErrorKind::Crypto | ErrorKind::Corrupt) => e,
            Err(e) => return Err(e),
        };
        for version in self.backend.versions(name).await.unwrap_or_default() {
            let Ok(other) = self.backend.get_version(name, &version).await else {
                continue;
            };
            if other == bytes {
                continue;
            }
            if let Ok(v) = open(&other) {
                tracing::warn!(
                    object = name,
                    version,
                    "the first version does not authenticate; using an older one that does"
                );
                return Ok((v, other));
            }
        }
        Err(first_err)
    }

    /// Sequence numbers of all points, ascending.
    pub async fn list_points(&self) -> Result<Vec<u64>> {
        let mut seqs: Vec<u64> = self
            .backend
            .list("points/")
            .await?
            .iter()
            .filter_map(|l| Point::seq_from_name(&l.name))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Loads point `seq`; returns it and the hash of its stored bytes (the
    /// next point's `prev`). Checks the point names its own sequence.
    pub async fn load_point(&self, seq: u64) -> Result<(Point, ObjectId)> {
        let (point, bytes) = self
            .get_sealed_of_point(
                &Point::name(seq),
                ObjectKind::Point,
                seq,
                "point",
                |b| Ok(Point::decode(b)?),
                |p| p.seq,
            )
            .await?;
        Ok((point, ObjectId::of(&bytes)))
    }

    /// The newest point, if any.
    pub async fn latest_point(&self) -> Result<Option<(Point, ObjectId)>> {
        match self.list_points().await?.last() {
            Some(&seq) => Ok(Some(self.load_point(seq).await?)),
            None => Ok(None),
        }
    }

    /// The newest point whose time is at or before `time_ns` (binary search
    /// over the chain: O(log points) reads). When a damaged point is met,
    /// the points are scanned instead, and if a damaged point may be the
    /// one asked for, that is an error: another point never stands in.
    pub async fn point_at(&self, time_ns: i64) -> Result<Point> {
        let seqs = self.list_points().await?;
        let (mut lo, mut hi) = (0usize, seqs.len());
        let mut best = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let p = match self.load_point(seqs[mid]).await {
                Ok((p, _)) => p,
                Err(e) if e.kind() == ErrorKind::Transient => return Err(e),
                Err(_) => return self.point_at_scanning(&seqs, time_ns).await,
            };
            if p.time_ns <= time_ns {
                best = Some(p);
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        best.ok_or_else(|| Error::not_found("no point at or before that time"))
    }

    async fn point_at_scanning(&self, seqs: &[u64], time_ns: i64) -> Result<Point> {
        let mut best = None;
        let mut damaged_since_best: Option<(u64, Error)> = None;
        for &seq in seqs {
            match self.load_point(seq).await {
                Ok((p, _)) if p.time_ns <= time_ns => {
                    best = Some(p);
                    damaged_since_best = None;
                }
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Transient => return Err(e),
                Err(e) => {
                    damaged_since_best.get_or_insert((seq, e));
                }
            }
        }
        // Times strictly increase along the chain: a point exactly at the
        // asked time is the newest at or before it, whatever follows.
        if best.as_ref().is_some_and(|b: &Point| b.time_ns == time_ns) {
            damaged_since_best = None;
        }
        if let Some((seq, e)) = damaged_since_best {
            return Err(Error::corrupt(format!(
                "point #{seq} may be the newest at or before that time and it is damaged ({e}); \
                 it cannot be restored, and no other point stands in for it (choose one with #SEQ)"
            )));
        }
        best.ok_or_else(|| Error::not_found("no point at or before that time"))
    }

    /// Loads a run page (cached).
    pub async fn load_page(&self, id: &ObjectId) -> Result<Arc<Page>> {
        if let Some(p) = self.pages.lock().expect("page lock").get(id) {
            return Ok(p.clone());
        }
        let name = page_name(id);
        let keys = &self.keys;
        let (page, _) = self
            .get_authentic(&name, |bytes| {
                if ObjectId::of(bytes) != *id {
                    return Err(Error::corrupt("bytes do not hash to the name"));
                }
                Page::open(keys, bytes)
            })
            .await
            .map_err(|e| e.context(name))?;
        let page = Arc::new(page);
        let mut map = self.pages.lock().expect("page lock");
        if map.len() >= PAGE_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(*id, page.clone());
        Ok(page)
    }
}

async fn write_key_file(
    backend: &dyn crate::backend::Backend,
    master: &MasterKey,
    password: &[u8],
    kdf: KdfParams,
    vault_id: [u8; 16],
) -> Result<String> {
    let master = master.clone();
    let password = password.to_vec();
    let kf = crate::blocking::run("key derivation", move || {
        KeyFile::wrap(
            &master,
            &password,
            kdf,
            random_bytes(),
            vault_id,
            now_unix_s(),
        )
    })
    .await?;
    let bytes = kf.encode();
    let name = format!("keys/{}", ObjectId::of(&bytes));
    backend.put(&name, Bytes::from(bytes)).await?;
    Ok(name)
}
