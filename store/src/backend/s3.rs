//! A vault in an S3 bucket (AWS S3 or an S3-compatible server), through
//! the official AWS SDK.
//!
//! Create-only on every server, in one of two documented dialects
//! ([`S3Dialect`]): with conditional writes (`If-None-Match: *`) where the
//! server has them; where it does not (radosgw on a versioned bucket) the
//! put is followed by a version listing, and only the *oldest* version of a
//! name counts — a later version (ours after a lost race, or anyone's) is
//! reported as `AlreadyExists`.
//!
//! Object Lock protects versions, not names: a writer can still add a
//! delete marker or a newer version. On a versioned bucket this backend
//! therefore reads the oldest version of each name (a delete marker hides
//! nothing, a forged newer version is never read), lists names through
//! `ListObjectVersions`, and offers every version to callers that must fall
//! back when the oldest does not authenticate ([`S3Backend::versions`]).
//!
//! Every put carries the vault's lock mode and retain-until date and a
//! Content-MD5 the server checks; reads are ranged; the SDK retries 5xx, throttling and
//! timeouts with jittered exponential backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockMode};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{Backend, ByteRange, GetResult, Listed};
use crate::config::LockMode;
use crate::error::{Error, ErrorKind, Result};

/// How a server provides create-only writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Dialect {
    /// `If-None-Match: *` is honoured (AWS S3 since 2024, most emulators).
    Conditional,
    /// Conditional writes are ignored (radosgw on versioned buckets):
    /// after a put, the oldest version of the name decides who won.
    OldestVersionWins,
}

impl std::str::FromStr for S3Dialect {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "conditional" | "aws" => Ok(S3Dialect::Conditional),
            "oldest-version-wins" | "radosgw" => Ok(S3Dialect::OldestVersionWins),
            other => Err(Error::config(format!(
                "unknown S3 dialect {other:?} (conditional, oldest-version-wins)"
            ))),
        }
    }
}

/// Where and how to reach the vault bucket.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket ("" or ending in `/`).
    pub prefix: String,
    /// Endpoint override (S3-compatible servers); else the AWS chain's.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`).
    pub path_style: bool,
    /// The dialect; `None` detects it.
    pub dialect: Option<S3Dialect>,
}

impl S3Options {
    /// Parses `s3://bucket/prefix`.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::config(format!("{url:?} is not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::config(format!("{url:?} names no bucket")));
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Options {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            ..Default::default()
        })
    }
}

/// Requests made, by kind (reported in summaries).
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// PutObject.
    pub put: AtomicU64,
    /// GetObject.
    pub get: AtomicU64,
    /// HeadObject.
    pub head: AtomicU64,
    /// ListObjectsV2 / ListObjectVersions pages.
    pub list: AtomicU64,
    /// DeleteObject.
    pub delete: AtomicU64,
}

impl RequestCounts {
    /// A snapshot as (kind, count) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("put", self.put.load(Ordering::Relaxed)),
            ("get", self.get.load(Ordering::Relaxed)),
            ("head", self.head.load(Ordering::Relaxed)),
            ("list", self.list.load(Ordering::Relaxed)),
            ("delete", self.delete.load(Ordering::Relaxed)),
        ]
    }
}

/// One version of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The version id.
    pub id: String,
    /// Its size.
    pub size: u64,
    /// Seconds since the epoch, for ordering.
    pub last_modified: i64,
}

/// The vault backend on S3.
pub struct S3Backend {
    client: Client,
    opts: S3Options,
    dialect: S3Dialect,
    versioned: bool,
    lock: Mutex<Option<(LockMode, u32)>>,
    /// name -> oldest version id (names are immutable, so this never goes stale).
    oldest: Mutex<HashMap<String, String>>,
    /// Requests made.
    pub requests: RequestCounts,
}

/// An SDK client from the standard AWS chain, with the endpoint override
/// and path-style addressing, and timeouts that survive a stalled
/// kept-alive connection.
pub async fn client(endpoint_url: Option<&str>, path_style: bool) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build(),
    );
    if let Some(e) = endpoint_url {
        loader = loader.endpoint_url(e);
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(6))
        .force_path_style(path_style);
    if shared.region().is_none() {
        b = b.region(aws_sdk_s3::config::Region::new("us-east-1"));
    }
    Client::from_conf(b.build())
}

/// Maps an SDK error to the engine's kinds.
pub fn map_err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    what: &str,
) -> Error {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or("").to_string();
    let kind = match (status, code.as_str()) {
        (_, "NoSuchKey" | "NotFound" | "NoSuchVersion" | "NoSuchBucket") | (Some(404), _) => {
            ErrorKind::NotFound
        }
        (Some(412), _) | (_, "PreconditionFailed") => ErrorKind::AlreadyExists,
        (_, "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable") => {
            ErrorKind::Transient
        }
        (Some(s), _) if s >= 500 => ErrorKind::Transient,
        (Some(403), _) | (_, "AccessDenied") => ErrorKind::Config,
        _ => match &e {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorKind::Transient,
            _ => ErrorKind::Io,
        },
    };
    let detail = e
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{e}"));
    let retry_after = e
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    let err = Error::new(
        kind,
        format!("{what}: {code} {}", detail).replace("  ", " "),
    );
    match retry_after {
        Some(wait) => err.with_retry_after(wait),
        None => err,
    }
}

impl S3Backend {
    /// Connects; detects versioning and, unless given, the dialect.
    pub async fn connect(opts: S3Options) -> Result<Self> {
        let client = client(opts.endpoint_url.as_deref(), opts.path_style).await;
        let v = client
            .get_bucket_versioning()
            .bucket(&opts.bucket)
            .send()
            .await
            .map_err(|e| map_err(e, &format!("bucket {}", opts.bucket)))?;
        let versioned = matches!(
            v.status(),
            Some(BucketVersioningStatus::Enabled | BucketVersioningStatus::Suspended)
        );
        let mut b = S3Backend {
            client,
            dialect: opts.dialect.unwrap_or(S3Dialect::Conditional),
            versioned,
            lock: Mutex::new(None),
            oldest: Mutex::new(HashMap::new()),
            requests: RequestCounts::default(),
            opts,
        };
        if b.opts.dialect.is_none() {
            b.dialect = b.detect_dialect().await?;
            tracing::info!(dialect = ?b.dialect, versioned, "S3 dialect detected");
        }
        Ok(b)
    }

    /// Whether the bucket has versioning enabled and Object Lock enabled.
    pub async fn lock_status(&self) -> Result<(bool, bool)> {
        let lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.opts.bucket)
            .send()
            .await
        {
            Ok(o) => o
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled"),
            Err(e) => {
                let e = map_err(e, "object lock configuration");
                if e.kind() == ErrorKind::NotFound
                    || e.to_string().contains("ObjectLockConfigurationNotFound")
                {
                    false
                } else {
                    return Err(e);
                }
            }
        };
        Ok((self.versioned, lock))
    }

    /// The dialect in use.
    pub fn dialect(&self) -> S3Dialect {
        self.dialect
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Bucket and prefix.
    pub fn options(&self) -> &S3Options {
        &self.opts
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.opts.prefix)
    }

    /// Two conditional puts of one probe name: a server that accepts the
    /// second ignores `If-None-Match`.
    async fn detect_dialect(&self) -> Result<S3Dialect> {
        let probe = self.key(&format!(
            ".strata-dialect-probe/{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        for attempt in 0..2 {
            let r = self
                .client
                .put_object()
                .bucket(&self.opts.bucket)
                .key(&probe)
                .if_none_match("*")
                .body(ByteStream::from_static(b"probe"))
                .send()
                .await;
            match r {
                Ok(_) if attempt == 1 => return Ok(S3Dialect::OldestVersionWins),
                Ok(_) => {}
                Err(e) => {
                    let e = map_err(e, "dialect probe");
                    if attempt == 1 && e.kind() == ErrorKind::AlreadyExists {
                        return Ok(S3Dialect::Conditional);
                    }
                    return Err(e);
                }
            }
        }
        Ok(S3Dialect::OldestVersionWins)
    }

    /// Every real version of `name`, oldest first (delete markers skipped).
    pub async fn versions(&self, name: &str) -> Result<Vec<Version>> {
        let key = self.key(name);
        let mut out: Vec<Version> = self
            .versions_under(&key)
            .await?
            .into_iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect();
        // Listed newest first; stable order oldest first.
        out.reverse();
        out.sort_by_key(|v| v.last_modified);
        Ok(out)
    }

    /// Every real version of every key under the full key `prefix`
    /// (delete markers skipped), in listing order: per key, newest first.
    async fn versions_under(&self, prefix: &str) -> Result<Vec<(String, Version)>> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            self.requests.list.fetch_add(1, Ordering::Relaxed);
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.opts.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| map_err(e, &format!("versions under {prefix}")))?;
            for v in page.versions() {
                if let Some(k) = v.key() {
                    out.push((
                        k.to_string(),
                        Version {
                            id: v.version_id().unwrap_or("null").to_string(),
                            size: u64::try_from(v.size().unwrap_or(0)).unwrap_or(0),
                            last_modified: v.last_modified().map_or(0, |t| t.secs()),
                        },
                    ));
                }
            }
            if page.is_truncated() == Some(true) && page.next_key_marker().is_some() {
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
            } else {
                return Ok(out);
            }
        }
    }

    async fn oldest_version(&self, name: &str) -> Result<Option<String>> {
        if !self.versioned {
            return Ok(None);
        }
        if let Some(v) = self.oldest.lock().expect("version cache").get(name) {
            return Ok(Some(v.clone()));
        }
        let versions = self.versions(name).await?;
        let first = versions
            .first()
            .ok_or_else(|| Error::not_found(format!("{name} not found")))?
            .id
            .clone();
        self.oldest
            .lock()
            .expect("version cache")
            .insert(name.to_string(), first.clone());
        Ok(Some(first))
    }

    /// Reads one specific version.
    pub async fn get_version(
        &self,
        name: &str,
        version: Option<&str>,
        range: ByteRange,
    ) -> Result<GetResult> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.opts.bucket)
            .key(self.key(name))
            .set_version_id(version.map(str::to_string));
        let range_header = match &range {
            ByteRange::All => None,
            ByteRange::Bounded(r) if r.end <= r.start => {
                Some(format!("bytes={}-{}", r.start, r.start))
            }
            ByteRange::Bounded(r) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
            ByteRange::Suffix(n) => Some(format!("bytes=-{}", (*n).max(1))),
        };
        req = req.set_range(range_header);
        self.requests.get.fetch_add(1, Ordering::Relaxed);
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) => {
                let err = map_err(e, name);
                // 416: the range starts past the end; S3 semantics say clamp.
                if err.to_string().contains("InvalidRange") {
                    let len = self.head(name).await?;
                    return Ok(GetResult {
                        bytes: Bytes::new(),
                        total_len: len,
                    });
                }
                return Err(err);
            }
        };
        let total_len = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|t| t.parse().ok())
            .or_else(|| out.content_length().and_then(|l| u64::try_from(l).ok()))
            .unwrap_or(0);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::new(ErrorKind::Transient, format!("{name}: reading body: {e}")))?
            .into_bytes();
        let bytes = match range {
            ByteRange::Bounded(r) if r.end <= r.start => bytes.slice(0..0),
            _ => bytes,
        };
        Ok(GetResult { bytes, total_len })
    }

    fn retain_until(&self) -> Option<(ObjectLockMode, aws_smithy_types::DateTime)> {
        let (mode, days) = (*self.lock.lock().expect("lock settings"))?;
        let until = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
        let mode = match mode {
            LockMode::Governance => ObjectLockMode::Governance,
            _ => ObjectLockMode::Compliance,
        };
        Some((mode, aws_smithy_types::DateTime::from(until)))
    }
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let key = self.key(name);
        if self.dialect == S3Dialect::OldestVersionWins {
            // Cheap early refusal; the version check below is what decides.
            self.requests.head.fetch_add(1, Ordering::Relaxed);
            if self.head(name).await.is_ok() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{name} exists"),
                ));
            }
        }
        // Content-MD5 is the integrity check every S3 dialect validates,
        // and a plain header: radosgw drops Object Lock headers on
        // aws-chunked uploads with trailing checksums.
        let md5 = {
            use md5::Digest;
            aws_smithy_types::base64::encode(md5::Md5::digest(&bytes))
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(&key)
            .content_md5(md5)
            .body(ByteStream::from(bytes));
        if self.dialect == S3Dialect::Conditional {
            req = req.if_none_match("*");
        }
        if let Some((mode, until)) = self.retain_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        self.requests.put.fetch_add(1, Ordering::Relaxed);
        let out = req.send().await.map_err(|e| {
            let e = map_err(e, name);
            if e.kind() == ErrorKind::AlreadyExists {
                Error::new(ErrorKind::AlreadyExists, format!("{name} exists"))
            } else {
                e
            }
        })?;
        if self.dialect == S3Dialect::OldestVersionWins && self.versioned {
            let ours = out.version_id().unwrap_or("null").to_string();
            let versions = self.versions(name).await?;
            match versions.first() {
                Some(first) if first.id != ours => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("{name} exists (an older version was written first)"),
                    ))
                }
                _ => {
                    self.oldest
                        .lock()
                        .expect("version cache")
                        .insert(name.to_string(), ours);
                }
            }
        }
        Ok(())
    }

    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult> {
        let version = self.oldest_version(name).await?;
        self.get_version(name, version.as_deref(), range).await
    }

    async fn head(&self, name: &str) -> Result<u64> {
        self.requests.head.fetch_add(1, Ordering::Relaxed);
        let version = if self.versioned {
            match self.oldest_version(name).await {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(e),
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let out = self
            .client
            .head_object()
            .bucket(&self.opts.bucket)
            .key(self.key(name))
            .set_version_id(version)
            .send()
            .await
            .map_err(|e| map_err(e, name))?;
        Ok(out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let full = self.key(prefix);
        let strip = self.opts.prefix.len();
        let mut out: Vec<Listed> = Vec::new();
        if self.versioned {
            // Names with at least one real version: delete markers hide
            // nothing. Versions come newest first: the last seen is the oldest.
            let mut seen: HashMap<String, u64> = HashMap::new();
            for (k, v) in self.versions_under(&full).await? {
                seen.insert(k, v.size);
            }
            out.extend(seen.into_iter().filter_map(|(k, size)| {
                Some(Listed {
                    name: k.get(strip..)?.to_string(),
                    size,
                })
            }));
        } else {
            let mut token: Option<String> = None;
            loop {
                self.requests.list.fetch_add(1, Ordering::Relaxed);
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.opts.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| map_err(e, &format!("listing {prefix}")))?;
                for o in page.contents() {
                    if let Some(name) = o.key().and_then(|k| k.get(strip..)) {
                        out.push(Listed {
                            name: name.to_string(),
                            size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                        });
                    }
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        out.retain(|l| !l.name.starts_with(".strata-dialect-probe/"));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        let versions = if self.versioned {
            self.versions(name).await?
        } else {
            Vec::new()
        };
        if versions.is_empty() {
            self.requests.delete.fetch_add(1, Ordering::Relaxed);
            self.client
                .delete_object()
                .bucket(&self.opts.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| map_err(e, name))?;
        }
        for v in versions {
            self.requests.delete.fetch_add(1, Ordering::Relaxed);
            self.client
                .delete_object()
                .bucket(&self.opts.bucket)
                .key(&key)
                .version_id(&v.id)
                .send()
                .await
                .map_err(|e| map_err(e, &format!("{name} version {}", v.id)))?;
        }
        self.oldest.lock().expect("version cache").remove(name);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.opts.bucket, self.opts.prefix)
    }

    fn set_retention(&self, mode: LockMode, days: u32) {
        *self.lock.lock().expect("lock settings") =
            (mode != LockMode::None && days > 0).then_some((mode, days));
    }

    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.requests.snapshot()
    }

    async fn versions(&self, name: &str) -> Result<Vec<String>> {
        if !self.versioned {
            return Ok(Vec::new());
        }
        Ok(S3Backend::versions(self, name)
            .await?
            .into_iter()
            .map(|v| v.id)
            .collect())
    }

    async fn get_version(&self, name: &str, version: &str) -> Result<Bytes> {
        Ok(
            S3Backend::get_version(self, name, Some(version), ByteRange::All)
                .await?
                .bytes,
        )
    }

    async fn retention(&self, name: &str) -> Result<Option<(LockMode, i64)>> {
        let version = self.oldest_version(name).await?;
        let out = self
            .client
            .get_object_retention()
            .bucket(&self.opts.bucket)
            .key(self.key(name))
            .set_version_id(version)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.retention().map(|r| {
                let mode = match r.mode() {
                    Some(aws_sdk_s3::types::ObjectLockRetentionMode::Governance) => {
                        LockMode::Governance
                    }
                    Some(_) => LockMode::Compliance,
                    None => LockMode::None,
                };
                (mode, r.retain_until_date().map_or(0, |d| d.secs()))
            })),
            Err(e) => {
                let e = map_err(e, &format!("retention of {name}"));
                if e.to_string().contains("NoSuchObjectLockConfiguration")
                    || e.kind() == ErrorKind::NotFound
                {
                    Ok(Some((LockMode::None, 0)))
                } else {
                    Err(e)
                }
            }
        }
    }
}
